//! What the fuzz targets share: a fixed test release key and trust root, and `resign`, which lets mutated
//! manifests past the signature check so the fuzzer reaches the code behind it (validation, payload streaming).
//!
//! A fuzzer cannot forge ed25519 signatures, so without `resign` every mutation of a manifest would stop at
//! "not signed by enough trusted keys". The targets feed each input twice: as it is (the attacker's view: the
//! signature check itself) and re-signed with the test key (a release key holder's mistakes, or a bug behind
//! the check).

use std::io::{self, Read};

use ota_bundle_format::framing::{
    entry_header, format_marker, padding_len, FORMAT_ENTRY, MANIFEST_ENTRY, SIGNATURES_ENTRY,
};
use ota_bundle_format::trust_chain;
use ota_bundle_format::writer::encode_signature_block;
use ota_bundle_format::{sign_manifest, UnverifiedBundle};
use ota_keys::{SecretKey, SignedTrustRoot, TrustRoot};

/// The fuzzing release key: a fixed test key (never used for anything else), so the committed seed bundles
/// verify against [`trust_root`] on every machine.
const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIM6x9vqysHBM9kKxrhyaBetgOd6MpHejNmKuG6H/eVyB
-----END PRIVATE KEY-----
";

/// A second fixed test key, for roots of two keys (trust chains).
const SECOND_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICZ0zqSFp3rWrBhnKdhXIsLPTPlg7Tp7yjbHX8h1XqYe
-----END PRIVATE KEY-----
";

/// The fixed test release key.
pub fn test_key() -> SecretKey {
    SecretKey::from_pem(TEST_KEY_PEM).expect("the fuzzing test key parses")
}

/// Both fixed test keys: [`test_key`] first.
pub fn test_keys() -> [SecretKey; 2] {
    [
        test_key(),
        SecretKey::from_pem(SECOND_KEY_PEM).expect("the second fuzzing test key parses"),
    ]
}

/// A 1-of-1 trust root of [`test_key`].
pub fn trust_root() -> TrustRoot {
    TrustRoot::single_key(test_key().public_key())
}

/// The same bundle with its head rebuilt: the manifest bytes it carries (mutated or not) signed by
/// [`test_key`], the trust chain it carries kept. `None` when the head does not even parse.
pub fn resign(bundle: &[u8]) -> Option<Vec<u8>> {
    let head = UnverifiedBundle::read(bundle).ok()?;
    let manifest = head.manifest_bytes();
    let signatures =
        encode_signature_block(&sign_manifest(manifest, &[test_key()]), head.trust_chain());
    let mut out = Vec::with_capacity(bundle.len() + 512);
    push_entry(&mut out, FORMAT_ENTRY, &format_marker());
    push_entry(&mut out, MANIFEST_ENTRY, manifest);
    push_entry(&mut out, SIGNATURES_ENTRY, &signatures);
    out.extend_from_slice(bundle.get(head.position() as usize..)?);
    Some(out)
}

/// Appends one canonical entry (header, content, padding).
pub fn push_entry(out: &mut Vec<u8>, path: &str, content: &[u8]) {
    let header = entry_header(path, content.len() as u64, 0).expect("a short entry path");
    out.extend_from_slice(&header);
    out.extend_from_slice(content);
    out.resize(out.len() + padding_len(content.len() as u64), 0);
}

/// The root a robot at `trust` checks a bundle's signatures against: `trust` walked through the chain the bundle
/// carries (`trust_chain::resolve`); never older than `trust`. `None`: the chain is refused.
pub fn bundle_trust(trust: &TrustRoot, carried: &[SignedTrustRoot]) -> Option<TrustRoot> {
    let resolved = trust_chain::resolve(trust, carried).ok()?;
    assert!(resolved.root.version >= trust.version);
    assert_eq!(
        resolved.adopted.as_ref().map(|r| &r.signed),
        (resolved.root != *trust).then_some(&resolved.root)
    );
    Some(resolved.root)
}

/// Reads a bundle as a robot does: read the head, walk the carried trust chain from `trust`, check the signatures
/// against the root reached, stream every image, finish. `threaded` picks the pipelined `copy_to` (what the
/// client uses) over the plain `Read` of the image stream. Errors are expected; panics, hangs and unbounded
/// memory are the findings.
pub fn read_bundle(bytes: &[u8], trust: &TrustRoot, threaded: bool) {
    let Ok(head) = UnverifiedBundle::read(bytes) else {
        return;
    };
    let Some(trust) = bundle_trust(trust, head.trust_chain()) else {
        return;
    };
    let Ok(mut reader) = head.verify(&trust) else {
        return;
    };
    let _ = reader.manifest_digest();
    loop {
        let image = match reader.next_image() {
            Ok(Some(image)) => image.check_content_digest(),
            Ok(None) => break,
            Err(_) => return,
        };
        let ok = if threaded {
            image.copy_to(&mut io::sink()).is_ok()
        } else {
            drain(image).is_ok()
        };
        if !ok {
            return;
        }
    }
    let _ = reader.finish();
}

/// Reads a stream to its end in small pieces.
fn drain(mut stream: impl Read) -> Result<u64, io::Error> {
    let mut buf = [0u8; 16 << 10];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// The boot decision over decoded variables, as the bootloader script and `ota-client` make it: never panics,
/// boots the trial slot only with tries left and counts that boot, and falls back to the primary.
pub fn check_boot_contract(vars: &std::collections::BTreeMap<String, String>) {
    use ota_bootloader::{select_boot, BootEnv, MAX_TRIES, OTA_TRIES};
    let env = BootEnv::from_vars(vars);
    assert!(env.tries <= MAX_TRIES);
    let decision = select_boot(vars);
    match decision.updated_vars {
        Some(updated) => {
            assert_eq!(Some(decision.boot), env.armed_trial());
            assert_eq!(decision.fallback, Some(env.primary));
            let after = BootEnv::from_vars(&updated);
            assert_eq!(after.tries + 1, env.tries, "a trial boot counts one try");
            assert_eq!(updated.get(OTA_TRIES), Some(&after.tries.to_string()));
        }
        None => {
            assert_eq!(decision.boot, env.primary);
            assert_eq!(env.armed_trial(), None);
        }
    }
    // Writing the normalised state back and reading it again changes nothing.
    assert_eq!(BootEnv::from_vars(&env.applied_to(vars)), env);
}

/// CRC-32 (IEEE), as the U-Boot env and the state file store it: lets targets get past the checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}
