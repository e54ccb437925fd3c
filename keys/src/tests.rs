use std::os::unix::fs::PermissionsExt;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::*;

// RFC 8032 section 7.1, TEST 1.
const RFC_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC_SIG_EMPTY_MSG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
// sha256(RFC_PUBLIC)[..8]
const RFC_KEY_ID: &str = "21fe31dfa154a261";
// The RFC 8032 key as written by `openssl pkey` (PKCS#8 v1) and `openssl pkey -pubout`.
const RFC_SECRET_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
-----END PRIVATE KEY-----
";
const RFC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
-----END PUBLIC KEY-----
";
const X25519_SECRET_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VuBCIEIJiC50WcuxI5LLuE3sFjJkJS/jb2o8ZE0L6X//+EJLdZ
-----END PRIVATE KEY-----
";
const P256_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6IHSl8derXkDKhqxbcee0CSPQVHS
K2OskP6ZbcdkIVlH66IbonbraYVckiPJEL0wisO0KVz99A5zKL4Z1m/luA==
-----END PUBLIC KEY-----
";

fn raw32(hex_str: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).unwrap();
    out
}

fn rfc_secret() -> SecretKey {
    SecretKey(SigningKey::from_bytes(&raw32(RFC_SECRET)))
}

fn keys<const N: usize>() -> [SecretKey; N] {
    std::array::from_fn(|_| SecretKey::generate())
}

fn root(version: u64, threshold: u32, signers: &[&SecretKey]) -> TrustRoot {
    TrustRoot::new(
        version,
        threshold,
        signers.iter().map(|k| k.public_key()).collect(),
    )
    .unwrap()
}

fn signed_by(root: TrustRoot, signers: &[&SecretKey]) -> SignedTrustRoot {
    let mut signed = SignedTrustRoot::new(root);
    for key in signers {
        signed.sign(key);
    }
    signed
}

// ---------------------------------------------------------------- key ids

#[test]
fn key_id_known_answer_and_stable() {
    let public = PublicKey::from_bytes(&raw32(RFC_PUBLIC)).unwrap();
    assert_eq!(public.key_id().to_string(), RFC_KEY_ID);
    assert_eq!(format!("{:?}", public.key_id()), RFC_KEY_ID);
    assert_eq!(rfc_secret().key_id(), public.key_id());
    assert_eq!(
        PublicKey::from_pem(RFC_PUBLIC_PEM).unwrap().key_id(),
        public.key_id()
    );
    assert_eq!(format!("{public:?}"), format!("PublicKey({RFC_KEY_ID})"));
}

#[test]
fn key_id_parse_and_serde() {
    let id: KeyId = RFC_KEY_ID.parse().unwrap();
    assert_eq!(id.to_string(), RFC_KEY_ID);
    assert_eq!(
        serde_json::to_string(&id).unwrap(),
        format!("\"{RFC_KEY_ID}\"")
    );
    assert_eq!(
        serde_json::from_str::<KeyId>(&format!("\"{RFC_KEY_ID}\"")).unwrap(),
        id
    );
    for bad in [
        "",
        "21fe31dfa154a26",
        "21fe31dfa154a2611",
        "21FE31DFA154A261",
        "21fe31dfa154a26g",
        " 21fe31dfa154a26",
    ] {
        assert!(
            matches!(bad.parse::<KeyId>(), Err(KeyError::BadKeyId(s)) if s == bad),
            "{bad:?} accepted"
        );
    }
    assert!(serde_json::from_str::<KeyId>("\"zz\"").is_err());
}

// ---------------------------------------------------------------- keys and PEM

#[test]
fn rfc8032_signature_known_answer() {
    let signature = rfc_secret().sign(b"");
    assert_eq!(hex::encode(signature.sig), RFC_SIG_EMPTY_MSG);
    assert_eq!(signature.key_id.to_string(), RFC_KEY_ID);
    let public = PublicKey::from_bytes(&raw32(RFC_PUBLIC)).unwrap();
    public.verify(b"", &signature).unwrap();
}

