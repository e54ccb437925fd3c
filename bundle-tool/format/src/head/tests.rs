//! Parsing a head from a growing prefix of a bundle, then authenticating it as the stream reader would.

use super::*;
use crate::chunked::tests::fixture::{self, image_bytes};

/// Feeds `bundle`'s prefixes as a range client would: first `first` bytes, then what `NeedMore` asks.
fn fetch_head(bundle: &[u8], first: usize) -> (UnverifiedHead, usize) {
    let mut have = first.min(bundle.len());
    for _ in 0..5 {
        match parse_head(&bundle[..have]).unwrap() {
            HeadParse::Complete(head) => return (head, have),
            HeadParse::NeedMore(n) => {
                assert!(n as usize > have, "NeedMore({n}) with {have} bytes held");
                have = n as usize;
            }
        }
    }
    panic!("the head never completed");
}

fn bundle() -> fixture::Built {
    let base = image_bytes(1, 20_000);
    let mut image = base.clone();
    image[100..200].fill(0);
    fixture::build(&image, Some(&base))
}

#[test]
fn any_first_fetch_completes_the_head_and_verifies() {
    let built = bundle();
    let layout = BundleLayout::new(
        built.manifest_bytes.len() as u64,
        built.signatures_len,
        &built.manifest,
    );
    for first in [
        0,
        1,
        511,
        512,
        600,
        1024,
        1536,
        2000,
        4096,
        FIRST_FETCH as usize,
    ] {
        let (head, held) = fetch_head(&built.bundle, first);
        assert!(
            held as u64 <= layout.head_len().max(first as u64),
            "asked for no more than the head"
        );
        assert_eq!(head.len(), layout.head_len());
        let verified = head.verify(&built.trust).unwrap();
        assert_eq!(verified.layout, layout);
        assert_eq!(verified.manifest, built.manifest);
        assert_eq!(verified.bundle_id, manifest_digest(&built.manifest_bytes));
        let index = verified.layout.entry("index/rootfs.ext4").unwrap();
        let bytes = &built.bundle[index.offset as usize..index.end() as usize];
        let decoded = verified.index("rootfs.ext4", bytes).unwrap();
        assert!(!decoded.deltas.is_empty());
        let err = verified.index("rootfs.ext4", &bytes[1..]).unwrap_err();
        assert!(err.to_string().contains("chunks.index_size"), "{err}");
    }
}

#[test]
fn an_untrusted_or_altered_head_is_refused() {
    let built = bundle();
    let (head, _) = fetch_head(&built.bundle, 4096);
    let stranger = ota_keys::SecretKey::generate();
    let other = TrustRoot::new(1, 1, vec![stranger.public_key()]).unwrap();
    assert!(matches!(
        head.verify(&other),
        Err(BundleError::Signature(_))
    ));

    let mut altered = built.bundle.clone();
    let at = altered
        .windows(7)
        .position(|w| w == b"chunked")
        .expect("the manifest names the payload kind");
    altered[at] = b'C';
    let (head, _) = fetch_head(&altered, 4096);
    assert!(matches!(
        head.verify(&built.trust),
        Err(BundleError::Signature(_))
    ));
}

#[test]
fn a_malformed_head_is_refused_not_waited_for() {
    let built = bundle();
    assert!(matches!(
        parse_head(&[0x55; 4096]),
        Err(BundleError::NotABundle(_))
    ));
    // A manifest header claiming more than the reader accepts is an error, not a request for megabytes.
    let mut huge = built.bundle[..4096].to_vec();
    let header = crate::framing::entry_header("manifest.json", 64 << 20, 0).unwrap();
    huge[1024..1536].copy_from_slice(&header);
    let err = parse_head(&huge).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::TooLarge {
                what: "manifest",
                ..
            }
        ),
        "{err}"
    );
}
