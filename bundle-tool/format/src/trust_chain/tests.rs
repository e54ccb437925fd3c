use std::sync::OnceLock;

use ota_keys::{RotationError, SecretKey, Signature, SignedTrustRoot, TrustRoot};
use proptest::prelude::*;

use super::*;
use crate::chunked::tests::fixture;
use crate::head::{parse_head, HeadParse};
use crate::reader::{decode_signature_block, UnverifiedBundle};
use crate::writer::{encode_signature_block, encode_signatures, rewrite_head, sign_manifest};

/// Keys of root version v: `pool()[v % 8]` and the next one, so neighbouring roots share at most one key.
fn pool() -> &'static [SecretKey] {
    static KEYS: OnceLock<Vec<SecretKey>> = OnceLock::new();
    KEYS.get_or_init(|| (0..8).map(|_| SecretKey::generate()).collect())
}

fn keys_of(version: u64) -> [&'static SecretKey; 2] {
    let i = version as usize % 8;
    [&pool()[i], &pool()[(i + 1) % 8]]
}

fn root(version: u64, threshold: u32) -> TrustRoot {
    TrustRoot::new(
        version,
        threshold,
        keys_of(version).iter().map(|k| k.public_key()).collect(),
    )
    .unwrap()
}

/// Version `version` signed by both keys of the previous root and both of its own: a proper link.
fn link(version: u64, threshold: u32) -> SignedTrustRoot {
    let mut signed = SignedTrustRoot::new(root(version, threshold));
    for key in keys_of(version - 1).iter().chain(keys_of(version).iter()) {
        signed.sign(key);
    }
    signed
}

/// Links `from + 1 ..= to`.
fn chain(from: u64, to: u64) -> Vec<SignedTrustRoot> {
    (from + 1..=to)
        .map(|v| link(v, 1 + (v % 2) as u32))
        .collect()
}

