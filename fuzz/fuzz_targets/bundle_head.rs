//! The range client's head check: `parse_head` over any prefix, the carried trust chain walked from the test
//! root, the signature check, the layout, and each chunked image's index checked (`VerifiedHead::index`) over
//! the bytes the layout points at.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bundle_format::head::{parse_head, HeadParse};

fuzz_target!(|data: &[u8]| {
    let trust = ota_fuzz::trust_root();
    check(data, &trust);
    if let Some(resigned) = ota_fuzz::resign(data) {
        check(&resigned, &trust);
    }
});

fn check(data: &[u8], trust: &ota_keys::TrustRoot) {
    let head = match parse_head(data) {
        Ok(HeadParse::Complete(head)) => head,
        Ok(HeadParse::NeedMore(n)) => {
            // Asking for more must mean more than the bytes given (else a client would loop forever).
            assert!(
                n > data.len() as u64,
                "NeedMore({n}) with {} bytes",
                data.len()
            );
            return;
        }
        Err(_) => return,
    };
    assert!(head.len() <= data.len() as u64);
    // A robot walks the carried trust chain from its root before it checks the signatures.
    let Some(trust) = ota_fuzz::bundle_trust(trust, head.trust_chain()) else {
        return;
    };
    let Ok(verified) = head.verify(&trust) else {
        return;
    };
    assert!(verified.layout.head_len() <= verified.layout.total_len());
    for image in &verified.manifest.images {
        let Some(spans) = verified.layout.image(&verified.manifest, &image.name) else {
            panic!("the layout lacks image '{}'", image.name);
        };
        let Some(index) = spans.index else { continue };
        let (Ok(start), Ok(end)) = (usize::try_from(index.offset), usize::try_from(index.end()))
        else {
            continue;
        };
        if let Some(bytes) = data.get(start..end) {
            let _ = verified.index(&image.name, bytes);
        }
    }
}
