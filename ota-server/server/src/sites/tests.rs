use ota_protocol::admin::LastStatus;
use ota_protocol::device::{Position, ReportStatus, Telemetry};
use proptest::prelude::*;

use super::*;
use crate::store::DeviceState;

/// The smallest PNG with these dimensions the recogniser accepts (headers only: it does not inflate the data).
pub(crate) fn png_bytes(width: u32, height: u32) -> Vec<u8> {
    let mut b = PNG_MAGIC.to_vec();
    b.extend_from_slice(&13u32.to_be_bytes());
    b.extend_from_slice(b"IHDR");
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0]);
    b.extend_from_slice(&[0; 4]); // CRC (not checked)
    b.extend_from_slice(PNG_IEND);
    b
}

/// A JPEG skeleton: SOI, an APP0 segment, SOF0 with these dimensions, EOI.
fn jpeg_bytes(width: u16, height: u16) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10];
    b.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    b.extend_from_slice(&[0xff, 0xc0, 0x00, 0x0b, 0x08]);
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&[0x01, 0x01, 0x11, 0x00]);
    b.extend_from_slice(&[0xff, 0xd9]);
    b
}

fn site(width: u32, height: u32, scale: f64, origin: (f64, f64)) -> SiteInfo {
    SiteInfo {
        name: "hall-a".into(),
        width,
        height,
        scale,
        origin_x: origin.0,
        origin_y: origin.1,
        format: ImageFormat::Png,
        bytes: 1,
        digest: String::new(),
        uploaded_at: 0,
    }
}

fn robot(id: &str, frame: Option<&str>, x: f64, y: f64) -> DeviceRecord {
    DeviceRecord {
        device_id: id.into(),
        compatible: "acme".into(),
        tags: Default::default(),
        token_id: format!("t-{id}"),
        token_hash: [0; 32],
        token_expires_at: None,
        enrolled_at: 0,
        labels: Default::default(),
        state: DeviceState {
            telemetry: Some(Telemetry {
                position: Some(Position {
                    x,
                    y,
                    theta: None,
                    frame: frame.map(str::to_string),
                }),
                ..Telemetry::default()
            }),
            last_status: Some(LastStatus {
                status: ReportStatus::Success,
                rollout_id: None,
                version: None,
                at: 5,
                error: None,
                reason: None,
            }),
            last_seen: Some(7),
            ..DeviceState::default()
        },
    }
}