#[test]
fn openssl_style_pem_loads() {
    let secret = SecretKey::from_pem(RFC_SECRET_PEM).unwrap();
    assert_eq!(secret.key_id().to_string(), RFC_KEY_ID);
    assert_eq!(secret.to_pem().as_str(), RFC_SECRET_PEM);
    let public = PublicKey::from_pem(RFC_PUBLIC_PEM).unwrap();
    assert_eq!(public.to_pem(), RFC_PUBLIC_PEM);
    assert_eq!(public.to_bytes(), raw32(RFC_PUBLIC));
    // CRLF line endings and surrounding whitespace are tolerated.
    let crlf = format!("\n  {}\n", RFC_PUBLIC_PEM.replace('\n', "\r\n"));
    assert_eq!(PublicKey::from_pem(&crlf).unwrap(), public);
}

#[test]
fn pem_round_trips() {
    let secret = SecretKey::generate();
    let pem = secret.to_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let again = SecretKey::from_pem(&pem).unwrap();
    assert_eq!(again.public_key(), secret.public_key());
    assert_eq!(again.sign(b"m"), secret.sign(b"m"));

    let public = secret.public_key();
    let pem = public.to_pem();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert_eq!(PublicKey::from_pem(&pem).unwrap(), public);
    assert_eq!(PublicKey::from_bytes(&public.to_bytes()).unwrap(), public);
}

#[test]
fn pkcs8_v2_with_public_key_loads_and_is_checked() {
    let signing = SigningKey::generate(&mut rand_core::OsRng);
    let v2 = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
    let loaded = SecretKey::from_pem(&v2).unwrap();
    assert_eq!(
        loaded.public_key().to_bytes(),
        signing.verifying_key().to_bytes()
    );

    let mut mismatched = ed25519_dalek::pkcs8::KeypairBytes::from(&signing);
    mismatched.public_key = Some(ed25519_dalek::pkcs8::PublicKeyBytes(raw32(RFC_PUBLIC)));
    let pem = mismatched.to_pkcs8_pem(LineEnding::LF).unwrap();
    let err = SecretKey::from_pem(&pem).unwrap_err();
    assert!(
        matches!(&err, KeyError::BadPem { detail, .. } if detail.contains("does not belong")),
        "{err}"
    );
}

#[test]
fn pem_errors() {
    assert!(matches!(
        PublicKey::from_pem("ssh-ed25519 AAAA"),
        Err(KeyError::NotPem { path: None, .. })
    ));
    assert!(matches!(
        SecretKey::from_pem(""),
        Err(KeyError::NotPem { path: None, .. })
    ));
    // Secret key where a public one is expected and vice versa.
    let err = PublicKey::from_pem(RFC_SECRET_PEM).unwrap_err();
    assert!(
        matches!(&err, KeyError::BadPem { detail, .. } if detail.contains("secret key")),
        "{err}"
    );
    assert!(matches!(
        SecretKey::from_pem(RFC_PUBLIC_PEM),
        Err(KeyError::BadPem { .. })
    ));
    // Corrupt base64 / truncated DER.
    let corrupt = RFC_PUBLIC_PEM.replace("MCow", "MC!w");
    assert!(matches!(
        PublicKey::from_pem(&corrupt),
        Err(KeyError::BadPem { .. })
    ));
    let truncated = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        PublicKey::from_pem(truncated),
        Err(KeyError::BadPem { .. })
    ));
    // Other algorithms are named by OID.
    let err = PublicKey::from_pem(P256_PUBLIC_PEM).unwrap_err();
    assert!(matches!(&err, KeyError::NotEd25519 { oid, .. } if oid == "1.2.840.10045.2.1"));
    assert!(err.to_string().contains("not an ed25519 key"), "{err}");
    let err = SecretKey::from_pem(X25519_SECRET_PEM).unwrap_err();
    assert!(matches!(&err, KeyError::NotEd25519 { oid, .. } if oid == "1.3.101.110"));
}

