//! Sites for the map, pure: what an uploaded plan must be (a PNG or JPEG recognised by its magic bytes, its
//! dimensions read from its header, a scale and an origin that are numbers), where a robot's position in metres
//! falls on the plan in pixels (clamped to the plan's edge, flagged when off it), and which robots are on which
//! site (their position's `frame` names it). No I/O: the service (`services::sites`) stores and serves.
//!
//! The plan's frame: x to the right, y up (as ROS maps), in metres from the origin, whose pixel column and row
//! the operator gives; `scale` metres per pixel.

use ota_protocol::device::Position;
use ota_protocol::sites::{ImageFormat, PlacedRobot, SiteInfo, MAX_IMAGE_BYTES};

use crate::store::DeviceRecord;

/// Largest side of a plan in pixels (what a browser canvas draws without trouble).
pub const MAX_SIDE: u32 = 16_384;
/// Most pixels of a plan (a decoded 40-megapixel image is 160 MB in the browser).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Smallest and largest scale, metres per pixel.
pub const SCALE_RANGE: (f64, f64) = (1e-4, 1e4);
/// Largest distance of the origin from the plan's corner, in pixels (it may lie off the plan).
pub const MAX_ORIGIN: f64 = 1e7;

/// How a site maps metres to pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Geometry {
    /// Plan width in pixels.
    pub width: u32,
    /// Plan height in pixels.
    pub height: u32,
    /// Metres per pixel.
    pub scale: f64,
    /// Pixel column of (0, 0).
    pub origin_x: f64,
    /// Pixel row of (0, 0).
    pub origin_y: f64,
}

impl Geometry {
    /// A site's geometry.
    pub fn of(site: &SiteInfo) -> Geometry {
        Geometry {
            width: site.width,
            height: site.height,
            scale: site.scale,
            origin_x: site.origin_x,
            origin_y: site.origin_y,
        }
    }
}

/// Where a point falls on a plan.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pixel {
    /// Column, within `[0, width]`.
    pub x: f64,
    /// Row, within `[0, height]`.
    pub y: f64,
    /// The point lies off the plan (the pixel is the nearest one on its edge).
    pub outside: bool,
}

fn clamp(v: f64, max: f64) -> (f64, bool) {
    if v.is_nan() {
        return (0.0, true);
    }
    let c = v.clamp(0.0, max);
    (c, c != v)
}

/// The pixel of the point (`x`, `y`) metres.
pub fn to_pixels(g: &Geometry, x: f64, y: f64) -> Pixel {
    let (px, out_x) = clamp(g.origin_x + x / g.scale, f64::from(g.width));
    let (py, out_y) = clamp(g.origin_y - y / g.scale, f64::from(g.height));
    Pixel {
        x: px,
        y: py,
        outside: out_x || out_y,
    }
}

/// The point in metres of a pixel (the inverse of [`to_pixels`] on the plan).
pub fn to_metres(g: &Geometry, px: f64, py: f64) -> (f64, f64) {
    ((px - g.origin_x) * g.scale, (g.origin_y - py) * g.scale)
}

/// Where robot `d` is on the site named `site` with geometry `g`: `None` unless its last position's frame is
/// the site's name.
pub fn placed(g: &Geometry, site: &str, d: &DeviceRecord) -> Option<PlacedRobot> {
    let p = d.state.telemetry.as_ref()?.position.as_ref()?;
    if p.frame.as_deref() != Some(site) {
        return None;
    }
    let pixel = to_pixels(g, p.x, p.y);
    Some(PlacedRobot {
        device_id: d.device_id.clone(),
        x: pixel.x,
        y: pixel.y,
        outside: pixel.outside,
        status: d.state.last_status.as_ref().map(|s| s.status),
        version: d.state.current_version.clone(),
        last_seen: d.state.last_seen,
    })
}

/// The robots on `site`, placed on its plan, by id.
pub fn place<'a>(
    site: &SiteInfo,
    devices: impl IntoIterator<Item = &'a DeviceRecord>,
) -> Vec<PlacedRobot> {
    let g = Geometry::of(site);
    let mut out: Vec<PlacedRobot> = devices
        .into_iter()
        .filter_map(|d| placed(&g, &site.name, d))
        .collect();
    out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    out
}

/// How far a robot moves before a poll tells the dashboard (metres): less is sensor noise on the map.
pub const MOVE_EPSILON: f64 = 0.05;

/// Whether a poll's position differs from the last one enough to redraw the robot on the map: it appeared,
/// vanished, changed frame, or moved at least [`MOVE_EPSILON`].
pub fn moved(before: Option<&Position>, after: Option<&Position>) -> bool {
    match (before, after) {
        (None, None) => false,
        (Some(a), Some(b)) => a.frame != b.frame || (a.x - b.x).hypot(a.y - b.y) >= MOVE_EPSILON,
        _ => true,
    }
}

/// A site name: what a robot's position `frame` names (1-64 of `A-Z a-z 0-9 . _ -`, not starting with `.`;
/// it is a path segment too).
pub fn check_name(name: &str) -> Result<(), String> {
    ota_protocol::validate_device_id(name).map_err(|e| e.replace("device_id", "site name"))
}