#[test]
fn images_are_recognised_by_their_bytes() {
    let p = recognise(&png_bytes(800, 600)).unwrap();
    assert_eq!((p.format, p.width, p.height), (ImageFormat::Png, 800, 600));
    let j = recognise(&jpeg_bytes(1024, 768)).unwrap();
    assert_eq!(
        (j.format, j.width, j.height),
        (ImageFormat::Jpeg, 1024, 768)
    );
    let mut padded = jpeg_bytes(10, 20);
    padded.extend_from_slice(&[0, 0]);
    assert_eq!(recognise(&padded).unwrap().height, 20);
    for (bytes, needle) in [
        (b"GIF89a....".to_vec(), "neither a PNG nor a JPEG"),
        (Vec::new(), "empty"),
        (png_bytes(800, 600)[..40].to_vec(), "truncated PNG"),
        (jpeg_bytes(8, 8)[..20].to_vec(), "truncated JPEG"),
        (png_bytes(0, 600), "0×600 pixels"),
        (png_bytes(20_000, 10), "each side must be 1-16384"),
        (png_bytes(10_000, 10_000), "at most 40 megapixels"),
        (vec![0u8; MAX_IMAGE_BYTES + 1], "at most 10 MiB"),
    ] {
        let e = recognise(&bytes).unwrap_err();
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let mut bad_depth = png_bytes(4, 4);
    bad_depth[24] = 3;
    assert!(recognise(&bad_depth).unwrap_err().contains("bit depth 3"));
}

#[test]
fn robots_are_on_the_site_their_frame_names() {
    let s = site(1000, 500, 0.1, (100.0, 400.0));
    let devices = [
        robot("r2", Some("hall-a"), 10.0, 20.0),
        robot("r1", Some("hall-a"), -50.0, 0.0),
        robot("other", Some("hall-b"), 1.0, 1.0),
        robot("no-frame", None, 1.0, 1.0),
    ];
    let placed = place(&s, &devices);
    let ids: Vec<&str> = placed.iter().map(|p| p.device_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2"]);
    // r2: 10 m right of the origin, 20 m up.
    assert_eq!(
        (placed[1].x, placed[1].y, placed[1].outside),
        (200.0, 200.0, false)
    );
    assert_eq!(placed[1].status, Some(ReportStatus::Success));
    assert_eq!(placed[1].last_seen, Some(7));
    // r1: 500 px left of the origin, off the plan: drawn on its left edge.
    assert_eq!(
        (placed[0].x, placed[0].y, placed[0].outside),
        (0.0, 400.0, true)
    );
}

#[test]
fn numbers_of_an_upload_are_checked() {
    assert!(check_geometry(0.05, 10.0, -20.0).is_ok());
    for (scale, ox, oy, needle) in [
        (0.0, 0.0, 0.0, "scale"),
        (f64::NAN, 0.0, 0.0, "scale"),
        (1e9, 0.0, 0.0, "scale"),
        (0.05, f64::INFINITY, 0.0, "origin_x"),
        (0.05, 0.0, 2e7, "origin_y"),
    ] {
        assert!(check_geometry(scale, ox, oy).unwrap_err().contains(needle));
    }
    assert!(check_name("hall-a.2").is_ok());
    for bad in ["", ".hidden", "a/b", "hall a", &"x".repeat(65)] {
        assert!(
            check_name(bad).unwrap_err().starts_with("site name"),
            "{bad}"
        );
    }
}

fn geometry() -> impl Strategy<Value = Geometry> {
    (
        1u32..4000,
        1u32..4000,
        1e-3f64..10.0,
        -5000.0f64..5000.0,
        -5000.0f64..5000.0,
    )
        .prop_map(|(width, height, scale, origin_x, origin_y)| Geometry {
            width,
            height,
            scale,
            origin_x,
            origin_y,
        })
}

proptest! {
    /// Every point lands on the plan; it is flagged exactly when it lies off it; points on the plan come back
    /// to the same metres.
    #[test]
    fn pixels_stay_on_the_plan(g in geometry(), x in -1e6f64..1e6, y in -1e6f64..1e6) {
        let p = to_pixels(&g, x, y);
        prop_assert!((0.0..=f64::from(g.width)).contains(&p.x));
        prop_assert!((0.0..=f64::from(g.height)).contains(&p.y));
        let raw = (g.origin_x + x / g.scale, g.origin_y - y / g.scale);
        let on_plan = (0.0..=f64::from(g.width)).contains(&raw.0) && (0.0..=f64::from(g.height)).contains(&raw.1);
        prop_assert_eq!(p.outside, !on_plan);
        if on_plan {
            let (mx, my) = to_metres(&g, p.x, p.y);
            prop_assert!((mx - x).abs() <= 1e-6 * (1.0 + x.abs()));
            prop_assert!((my - y).abs() <= 1e-6 * (1.0 + y.abs()));
        }
    }

    /// Further right is never further left; further up is never further down the image.
    #[test]
    fn pixels_are_monotonic(g in geometry(), x in -1e4f64..1e4, y in -1e4f64..1e4, dx in 0.0f64..100.0, dy in 0.0f64..100.0) {
        let a = to_pixels(&g, x, y);
        let b = to_pixels(&g, x + dx, y + dy);
        prop_assert!(b.x >= a.x);
        prop_assert!(b.y <= a.y);
    }

    /// Any PNG or JPEG header with sides in range is recognised with its dimensions; arbitrary bytes never panic.
    #[test]
    fn headers_give_their_dimensions(w in 1u32..4000, h in 1u32..4000, jpeg in any::<bool>()) {
        let (bytes, format) = if jpeg {
            (jpeg_bytes(w as u16, h as u16), ImageFormat::Jpeg)
        } else {
            (png_bytes(w, h), ImageFormat::Png)
        };
        prop_assert_eq!(recognise(&bytes).unwrap(), Plan { format, width: w, height: h });
        // Cut short anywhere, it is refused.
        for cut in [bytes.len() / 3, bytes.len() - 1] {
            prop_assert!(recognise(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..3) {
        match kind {
            0 => bytes.splice(0..0, PNG_MAGIC.iter().copied()).for_each(drop),
            1 => bytes.splice(0..0, [0xffu8, 0xd8, 0xff]).for_each(drop),
            _ => {}
        }
        let _ = recognise(&bytes);
    }

    /// A robot is placed on a site exactly when its frame is the site's name.
    #[test]
    fn placement_follows_the_frame(frames in proptest::collection::vec(proptest::option::of(prop_oneof!["hall-a", "hall-b"]), 0..20)) {
        let s = site(100, 100, 1.0, (0.0, 100.0));
        let devices: Vec<DeviceRecord> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| robot(&format!("r{i:02}"), f.as_deref(), 1.0, 1.0))
            .collect();
        let placed = place(&s, &devices);
        let expected: Vec<String> = devices
            .iter()
            .zip(&frames)
            .filter(|(_, f)| f.as_deref() == Some("hall-a"))
            .map(|(d, _)| d.device_id.clone())
            .collect();
        let got: Vec<String> = placed.into_iter().map(|p| p.device_id).collect();
        prop_assert_eq!(got, expected);
    }
}

fn at(x: f64, y: f64, frame: &str) -> Position {
    Position {
        x,
        y,
        theta: None,
        frame: Some(frame.into()),
    }
}

#[test]
fn a_robot_moves_on_the_map_past_the_noise() {
    let a = at(1.0, 1.0, "hall-a");
    assert!(!moved(None, None));
    assert!(moved(None, Some(&a)));
    assert!(moved(Some(&a), None));
    assert!(!moved(Some(&a), Some(&at(1.01, 1.02, "hall-a"))));
    assert!(moved(Some(&a), Some(&at(1.0, 1.0, "dock"))));
    assert!(moved(Some(&a), Some(&at(1.1, 1.0, "hall-a"))));
}

proptest! {
    /// Moving is symmetric, and a robot never moves away from where it is.
    #[test]
    fn moving_is_symmetric(x in -1e3f64..1e3, y in -1e3f64..1e3, dx in -1.0f64..1.0, dy in -1.0f64..1.0) {
        let (a, b) = (at(x, y, "s"), at(x + dx, y + dy, "s"));
        prop_assert!(!moved(Some(&a), Some(&a)));
        prop_assert_eq!(moved(Some(&a), Some(&b)), moved(Some(&b), Some(&a)));
        if dx.hypot(dy) < MOVE_EPSILON * 0.99 {
            prop_assert!(!moved(Some(&a), Some(&b)));
        }
        if dx.hypot(dy) > MOVE_EPSILON * 1.01 {
            prop_assert!(moved(Some(&a), Some(&b)));
        }
    }
}