#[test]
fn weak_and_invalid_public_keys_are_rejected() {
    // Identity point (small order).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(matches!(
        PublicKey::from_bytes(&identity),
        Err(KeyError::WeakKey)
    ));
    // Point of order 2: y = -1.
    let minus_one = raw32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    assert!(matches!(
        PublicKey::from_bytes(&minus_one),
        Err(KeyError::WeakKey)
    ));
    // y = p + 1, a non-canonical spelling of the identity.
    let non_canonical = raw32("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f");
    assert!(matches!(
        PublicKey::from_bytes(&non_canonical),
        Err(KeyError::InvalidPublicKey { .. })
    ));
    // y = 2 is not on the curve.
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    assert!(matches!(
        PublicKey::from_bytes(&off_curve),
        Err(KeyError::InvalidPublicKey { .. })
    ));
    // Also through serde.
    let json = format!("\"{}\"", hex::encode(identity));
    assert!(serde_json::from_str::<PublicKey>(&json).is_err());
}

#[test]
fn secret_key_debug_does_not_leak() {
    let secret = rfc_secret();
    let debug = format!("{secret:?}");
    assert_eq!(debug, format!("SecretKey({RFC_KEY_ID})"));
    assert!(!debug.contains(&RFC_SECRET[..8]));
}

// ---------------------------------------------------------------- signatures

#[test]
fn sign_and_verify() {
    let [a, b] = keys();
    let signature = a.sign(b"hello robots");
    assert_eq!(
        signature,
        a.sign(b"hello robots"),
        "ed25519 is deterministic"
    );
    a.public_key().verify(b"hello robots", &signature).unwrap();

    let wrong_message = a.public_key().verify(b"hello robots!", &signature);
    assert!(
        matches!(wrong_message, Err(KeyError::BadSignature { key_id }) if key_id == a.key_id())
    );
    // b's key does not verify a's signature, even when the id is relabelled.
    let mut relabelled = signature.clone();
    assert!(b.public_key().verify(b"hello robots", &signature).is_err());
    relabelled.key_id = b.key_id();
    assert!(b.public_key().verify(b"hello robots", &relabelled).is_err());
    // a's valid signature labelled with another id is rejected by a too.
    assert!(a.public_key().verify(b"hello robots", &relabelled).is_err());
}

#[test]
fn signature_json_shape() {
    let signature = rfc_secret().sign(b"");
    let json = serde_json::to_string(&signature).unwrap();
    assert_eq!(
        json,
        format!("{{\"key_id\":\"{RFC_KEY_ID}\",\"sig\":\"{RFC_SIG_EMPTY_MSG}\"}}")
    );
    assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), signature);
    let extra = json.replace("{\"key_id\"", "{\"alg\":\"x\",\"key_id\"");
    assert!(serde_json::from_str::<Signature>(&extra).is_err());
    let short = json.replace(RFC_SIG_EMPTY_MSG, &RFC_SIG_EMPTY_MSG[2..]);
    assert!(serde_json::from_str::<Signature>(&short).is_err());
}

proptest! {
    #[test]
    fn tampered_message_or_signature_never_verifies(
        message in proptest::collection::vec(any::<u8>(), 0..512),
        flip_message in any::<bool>(),
        bit in any::<proptest::sample::Index>(),
    ) {
        let key = rfc_secret();
        let public = key.public_key();
        let signature = key.sign(&message);
        prop_assert!(public.verify(&message, &signature).is_ok());
        if flip_message && !message.is_empty() {
            let mut tampered = message.clone();
            let i = bit.index(tampered.len() * 8);
            tampered[i / 8] ^= 1 << (i % 8);
            prop_assert!(public.verify(&tampered, &signature).is_err());
        } else {
            let mut tampered = signature.clone();
            let i = bit.index(64 * 8);
            tampered.sig[i / 8] ^= 1 << (i % 8);
            prop_assert!(public.verify(&message, &tampered).is_err());
        }
    }

    #[test]
    fn signature_for_other_message_never_verifies(
        a in proptest::collection::vec(any::<u8>(), 0..64),
        b in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assume!(a != b);
        let key = rfc_secret();
        prop_assert!(key.public_key().verify(&b, &key.sign(&a)).is_err());
    }
}

