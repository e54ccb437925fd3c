//! The stream reader on chunked bundles: honest ones read back exactly (by `Read` and by `copy_to`, with and
//! without content checks); every damaged part is refused naming it, before a byte of the damaged frame is out.

use std::io::Read;

use crate::chunked::tests::fixture::{self, image_bytes, Parts, CHUNK, PER_FRAME};
use crate::chunked::ChunkIndex;
use crate::error::BundleError;
use crate::reader::{index_limits, BundleReader};

fn images() -> (Vec<u8>, Vec<u8>) {
    let base = image_bytes(1, 60_000);
    let mut image = base.clone();
    image[10_000..14_000].fill(3);
    image.extend_from_slice(&image_bytes(5, 7_777));
    (base, image)
}

/// Reads the one image of `bundle` through `copy_to` (or `Read`), returning what came out and the verdict.
fn read(
    bundle: &[u8],
    trust: &ota_keys::TrustRoot,
    copy: bool,
    check: bool,
) -> (Vec<u8>, Result<(), BundleError>) {
    let mut out = Vec::new();
    let result = (|| {
        let mut reader = BundleReader::open(bundle, trust)?;
        let mut image = reader.next_image()?.expect("one image");
        if check {
            image = image.check_content_digest();
        }
        if copy {
            image.copy_to(&mut out)?;
        } else {
            let mut buf = [0u8; 1000];
            loop {
                match image.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(BundleError::from_io("reading", e)),
                }
            }
        }
        reader.finish().map(|_| ())
    })();
    (out, result)
}

#[test]
fn honest_chunked_bundles_read_back_exactly() {
    let (base, image) = images();
    for base in [None, Some(&base[..])] {
        let built = fixture::build(&image, base);
        for copy in [false, true] {
            for check in [false, true] {
                let (out, result) = read(&built.bundle, &built.trust, copy, check);
                result.unwrap_or_else(|e| panic!("copy {copy} check {check}: {e}"));
                assert!(out == image, "copy {copy} check {check}");
            }
        }
    }
}

/// Builds a bundle from honest parts changed by `tamper`, and reads it every way; each must fail with an error
/// containing `expect`, and no byte of frame `first_bad_frame` or later may have come out.
fn refused(tamper: impl Fn(&mut Parts), expect: &str, first_bad_frame: usize) {
    let (base, image) = images();
    let (_, mut parts) = fixture::parts(&image, Some(&base));
    tamper(&mut parts);
    let built = fixture::frame(&parts);
    for copy in [false, true] {
        for check in [false, true] {
            let (out, result) = read(&built.bundle, &built.trust, copy, check);
            let err = result
                .err()
                .unwrap_or_else(|| panic!("accepted ({expect})"))
                .to_string();
            assert!(
                err.contains(expect),
                "copy {copy} check {check}: got '{err}', wanted '{expect}'"
            );
            let limit = first_bad_frame
                .saturating_mul(CHUNK * PER_FRAME)
                .min(image.len());
            assert!(
                out.len() <= limit,
                "{} bytes out, the bad frame starts at {limit}",
                out.len()
            );
            assert_eq!(out[..], image[..out.len()], "what came out is the image");
        }
    }
}

#[test]
fn a_frame_with_a_flipped_byte_is_refused_before_its_bytes_are_out() {
    refused(|p| p.frames[2][5] ^= 0x40, "frame 2 (payload bytes", 2);
}

#[test]
fn swapped_frames_are_refused() {
    refused(|p| p.frames.swap(1, 2), "frame 1 (payload bytes", 1);
}

#[test]
fn an_index_whose_digest_differs_is_refused() {
    refused(
        |p| p.index[40] ^= 1,
        "chunk index of image 'rootfs.ext4' does not match its SHA-256",
        0,
    );
    // Reordered records (two chunk records swapped) are a different index too.
    refused(
        |p| {
            let frames = u32::from_le_bytes(p.index[12..16].try_into().unwrap()) as usize;
            let chunks = crate::chunked::HEADER_LEN + frames * 40;
            let (a, b) = p.index[chunks..].split_at_mut(44);
            a.swap_with_slice(&mut b[..44]);
        },
        "chunks.index_sha256",
        0,
    );
}

#[test]
fn an_index_entry_of_another_size_is_refused() {
    refused(|p| p.index.push(0), "the entry 'index/rootfs.ext4' is", 0);
}

