use proptest::prelude::*;

use super::*;
use crate::{SignedTrustRoot, TrustRoot};

fn keys<const N: usize>() -> [SecretKey; N] {
    std::array::from_fn(|_| SecretKey::generate())
}

/// A root of `release` keys (threshold 1) whose timestamp role is `online` with `threshold`.
fn root_with(release: &SecretKey, online: &[&SecretKey], threshold: u32) -> TrustRoot {
    let mut root = TrustRoot::new(1, 1, vec![release.public_key()]).unwrap();
    root.timestamp = Some(TimestampRole {
        threshold,
        keys: online.iter().map(|k| k.public_key()).collect(),
    });
    root.validate().unwrap();
    root
}

fn ts(version: u64) -> Timestamp {
    Timestamp {
        version,
        issued_at: version,
        expires: version + 3600,
        trust_version: 1,
    }
}

#[test]
fn a_timestamp_signed_by_the_role_verifies() {
    let [release, online] = keys();
    let root = root_with(&release, &[&online], 1);
    let doc = SignedTimestamp::sign(ts(100), &[&online]);
    assert_eq!(verify_timestamp(&root, &doc), Ok(ts(100)));
    // Through JSON, as it travels in a poll response.
    let value = serde_json::to_value(&doc).unwrap();
    assert_eq!(value["type"], "ota-timestamp");
    assert_eq!(
        verify_timestamp(&root, &parse_timestamp(&value).unwrap()),
        Ok(ts(100))
    );
}

#[test]
fn a_release_key_signature_is_not_a_timestamp_signature() {
    let [release, online] = keys();
    let root = root_with(&release, &[&online], 1);
    let doc = SignedTimestamp::sign(ts(100), &[&release]);
    assert!(matches!(
        verify_timestamp(&root, &doc),
        Err(TimestampError::NotSigned { version: 100, .. })
    ));
}

#[test]
fn a_root_without_the_role_verifies_nothing() {
    let [release, online] = keys();
    let root = TrustRoot::new(1, 1, vec![release.public_key()]).unwrap();
    let doc = SignedTimestamp::sign(ts(100), &[&online]);
    assert_eq!(verify_timestamp(&root, &doc), Err(TimestampError::NoRole));
}

#[test]
fn the_role_threshold_counts_distinct_keys() {
    let [release, a, b] = keys();
    let root = root_with(&release, &[&a, &b], 2);
    let one = SignedTimestamp::sign(ts(5), &[&a, &a]);
    assert!(verify_timestamp(&root, &one).is_err());
    let two = SignedTimestamp::sign(ts(5), &[&a, &b]);
    assert!(verify_timestamp(&root, &two).is_ok());
}

#[test]
fn expiry_before_issue_is_malformed() {
    let [release, online] = keys();
    let root = root_with(&release, &[&online], 1);
    let mut t = ts(100);
    t.expires = t.issued_at;
    let doc = SignedTimestamp::sign(t, &[&online]);
    assert!(matches!(
        verify_timestamp(&root, &doc),
        Err(TimestampError::Malformed { .. })
    ));
}

#[test]
fn another_type_is_refused() {
    let [release, online] = keys();
    let root = root_with(&release, &[&online], 1);
    let mut doc = SignedTimestamp::sign(ts(100), &[&online]);
    doc.kind = "ota-trust-root".into();
    assert!(matches!(
        verify_timestamp(&root, &doc),
        Err(TimestampError::Parse(_))
    ));
    let junk = serde_json::json!({"type": "ota-timestamp", "signed": {"version": 1}});
    assert!(matches!(
        parse_timestamp(&junk),
        Err(TimestampError::Parse(_))
    ));
}