// ---------------------------------------------------------------- trust roots

#[test]
fn trust_root_validation() {
    let [a, b] = keys();
    assert!(matches!(
        TrustRoot::new(1, 1, vec![]),
        Err(TrustRootError::NoKeys)
    ));
    assert!(matches!(
        TrustRoot::new(1, 0, vec![a.public_key()]),
        Err(TrustRootError::ThresholdZero)
    ));
    assert!(matches!(
        TrustRoot::new(1, 3, vec![a.public_key(), b.public_key()]),
        Err(TrustRootError::ThresholdAboveKeyCount {
            threshold: 3,
            keys: 2
        })
    ));
    let dup = TrustRoot::new(1, 1, vec![a.public_key(), b.public_key(), a.public_key()]);
    assert!(matches!(dup, Err(TrustRootError::DuplicateKey(id)) if id == a.key_id()));
    let ok = TrustRoot::new(7, 2, vec![a.public_key(), b.public_key()]).unwrap();
    assert_eq!(ok.key_ids(), vec![a.key_id(), b.key_id()]);
    let single = TrustRoot::single_key(a.public_key());
    assert_eq!((single.version, single.threshold), (0, 1));
    single.validate().unwrap();
}

#[test]
fn threshold_met_by_distinct_keys() {
    let [a, b, c] = keys();
    let root = root(1, 2, &[&a, &b, &c]);
    let msg = b"bundle manifest";
    let mut expected = vec![a.key_id(), c.key_id()];
    expected.sort();
    assert_eq!(
        root.verify_threshold(msg, &[c.sign(msg), a.sign(msg)])
            .unwrap(),
        expected
    );
    // Extra invalid and unknown signatures are ignored once the threshold is met.
    let [stranger] = keys();
    let sigs = [
        b.sign(b"other"),
        a.sign(msg),
        stranger.sign(msg),
        c.sign(msg),
    ];
    assert_eq!(root.verify_threshold(msg, &sigs).unwrap(), expected);
}

#[test]
fn same_key_twice_counts_once() {
    let [a, b] = keys();
    let root = root(1, 2, &[&a, &b]);
    let msg = b"m";
    let err = root
        .verify_threshold(msg, &[a.sign(msg), a.sign(msg)])
        .unwrap_err();
    assert_eq!(
        err,
        ThresholdError::BelowThreshold {
            valid: 1,
            required: 2,
            signers: vec![a.key_id()]
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "1 of the required 2 signatures from trusted keys (signed by: {})",
            a.key_id()
        )
    );
}

#[test]
fn threshold_error_no_signatures() {
    let [a] = keys();
    assert_eq!(
        root(1, 1, &[&a]).verify_threshold(b"m", &[]),
        Err(ThresholdError::NoSignatures)
    );
}

#[test]
fn threshold_error_bad_signature_takes_priority() {
    let [a, b] = keys();
    let [stranger] = keys();
    let root = root(1, 2, &[&a, &b]);
    let msg = b"m";
    // b signed something else, a is valid, plus an unknown signer.
    let err = root
        .verify_threshold(msg, &[a.sign(msg), b.sign(b"x"), stranger.sign(msg)])
        .unwrap_err();
    assert_eq!(
        err,
        ThresholdError::BadSignature {
            key_ids: vec![b.key_id()],
            valid: 1,
            required: 2
        }
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("signature by key {} does not verify", b.key_id())),
        "{text}"
    );
    // A valid duplicate from the same key is not reported as bad.
    let err = root
        .verify_threshold(msg, &[a.sign(msg), a.sign(b"x")])
        .unwrap_err();
    assert!(
        matches!(err, ThresholdError::BelowThreshold { valid: 1, .. }),
        "{err}"
    );
}