fn some_signatures(n: usize) -> Vec<Signature> {
    sign_manifest(
        b"manifest",
        &(0..n).map(|_| SecretKey::generate()).collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever chain of links and signatures: the block decodes to what was encoded and encodes to the same bytes.
    #[test]
    fn the_block_round_trips(first in 0u64..6, len in 0usize..6, sigs in 0usize..4) {
        let carried = chain(first, first + len as u64);
        let signatures = some_signatures(sigs);
        let bytes = encode_signature_block(&signatures, &carried);
        prop_assert!(bytes.len() as u64 <= crate::framing::MAX_SIGNATURES_LEN);
        let block = decode_signature_block(&bytes).unwrap();
        prop_assert_eq!(block.trust_chain.len(), carried.len());
        for (a, b) in block.trust_chain.iter().zip(&carried) {
            prop_assert_eq!(a.to_json_pretty(), b.to_json_pretty());
        }
        prop_assert_eq!(encode_signature_block(&block.signatures, &block.trust_chain), bytes.clone());
        if carried.is_empty() {
            // Without a chain the block is the old one, byte for byte.
            prop_assert_eq!(bytes, encode_signatures(&signatures));
        }
    }

    /// Any order but oldest-first-one-per-version is refused, as is a repeated version.
    #[test]
    fn only_oldest_first_one_root_per_version(len in 2usize..6, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let mut carried = chain(0, len as u64);
        let (a, b) = (a.index(len), b.index(len));
        prop_assume!(a != b);
        carried.swap(a, b);
        let bytes = encode_signature_block(&[], &carried);
        prop_assert!(matches!(decode_signature_block(&bytes), Err(BundleError::BadSignatureBlock(_))));
        // A repeat of one root.
        let mut repeated = chain(0, len as u64);
        repeated.insert(a, repeated[a].clone());
        let bytes = encode_signature_block(&[], &repeated);
        prop_assert!(decode_signature_block(&bytes).is_err());
        // normalize_chain puts both right (identical copies are one root).
        prop_assert!(check_chain(&normalize_chain(carried)).is_ok());
        prop_assert!(check_chain(&normalize_chain(repeated)).is_ok());
    }

    /// Flipping any byte of a block with a chain leaves no valid block that reads differently from its bytes.
    #[test]
    fn a_changed_byte_is_refused_or_reads_as_written(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let bytes = encode_signature_block(&some_signatures(1), &chain(1, 3));
        let mut bad = bytes.clone();
        let i = at.index(bad.len());
        bad[i] ^= xor;
        if let Ok(block) = decode_signature_block(&bad) {
            prop_assert_eq!(encode_signature_block(&block.signatures, &block.trust_chain), bad);
        }
    }

    /// The walk from any start: nothing newer → the start (never a downgrade); newer → the chain's newest root.
    #[test]
    fn resolve_moves_only_forward(start in 0u64..8, newest in 1u64..8) {
        let carried = chain(0, newest);
        let start_root = root(start, 1);
        let resolved = resolve(&start_root, &carried).unwrap();
        prop_assert_eq!(resolved.from, start);
        if newest <= start {
            prop_assert_eq!(&resolved.root, &start_root);
            prop_assert!(resolved.adopted.is_none());
        } else {
            prop_assert_eq!(resolved.root.version, newest);
            let adopted = resolved.adopted.unwrap();
            prop_assert_eq!(&adopted.signed, &resolved.root);
        }
    }
}

#[test]
fn an_empty_chain_is_left_out_and_an_explicit_empty_list_is_not_canonical() {
    assert_eq!(
        String::from_utf8(encode_signature_block(&[], &[])).unwrap(),
        "{\n  \"signatures\": []\n}\n"
    );
    let explicit = b"{\n  \"signatures\": [],\n  \"trust_chain\": []\n}\n";
    assert!(matches!(
        decode_signature_block(explicit),
        Err(BundleError::BadSignatureBlock(m)) if m.contains("canonical")
    ));
}

#[test]
fn the_chain_is_bounded() {
    let long = chain(0, MAX_CHAIN_ROOTS as u64 + 1);
    let bytes = encode_signature_block(&[], &long);
    let err = decode_signature_block(&bytes).unwrap_err().to_string();
    assert!(err.contains("over the limit of 32"), "{err}");
    assert!(check_chain(&long[..MAX_CHAIN_ROOTS]).is_ok());
    // The writer refuses to produce either.
    assert!(
        encode_signature_block(&[], &long[..MAX_CHAIN_ROOTS]).len() as u64
            <= crate::framing::MAX_SIGNATURES_LEN
    );
    let err = crate::BundleWriter::with_chain(Vec::new(), b"x", &[], &long);
    assert!(err.is_err());
}

#[test]
fn something_else_than_a_root_is_refused() {
    let text = "{\n  \"signatures\": [],\n  \"trust_chain\": [\n    {\"type\": \"ota-manifest\"}\n  ]\n}\n";
    assert!(matches!(
        decode_signature_block(text.as_bytes()),
        Err(BundleError::BadSignatureBlock(_))
    ));
}

#[test]
fn a_broken_link_refuses_all_and_names_it() {
    let mut carried = chain(1, 3);
    // Break both signatures by root 1's keys (whatever their order in the list): version 2 then lacks the
    // previous root's threshold, though its own key's signature is intact.
    let previous: Vec<_> = keys_of(1).iter().map(|k| k.public_key().key_id()).collect();
    for s in &mut carried[0].signatures {
        if previous.contains(&s.key_id) {
            s.sig[0] ^= 1;
        }
    }
    let err = resolve(&root(1, 1), &carried).unwrap_err();
    let BundleError::TrustChain { error, kept } = &err else {
        panic!("{err}");
    };
    assert_eq!(*kept, 1);
    assert!(
        matches!(**error, RotationError::Link { version: 2, .. }),
        "{error}"
    );
    let line = err.to_string();
    assert!(
        line.starts_with("the bundle's trust chain does not verify: trust root version 2 refused"),
        "{line}"
    );
    assert!(
        line.ends_with("the trust root stays at version 1"),
        "{line}"
    );
    // A later broken link refuses it too, though version 2 was fine: all or nothing.
    let mut carried = chain(1, 3);
    carried[1].signatures.clear();
    let err = resolve(&root(1, 1), &carried).unwrap_err();
    assert!(
        err.to_string().contains("trust root version 3 refused"),
        "{err}"
    );
    // From version 2, the broken version 2 is ignored: only what is newer than the start is walked.
    let mut carried = chain(1, 3);
    carried[0].signatures.clear();
    assert_eq!(resolve(&root(2, 1), &carried).unwrap().root.version, 3);
}

/// A chunked bundle with a chain: the stream reader and the range client's head read it, and the layout (which
/// depends on the signature block's length) still finds every entry.
#[test]
fn a_carried_chain_survives_rewriting_and_the_head_check() {
    let built = fixture::build(&fixture::image_bytes(3, 40_000), None);
    let head = UnverifiedBundle::read(&built.bundle[..]).unwrap();
    let signatures = head.signatures().to_vec();
    assert!(head.trust_chain().is_empty());
    let carried = chain(0, 3);
    let with = rewrite_head(head, Vec::new(), &signatures, &carried).unwrap();
    let head = UnverifiedBundle::read(&with[..]).unwrap();
    assert_eq!(head.trust_chain().len(), 3);
    assert_eq!(head.manifest_bytes(), &built.manifest_bytes[..]);
    let mut reader = head.verify(&built.trust).unwrap();
    reader.verify_remaining_images().unwrap();
    reader.finish().unwrap();

    let HeadParse::Complete(head) = parse_head(&with).unwrap() else {
        panic!("the head fits in the bundle");
    };
    assert_eq!(head.trust_chain().len(), 3);
    let verified = head.verify(&built.trust).unwrap();
    let index = verified.layout.image(&verified.manifest, "rootfs.ext4");
    assert!(index.is_some());

    // Taking the chain away again gives back the bundle as the writer frames it without one.
    let head = UnverifiedBundle::read(&with[..]).unwrap();
    let without = rewrite_head(head, Vec::new(), &signatures, &[]).unwrap();
    let head = UnverifiedBundle::read(&built.bundle[..]).unwrap();
    let plain = rewrite_head(head, Vec::new(), &signatures, &[]).unwrap();
    assert!(
        without == plain,
        "removing the chain gives the plain bundle"
    );
    assert_eq!(with.len() - without.len(), {
        let block = encode_signature_block(&signatures, &carried).len();
        let padded = |n: usize| n.div_ceil(512) * 512;
        padded(block) - padded(encode_signatures(&signatures).len())
    });
}
