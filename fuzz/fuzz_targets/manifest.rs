//! The manifest parser and validator, then what readers compute from an accepted manifest (layout, paths,
//! digests); an accepted manifest survives `to_bytes` → `from_bytes` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bundle_format::chunked::BundleLayout;
use ota_bundle_format::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::from_bytes(data) else {
        return;
    };
    let again = Manifest::from_bytes(&manifest.to_bytes()).expect("a written manifest parses");
    assert_eq!(again, manifest);
    let layout = BundleLayout::new(data.len() as u64, 200, &manifest);
    assert!(layout.head_len() <= layout.total_len());
    for image in &manifest.images {
        assert!(manifest.image_for_class(&image.slot_class).is_some());
        assert!(layout.image(&manifest, &image.name).is_some());
        image.sha256_bytes().expect("validated");
        image.payload_sha256_bytes().expect("validated");
        let _ = image.index_sha256_bytes();
        let _ = image.delta_sha256_bytes();
        let _ = ota_bundle_format::reader::index_limits(image);
    }
});