#[test]
fn threshold_error_unknown_keys() {
    let [a] = keys();
    let [s1, s2] = keys();
    let err = root(1, 1, &[&a])
        .verify_threshold(b"m", &[s2.sign(b"m"), s1.sign(b"m")])
        .unwrap_err();
    let mut unknown = vec![s1.key_id(), s2.key_id()];
    unknown.sort();
    assert_eq!(
        err,
        ThresholdError::UnknownKeys {
            key_ids: unknown,
            valid: 0,
            required: 1
        }
    );
    assert!(err
        .to_string()
        .starts_with("signed only by keys the trust root does not contain: "));
}

#[test]
fn threshold_error_below_threshold_with_unknown_extra() {
    // One valid trusted signature plus an unknown one: not "unknown keys", just too few.
    let [a, b] = keys();
    let [stranger] = keys();
    let err = root(1, 2, &[&a, &b])
        .verify_threshold(b"m", &[a.sign(b"m"), stranger.sign(b"m")])
        .unwrap_err();
    assert!(matches!(
        err,
        ThresholdError::BelowThreshold {
            valid: 1,
            required: 2,
            ..
        }
    ));
}

#[test]
fn unvalidated_zero_threshold_still_needs_a_signature() {
    let [a] = keys();
    let [stranger] = keys();
    let root = TrustRoot {
        version: 1,
        threshold: 0,
        keys: vec![a.public_key()],
        timestamp: None,
    };
    assert!(root.verify_threshold(b"m", &[stranger.sign(b"m")]).is_err());
    assert!(root.verify_threshold(b"m", &[a.sign(b"m")]).is_ok());
}

// ---------------------------------------------------------------- rotation

#[test]
fn rotation_accepted_when_signed_by_current_threshold() {
    let [a, b, c] = keys();
    let v1 = root(1, 2, &[&a, &b]);
    let v2 = signed_by(root(2, 2, &[&b, &c]), &[&a, &b]);
    assert_eq!(accept_rotation(&v1, &v2).unwrap(), v2.signed);
}

#[test]
fn rotation_rejected_when_version_not_increasing() {
    let [a, b] = keys();
    let v3 = root(3, 1, &[&a]);
    for version in [2, 3] {
        let candidate = signed_by(root(version, 1, &[&a, &b]), &[&a]);
        let err = accept_rotation(&v3, &candidate).unwrap_err();
        assert!(matches!(
            err,
            RotationError::VersionNotIncreasing { current: 3, candidate } if candidate == version
        ));
    }
    let err = accept_rotation(&v3, &signed_by(root(3, 1, &[&b]), &[&a])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "trust root version 3 is not newer than the installed version 3"
    );
}

#[test]
fn rotation_rejected_when_signed_by_only_one_of_two() {
    let [a, b, c] = keys();
    let v1 = root(1, 2, &[&a, &b]);
    let v2 = signed_by(root(2, 2, &[&b, &c]), &[&b]);
    let err = accept_rotation(&v1, &v2).unwrap_err();
    assert!(matches!(
        err,
        RotationError::NotSignedByCurrent(ThresholdError::BelowThreshold {
            valid: 1,
            required: 2,
            ..
        })
    ));
    assert!(err
        .to_string()
        .starts_with("new trust root is not signed by enough keys of the current trust root: "));
}

#[test]
fn rotation_rejected_when_signed_by_new_keys_only() {
    let [a, b, c, d] = keys();
    let v1 = root(1, 2, &[&a, &b]);
    let v2 = signed_by(root(2, 2, &[&c, &d]), &[&c, &d]);
    assert!(matches!(
        accept_rotation(&v1, &v2),
        Err(RotationError::NotSignedByCurrent(
            ThresholdError::UnknownKeys { .. }
        ))
    ));
}

#[test]
fn revoked_key_cannot_sign_next_root() {
    let [a, b, c] = keys();
    let v1 = root(1, 2, &[&a, &b]);
    let v2 = accept_rotation(&v1, &signed_by(root(2, 1, &[&b, &c]), &[&a, &b])).unwrap();
    // a was revoked in v2; it alone cannot install v3, even one that trusts it again.
    let v3 = signed_by(root(3, 1, &[&a]), &[&a]);
    assert!(matches!(
        accept_rotation(&v2, &v3),
        Err(RotationError::NotSignedByCurrent(
            ThresholdError::UnknownKeys { .. }
        ))
    ));
    // c (still trusted) can.
    let v3 = signed_by(root(3, 1, &[&a]), &[&c]);
    accept_rotation(&v2, &v3).unwrap();
}