/// The numbers of an upload: a scale within [`SCALE_RANGE`] and an origin within [`MAX_ORIGIN`] pixels.
pub fn check_geometry(scale: f64, origin_x: f64, origin_y: f64) -> Result<(), String> {
    let (lo, hi) = SCALE_RANGE;
    if !(scale.is_finite() && (lo..=hi).contains(&scale)) {
        return Err(format!(
            "scale must be metres per pixel between {lo} and {hi}, e.g. scale=0.05 (got {scale})"
        ));
    }
    for (name, v) in [("origin_x", origin_x), ("origin_y", origin_y)] {
        if !(v.is_finite() && v.abs() <= MAX_ORIGIN) {
            return Err(format!(
                "{name} must be a pixel coordinate within ±{MAX_ORIGIN} (got {v})"
            ));
        }
    }
    Ok(())
}

/// An image the page can draw: its format and its dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Format, from the magic bytes.
    pub format: ImageFormat,
    /// Width in pixels, from the header.
    pub width: u32,
    /// Height in pixels, from the header.
    pub height: u32,
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const PNG_IEND: &[u8] = b"\0\0\0\0IEND\xaeB`\x82";

/// Recognises a plan image: a PNG (signature, IHDR first, IEND last) or a JPEG (SOI, a frame header, EOI),
/// at most [`MAX_IMAGE_BYTES`], with sides of 1-[`MAX_SIDE`] pixels and at most [`MAX_PIXELS`]. The error is one
/// line naming the problem.
pub fn recognise(bytes: &[u8]) -> Result<Plan, String> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "the plan image is {} bytes; at most {} MiB",
            bytes.len(),
            MAX_IMAGE_BYTES / (1024 * 1024)
        ));
    }
    let plan = if bytes.starts_with(PNG_MAGIC) {
        png(bytes)?
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        jpeg(bytes)?
    } else if bytes.is_empty() {
        return Err("the plan image is empty; send the PNG or JPEG file as the body".into());
    } else {
        return Err("the plan image is neither a PNG nor a JPEG (by its first bytes)".into());
    };
    let (w, h) = (plan.width, plan.height);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS
    {
        return Err(format!(
            "the plan image is {w}×{h} pixels; each side must be 1-{MAX_SIDE} and the whole at most {} megapixels",
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(plan)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn png(b: &[u8]) -> Result<Plan, String> {
    // Signature, IHDR (length 13, type, data, CRC), ..., IEND.
    if b.len() < 8 + 25 + PNG_IEND.len() {
        return Err("the plan image is a truncated PNG (shorter than its headers)".into());
    }
    if be32(&b[8..12]) != 13 || &b[12..16] != b"IHDR" {
        return Err("the plan image is not a valid PNG (its first chunk is not IHDR)".into());
    }
    if !b.ends_with(PNG_IEND) {
        return Err("the plan image is a truncated PNG (it does not end with IEND)".into());
    }
    let (depth, colour) = (b[24], b[25]);
    let valid = match colour {
        0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
        3 => matches!(depth, 1 | 2 | 4 | 8),
        2 | 4 | 6 => matches!(depth, 8 | 16),
        _ => false,
    };
    if !valid {
        return Err(format!(
            "the plan image is not a valid PNG (bit depth {depth} with colour type {colour})"
        ));
    }
    Ok(Plan {
        format: ImageFormat::Png,
        width: be32(&b[16..20]),
        height: be32(&b[20..24]),
    })
}

fn jpeg(b: &[u8]) -> Result<Plan, String> {
    let end = b.len() - b.iter().rev().take_while(|&&x| x == 0).count();
    if end < 4 || b[end - 2..end] != [0xff, 0xd9] {
        return Err("the plan image is a truncated JPEG (it does not end with EOI)".into());
    }
    // Walk the marker segments from after SOI to the first frame header (SOFn).
    let mut i = 2;
    while i + 4 <= end {
        if b[i] != 0xff {
            return Err(format!(
                "the plan image is not a valid JPEG (no marker at byte {i})"
            ));
        }
        let marker = b[i + 1];
        match marker {
            0xff => {
                i += 1; // fill byte
                continue;
            }
            0x01 | 0xd0..=0xd7 => {
                i += 2; // standalone markers
                continue;
            }
            0xd9 | 0xda => break, // EOI or start of scan before any frame header
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        if len < 2 || i + 2 + len > end {
            return Err("the plan image is a truncated JPEG (a segment runs past its end)".into());
        }
        let is_frame = matches!(marker, 0xc0..=0xcf) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
        if is_frame {
            if len < 8 {
                return Err(
                    "the plan image is not a valid JPEG (its frame header is short)".into(),
                );
            }
            let height = u16::from_be_bytes([b[i + 5], b[i + 6]]);
            let width = u16::from_be_bytes([b[i + 7], b[i + 8]]);
            return Ok(Plan {
                format: ImageFormat::Jpeg,
                width: u32::from(width),
                height: u32::from(height),
            });
        }
        i += 2 + len;
    }
    Err("the plan image is not a valid JPEG (no frame header before its image data)".into())
}

#[cfg(test)]
mod tests;