#[test]
fn role_validation() {
    let [release, online] = keys();
    let mut root = TrustRoot::new(1, 1, vec![release.public_key()]).unwrap();
    for (role, bad) in [
        (TimestampRole::new(vec![]), "no keys"),
        (
            TimestampRole {
                threshold: 0,
                keys: vec![online.public_key()],
            },
            "threshold is 0",
        ),
        (
            TimestampRole {
                threshold: 2,
                keys: vec![online.public_key()],
            },
            "exceeds",
        ),
        (
            TimestampRole::new(vec![online.public_key(), online.public_key()]),
            "more than once",
        ),
        (
            TimestampRole::new(vec![online.public_key(), release.public_key()]),
            "release key",
        ),
    ] {
        root.timestamp = Some(role);
        let e = root.validate().unwrap_err().to_string();
        assert!(e.contains("timestamp"), "{e}");
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn roots_without_the_role_keep_their_bytes() {
    let [release] = keys();
    let root = TrustRoot::new(3, 1, vec![release.public_key()]).unwrap();
    let text = String::from_utf8(root.signed_bytes()).unwrap();
    assert_eq!(
        text,
        format!(
            "{{\"version\":3,\"threshold\":1,\"keys\":[\"{}\"]}}",
            hex::encode(release.public_key().to_bytes())
        )
    );
    assert!(!SignedTrustRoot::new(root)
        .to_json_pretty()
        .contains("timestamp"));
}

#[test]
fn a_root_with_the_role_round_trips_and_a_bad_role_is_refused_on_load() {
    let [release, online] = keys();
    let root = root_with(&release, &[&online], 1);
    let mut signed = SignedTrustRoot::new(root.clone());
    signed.sign(&release);
    let text = signed.to_json_pretty();
    assert!(text.contains("\"timestamp\""));
    assert_eq!(SignedTrustRoot::from_json(&text).unwrap().signed, root);
    let mut bad = root;
    bad.timestamp = Some(TimestampRole::new(vec![release.public_key()]));
    let text = SignedTrustRoot::new(bad).to_json_pretty();
    assert!(matches!(
        SignedTrustRoot::from_json(&text),
        Err(TrustRootError::TimestampKeyIsReleaseKey(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the fields, the role's signature verifies, and changing any field breaks it.
    #[test]
    fn signatures_cover_every_field(
        version in any::<u64>(),
        issued_at in 0..u64::MAX - 1,
        lifetime in 1..u64::MAX,
        trust_version in any::<u64>(),
        field in 0..4usize,
        delta in 1..u64::MAX,
    ) {
        let [release, online] = keys();
        let root = root_with(&release, &[&online], 1);
        let t = Timestamp {
            version,
            issued_at,
            expires: issued_at.saturating_add(lifetime).max(issued_at + 1),
            trust_version,
        };
        let mut doc = SignedTimestamp::sign(t, &[&online]);
        prop_assert_eq!(verify_timestamp(&root, &doc), Ok(t));
        let s = &mut doc.signed;
        let f = [&mut s.version, &mut s.issued_at, &mut s.expires, &mut s.trust_version];
        let target = f.into_iter().nth(field).unwrap();
        *target = target.wrapping_add(delta);
        prop_assert!(verify_timestamp(&root, &doc).is_err());
    }

    /// A signer issues one document per period: aligned, versions growing with time, valid for three periods
    /// and covering `now`.
    #[test]
    fn issued_timestamps(now in 0..u64::MAX / 4, later in 0..u64::MAX / 4, period in 1..1_000_000u64) {
        let t = issue(now, period, 7);
        prop_assert!(t.issued_at <= now && now < t.issued_at + period);
        prop_assert_eq!(t.issued_at % period, 0);
        prop_assert_eq!(t.version, t.issued_at);
        prop_assert_eq!(t.expires, t.issued_at + 3 * period);
        prop_assert!(t.expires > now);
        prop_assert_eq!(t.trust_version, 7);
        let u = issue(now + later, period, 7);
        prop_assert!(u.version >= t.version);
        prop_assert_eq!(u.version == t.version, u == t);
    }
}