#[test]
fn rotation_rejects_invalid_candidate() {
    let [a] = keys();
    let v1 = root(1, 1, &[&a]);
    let mut candidate = signed_by(root(2, 1, &[&a]), &[]);
    candidate.signed.threshold = 0;
    candidate.sign(&a);
    assert!(matches!(
        accept_rotation(&v1, &candidate),
        Err(RotationError::Invalid(TrustRootError::ThresholdZero))
    ));
}

// ---------------------------------------------------------------- trust root files

#[test]
fn signed_trust_root_json_round_trip_and_shape() {
    let [a, b] = keys();
    let mut signed = signed_by(root(4, 2, &[&a, &b]), &[&b, &a]);
    signed.sign(&a); // re-signing replaces, does not duplicate
    assert_eq!(signed.signatures.len(), 2);
    assert!(signed.signatures[0].key_id < signed.signatures[1].key_id);

    let json = signed.to_json_pretty();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["type"], TRUST_ROOT_TYPE);
    assert_eq!(value["signed"]["version"], 4);
    assert_eq!(value["signed"]["threshold"], 2);
    assert_eq!(
        value["signed"]["keys"][0],
        hex::encode(a.public_key().to_bytes())
    );
    assert_eq!(value["signatures"][0]["sig"].as_str().unwrap().len(), 128);

    let parsed = SignedTrustRoot::from_json(&json).unwrap();
    assert_eq!(parsed.signed, signed.signed);
    assert_eq!(parsed.signatures, signed.signatures);
    assert_eq!(parsed.to_json_pretty(), json);
    // signed_bytes is the compact JSON of the struct, in field order.
    let compact = String::from_utf8(signed.signed.signed_bytes()).unwrap();
    assert!(
        compact.starts_with("{\"version\":4,\"threshold\":2,\"keys\":[\""),
        "{compact}"
    );
    // Plain serde goes through the same checks.
    assert!(serde_json::from_str::<SignedTrustRoot>(&json).is_ok());
}

#[test]
fn tampered_trust_root_is_rejected() {
    let [a, b] = keys();
    let v1 = root(1, 2, &[&a, &b]);
    let signed = signed_by(root(2, 2, &[&a, &b]), &[&a, &b]);
    let json = signed.to_json_pretty();
    let tampered = json.replace("\"threshold\": 2", "\"threshold\": 1");
    assert_ne!(tampered, json);
    let tampered = SignedTrustRoot::from_json(&tampered).unwrap();
    assert_eq!(tampered.signed.threshold, 1);
    let err = accept_rotation(&v1, &tampered).unwrap_err();
    assert!(matches!(
        err,
        RotationError::NotSignedByCurrent(ThresholdError::BadSignature { ref key_ids, valid: 0, required: 2 })
            if key_ids.len() == 2
    ));
    accept_rotation(&v1, &SignedTrustRoot::from_json(&json).unwrap()).unwrap();
}

#[test]
fn trust_root_file_errors() {
    let [a] = keys();
    let json = signed_by(root(1, 1, &[&a]), &[&a]).to_json_pretty();
    let wrong = json.replace("ota-trust-root", "ota-bundle");
    let err = SignedTrustRoot::from_json(&wrong).unwrap_err();
    assert!(matches!(&err, TrustRootError::WrongType { found, .. } if found == "\"ota-bundle\""));
    let err = SignedTrustRoot::from_json("{\"signed\":{}}").unwrap_err();
    assert!(matches!(&err, TrustRootError::WrongType { found, .. } if found == "missing"));
    assert!(matches!(
        SignedTrustRoot::from_json("not json"),
        Err(TrustRootError::Parse { path: None, .. })
    ));
    let extra = json.replacen('{', "{\"extra\": 1,", 1);
    assert!(matches!(
        SignedTrustRoot::from_json(&extra),
        Err(TrustRootError::Parse { .. })
    ));
    let zero = json.replace("\"threshold\": 1", "\"threshold\": 0");
    assert!(matches!(
        SignedTrustRoot::from_json(&zero),
        Err(TrustRootError::ThresholdZero)
    ));
}