#[test]
fn a_signed_index_that_lies_about_a_chunk_is_refused_by_the_content_check() {
    let (base, image) = images();
    let (_, mut parts) = fixture::parts(&image, Some(&base));
    let limits = index_limits(&parts.manifest.images[0]).unwrap();
    let mut index = ChunkIndex::decode(&parts.index, &limits).unwrap();
    index.chunks[4].sha256[0] ^= 1;
    parts.index = index.encode();
    parts.seal_index();
    let built = fixture::frame(&parts);
    let (_, result) = read(&built.bundle, &built.trust, true, true);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("chunk 4 (image bytes 12000..15000)"), "{err}");
    // Without the content check the frames' digests alone decide, as for the slot write.
    let (out, result) = read(&built.bundle, &built.trust, true, false);
    result.unwrap();
    assert!(out == image);
}

#[test]
fn a_truncated_delta_entry_is_refused() {
    refused(
        |p| {
            p.delta.pop();
        },
        "the entry 'delta/rootfs.ext4' is",
        usize::MAX,
    );
    // The file itself cut inside the delta entry.
    let (base, image) = images();
    let built = fixture::build(&image, Some(&base));
    let layout = crate::chunked::BundleLayout::new(
        built.manifest_bytes.len() as u64,
        built.signatures_len,
        &built.manifest,
    );
    let delta = layout.entry("delta/rootfs.ext4").unwrap();
    let cut = &built.bundle[..(delta.offset + delta.len / 2) as usize];
    let (_, result) = read(cut, &built.trust, true, false);
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("truncated") && err.contains("'delta/rootfs.ext4'"),
        "{err}"
    );
}

#[test]
fn a_modified_delta_entry_is_refused() {
    refused(
        |p| p.delta[3] ^= 1,
        "delta entry of image 'rootfs.ext4' does not match",
        usize::MAX,
    );
}

#[test]
fn a_missing_delta_entry_is_refused() {
    let (base, image) = images();
    let (_, parts) = fixture::parts(&image, Some(&base));
    let with = fixture::frame(&parts);
    let layout = crate::chunked::BundleLayout::new(
        with.manifest_bytes.len() as u64,
        with.signatures_len,
        &with.manifest,
    );
    let delta = layout.entry("delta/rootfs.ext4").unwrap();
    let mut without = with.bundle[..(delta.offset as usize - 512)].to_vec();
    without.extend_from_slice(&[0u8; 1024]);
    let (_, result) = read(&without, &with.trust, true, false);
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("found end of archive") || err.contains("expected 'delta/rootfs.ext4'"),
        "{err}"
    );
}

#[test]
fn a_payload_of_another_size_is_refused() {
    refused(
        |p| p.frames.last_mut().unwrap().push(0),
        "payload of image 'rootfs.ext4' is",
        0,
    );
}

/// Builds a chunked bundle with the production writer.
fn written(
    images: &[(&str, &str, &[u8])],
    base: Option<&[u8]>,
    key: &ota_keys::SecretKey,
) -> Vec<u8> {
    use std::io::Cursor;
    let inputs = images
        .iter()
        .map(|(name, class, data)| crate::SeekableImage {
            name: name.to_string(),
            slot_class: class.to_string(),
            reader: Box::new(Cursor::new(data.to_vec())),
        })
        .collect();
    let mut base = base.map(|b| crate::write::BaseBundle::open(Cursor::new(b.to_vec())).unwrap());
    let spec = crate::BundleSpec {
        version: "2.0.0".parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: None,
        level: 3,
        workers: 2,
    };
    let (_, out) = crate::build_chunked_bundle(
        Cursor::new(Vec::new()),
        &spec,
        crate::chunked::DEFAULT_PARAMS,
        inputs,
        base.as_mut(),
        std::slice::from_ref(key),
        |_| {},
    )
    .unwrap();
    out.into_inner()
}

