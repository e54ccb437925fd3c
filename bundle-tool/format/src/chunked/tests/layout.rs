//! `BundleLayout` against real bundles: every span holds exactly its entry's bytes behind that entry's header.

use std::io::Cursor;

use super::fixture::{self, image_bytes};
use crate::chunked::BundleLayout;
use crate::framing::{parse_header, BLOCK};
use crate::writer::{build_bundle_to_vec, BundleSpec, ImageInput};

/// Checks that `path`'s span in `layout` is preceded by its header and holds `content`.
fn assert_entry(bundle: &[u8], layout: &BundleLayout, path: &str, content: &[u8]) {
    let span = layout
        .entry(path)
        .unwrap_or_else(|| panic!("{path} is laid out"));
    let at = span.offset as usize;
    let header: &[u8; BLOCK] = bundle[at - BLOCK..at].try_into().unwrap();
    let header = parse_header(header, 0).unwrap().unwrap();
    assert_eq!((header.path.as_str(), header.size), (path, span.len));
    assert_eq!(&bundle[at..span.end() as usize], content, "{path}");
}

#[test]
fn chunked_layout_matches_a_built_bundle() {
    let base = image_bytes(1, 40_000);
    let mut image = base.clone();
    image[20_000..23_000].fill(7);
    image.extend_from_slice(&image_bytes(9, 5_000));
    for with_base in [false, true] {
        let (_, parts) = fixture::parts(&image, with_base.then_some(&base[..]));
        let built = fixture::frame(&parts);
        let layout = BundleLayout::new(
            built.manifest_bytes.len() as u64,
            built.signatures_len,
            &built.manifest,
        );
        let entry = &built.manifest.images[0];
        assert_entry(
            &built.bundle,
            &layout,
            "manifest.json",
            &built.manifest_bytes,
        );
        assert_entry(&built.bundle, &layout, &entry.index_path(), &parts.index);
        assert_entry(
            &built.bundle,
            &layout,
            &entry.entry_path(),
            &parts.frames.concat(),
        );
        if with_base {
            assert!(!parts.delta.is_empty());
            assert_entry(&built.bundle, &layout, &entry.delta_path(), &parts.delta);
        } else {
            assert_eq!(layout.entry(&entry.delta_path()), None);
        }
        let spans = layout.image(&built.manifest, &entry.name).unwrap();
        assert_eq!(Some(spans.payload), layout.entry(&entry.entry_path()));
        assert_eq!(spans.index, layout.entry(&entry.index_path()));
        assert_eq!(layout.total_len(), built.bundle.len() as u64);
        assert_eq!(
            layout.head_len(),
            spans.index.unwrap().offset - BLOCK as u64,
            "the head ends where the first image's entries start"
        );
    }
}

#[test]
fn full_layout_matches_the_writer() {
    let key = ota_keys::SecretKey::generate();
    let spec = BundleSpec {
        version: "1.0.0".parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: None,
        level: 1,
        workers: 1,
    };
    let images = [
        ("a.img", "a", image_bytes(3, 10_000)),
        ("b.img", "b", image_bytes(4, 777)),
    ];
    let inputs = images
        .iter()
        .map(|(name, class, data)| ImageInput {
            name: name.to_string(),
            slot_class: class.to_string(),
            reader: Box::new(Cursor::new(data.clone())),
        })
        .collect();
    let (manifest, bundle) = build_bundle_to_vec(&spec, inputs, &[key]).unwrap();
    let head = crate::reader::UnverifiedBundle::read(&bundle[..]).unwrap();
    let signatures_len = crate::writer::encode_signatures(head.signatures()).len() as u64;
    let layout = BundleLayout::new(
        head.manifest_bytes().len() as u64,
        signatures_len,
        &manifest,
    );
    assert_eq!(layout.head_len(), head.position());
    assert_eq!(layout.total_len(), bundle.len() as u64);
    for (name, _, data) in &images {
        let span = layout.image(&manifest, name).unwrap().payload;
        let payload = &bundle[span.offset as usize..span.end() as usize];
        assert_eq!(&zstd::decode_all(payload).unwrap(), data);
    }
}