// ---------------------------------------------------------------- files

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn write_keypair_writes_loadable_files_with_modes() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release.2026");
    let (key_path, pub_path, secret) = write_keypair(&prefix).unwrap();
    assert_eq!(key_path, dir.path().join("release.2026.key"));
    assert_eq!(pub_path, dir.path().join("release.2026.pub"));
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&pub_path), 0o644);
    assert_eq!(
        load_secret_key(&key_path).unwrap().key_id(),
        secret.key_id()
    );
    assert_eq!(load_public_key(&pub_path).unwrap(), secret.public_key());
}

#[test]
fn write_keypair_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("k");
    let (key_path, pub_path, _) = write_keypair(&prefix).unwrap();
    let key_before = std::fs::read(&key_path).unwrap();
    let err = write_keypair(&prefix).unwrap_err();
    assert!(matches!(&err, KeyError::AlreadyExists { path } if *path == key_path));
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to overwrite existing key file {}",
            key_path.display()
        )
    );
    assert_eq!(std::fs::read(&key_path).unwrap(), key_before);

    // Only the .pub exists: still refused, and no .key is created.
    std::fs::remove_file(&key_path).unwrap();
    let err = write_keypair(&prefix).unwrap_err();
    assert!(matches!(&err, KeyError::AlreadyExists { path } if *path == pub_path));
    assert!(!key_path.exists());
}

#[test]
fn write_keypair_into_missing_dir_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_keypair(&dir.path().join("missing/k")).unwrap_err();
    assert!(matches!(err, KeyError::Io { .. }), "{err}");
}

#[test]
fn load_key_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ec.pub");
    std::fs::write(&path, P256_PUBLIC_PEM).unwrap();
    let err = load_public_key(&path).unwrap_err();
    assert!(matches!(&err, KeyError::NotEd25519 { path: Some(p), .. } if *p == path));
    assert!(err
        .to_string()
        .starts_with(&format!("{}: not an ed25519 key", path.display())));

    let missing = dir.path().join("nope.key");
    let err = load_secret_key(&missing).unwrap_err();
    assert!(matches!(&err, KeyError::Io { path, .. } if *path == missing));
    assert!(err.to_string().contains("nope.key"));

    let binary = dir.path().join("bin.key");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        load_secret_key(&binary),
        Err(KeyError::NotPem { path: Some(_), .. })
    ));
}

#[test]
fn load_trust_root_from_pub_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = keys();
    let pub_path = dir.path().join("a.pub");
    std::fs::write(&pub_path, a.public_key().to_pem()).unwrap();
    assert_eq!(
        load_trust_root(&pub_path).unwrap(),
        TrustRoot::single_key(a.public_key())
    );

    let json_path = dir.path().join("root.json");
    let signed = signed_by(root(5, 2, &[&a, &b]), &[&a]);
    std::fs::write(&json_path, signed.to_json_pretty().as_bytes()).unwrap();
    assert_eq!(load_trust_root(&json_path).unwrap(), signed.signed);

    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"type\":\"ota-bundle\"}").unwrap();
    assert!(matches!(
        load_trust_root(&other),
        Err(TrustRootError::WrongType { path: Some(p), .. }) if p == other
    ));
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, "hello").unwrap();
    let err = load_trust_root(&garbage).unwrap_err();
    assert!(matches!(&err, TrustRootError::Parse { path: Some(p), .. } if *p == garbage));
    let secret_path = dir.path().join("a.key");
    std::fs::write(&secret_path, a.to_pem().as_bytes()).unwrap();
    assert!(matches!(
        load_trust_root(&secret_path),
        Err(TrustRootError::Parse { .. })
    ));
    assert!(matches!(
        load_trust_root(&dir.path().join("missing.json")),
        Err(TrustRootError::Io { .. })
    ));
}