#[test]
fn bundles_from_the_writer_read_back_and_lay_out_as_their_head_says() {
    let key = ota_keys::SecretKey::generate();
    let trust = ota_keys::TrustRoot::new(1, 1, vec![key.public_key()]).unwrap();
    let v1: Vec<u8> = (0..900_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut v2 = v1[..300_000].to_vec();
    v2.extend_from_slice(&image_bytes(7, 50_000));
    v2.extend_from_slice(&v1[300_000..]);
    let app = image_bytes(3, 70_000);
    let old = written(
        &[("rootfs.ext4", "rootfs", &v1), ("app.img", "app", &app)],
        None,
        &key,
    );
    let new = written(
        &[("rootfs.ext4", "rootfs", &v2), ("app.img", "app", &app)],
        Some(&old),
        &key,
    );
    for (bundle, images) in [(&old, [&v1, &app]), (&new, [&v2, &app])] {
        for (copy, check) in [(true, true), (false, false), (true, false)] {
            let mut reader = BundleReader::open(&bundle[..], &trust).unwrap();
            for expected in images {
                let mut image = reader.next_image().unwrap().unwrap();
                if check {
                    image = image.check_content_digest();
                }
                let mut out = Vec::new();
                if copy {
                    image.copy_to(&mut out).unwrap();
                } else {
                    image.read_to_end(&mut out).unwrap();
                }
                assert!(&out == expected);
            }
            reader.finish().unwrap();
        }
        let crate::head::HeadParse::Complete(head) =
            crate::head::parse_head(&bundle[..64 << 10]).unwrap()
        else {
            panic!("a small head fits the first fetch");
        };
        let head = head.verify(&trust).unwrap();
        assert_eq!(head.layout.total_len(), bundle.len() as u64);
        let at = |span: crate::chunked::Span| &bundle[span.offset as usize..span.end() as usize];
        let hex_sha = |bytes: &[u8]| hex::encode(fixture::sha(bytes));
        for image in &head.manifest.images {
            let spans = head.layout.image(&head.manifest, &image.name).unwrap();
            assert_eq!(hex_sha(at(spans.payload)), image.payload_sha256);
            let info = image.chunked().unwrap();
            assert_eq!(spans.delta.map(|d| hex_sha(at(d))), info.delta_sha256);
            assert_eq!(
                spans.index.map(|i| hex_sha(at(i))),
                Some(info.index_sha256.clone())
            );
            let span = head
                .layout
                .image(&head.manifest, &image.name)
                .unwrap()
                .index
                .unwrap();
            head.index(
                &image.name,
                &bundle[span.offset as usize..span.end() as usize],
            )
            .unwrap();
        }
    }
    let manifest = crate::UnverifiedBundle::read(&new[..])
        .unwrap()
        .manifest_unverified()
        .unwrap();
    assert!(
        manifest.images[0].chunks.as_ref().unwrap().base.is_some(),
        "the new bundle has deltas"
    );
}

#[test]
fn raw_entries_stream_every_entry_and_raw_payloads_decode_to_the_image() {
    let (base, image) = images();
    let (_, parts) = fixture::parts(&image, Some(&base));
    let built = fixture::frame(&parts);
    let mut entries = Vec::new();
    crate::UnverifiedBundle::read(&built.bundle[..])
        .unwrap()
        .for_each_raw_entry(|_, path, content| {
            let mut bytes = Vec::new();
            content.read_to_end(&mut bytes).unwrap();
            entries.push((path.to_string(), bytes));
            Ok(())
        })
        .unwrap();
    let expected = vec![
        ("index/rootfs.ext4".to_string(), parts.index.clone()),
        ("images/rootfs.ext4".to_string(), parts.frames.concat()),
        ("delta/rootfs.ext4".to_string(), parts.delta.clone()),
    ];
    assert!(entries == expected);
    let mut payloads = Vec::new();
    crate::UnverifiedBundle::read(&built.bundle[..])
        .unwrap()
        .for_each_raw_payload(|_, content| {
            let mut bytes = Vec::new();
            content.read_to_end(&mut bytes).unwrap();
            payloads.push(bytes);
            Ok(())
        })
        .unwrap();
    assert_eq!(payloads.len(), 1);
    assert!(
        zstd::decode_all(&payloads[0][..]).unwrap() == image,
        "the frames are one zstd stream"
    );

    // A delta entry one byte longer than the manifest says.
    let mut longer = parts;
    longer.delta.push(0);
    let built = fixture::frame(&longer);
    let err = crate::UnverifiedBundle::read(&built.bundle[..])
        .unwrap()
        .for_each_raw_entry(|_, _, content| {
            std::io::copy(content, &mut std::io::sink()).unwrap();
            Ok(())
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'delta/rootfs.ext4' is") && err.contains("chunks.delta_size"),
        "{err}"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

    /// No byte of a chunked bundle (head, index, frames, delta, padding, end blocks) can change without the
    /// bundle being refused, and a damaged bundle never makes the reader panic or hand out a wrong byte.
    #[test]
    fn every_changed_byte_is_refused(at in proptest::prelude::any::<proptest::sample::Index>(), xor in 1u8..=255) {
        use std::sync::OnceLock;
        static BUILT: OnceLock<fixture::Built> = OnceLock::new();
        let built = BUILT.get_or_init(|| {
            let (base, image) = images();
            fixture::build(&image, Some(&base))
        });
        let (_, image) = images();
        let mut bundle = built.bundle.clone();
        let at = at.index(bundle.len());
        bundle[at] ^= xor;
        for copy in [false, true] {
            let (out, result) = read(&bundle, &built.trust, copy, false);
            proptest::prop_assert!(result.is_err(), "byte {} changed and accepted", at);
            proptest::prop_assert!(out[..] == image[..out.len()], "a wrong byte came out");
        }
    }
}
