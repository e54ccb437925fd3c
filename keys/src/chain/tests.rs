use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::{SecretKey, ThresholdError};

/// Eight keys: even versions use 0..4, odd ones 4..8, so consecutive roots share no key.
fn pool() -> &'static [SecretKey] {
    static KEYS: OnceLock<Vec<SecretKey>> = OnceLock::new();
    KEYS.get_or_init(|| (0..8).map(|_| SecretKey::generate()).collect())
}

/// The keys of a root: `picks` (indices 0..4) in the half its version owns.
fn keys_of(version: u64, picks: &[usize]) -> Vec<&'static SecretKey> {
    let half = if version % 2 == 0 { 0 } else { 4 };
    picks.iter().map(|i| &pool()[half + i]).collect()
}

fn root(version: u64, threshold: u32, picks: &[usize]) -> TrustRoot {
    let keys = keys_of(version, picks)
        .iter()
        .map(|k| k.public_key())
        .collect();
    TrustRoot::new(version, threshold, keys).unwrap()
}

fn sign(root: &TrustRoot, signers: &[&SecretKey]) -> SignedTrustRoot {
    let mut signed = SignedTrustRoot::new(root.clone());
    for key in signers {
        signed.sign(key);
    }
    signed
}

/// The signers a threshold needs: the root's first `threshold` keys.
fn enough(version: u64, r: &TrustRoot, picks: &[usize]) -> Vec<&'static SecretKey> {
    keys_of(version, picks)
        .into_iter()
        .take(r.threshold as usize)
        .collect()
}

/// A start root (version `first`) and the valid links after it.
struct Chain {
    start: TrustRoot,
    roots: Vec<TrustRoot>,
    links: Vec<SignedTrustRoot>,
    /// Each root's signer picks, start first.
    picks: Vec<Vec<usize>>,
}

fn build(first: u64, shapes: &[(Vec<usize>, u32)]) -> Chain {
    let (p0, t0) = &shapes[0];
    let start = root(first, (*t0).min(p0.len() as u32), p0);
    let mut roots = vec![start.clone()];
    let mut links = Vec::new();
    let mut picks = vec![p0.clone()];
    for (i, (p, t)) in shapes.iter().enumerate().skip(1) {
        let version = first + i as u64;
        let prev = roots.last().unwrap();
        let r = root(version, (*t).min(p.len() as u32), p);
        let mut signers = enough(prev.version, prev, &picks[i - 1]);
        signers.extend(enough(version, &r, p));
        links.push(sign(&r, &signers));
        roots.push(r);
        picks.push(p.clone());
    }
    Chain {
        start,
        roots,
        links,
        picks,
    }
}

fn shapes() -> impl Strategy<Value = Vec<(Vec<usize>, u32)>> {
    prop::collection::vec(
        (
            prop::sample::subsequence(vec![0usize, 1, 2, 3], 1..=3),
            1u32..=3,
        ),
        2..=6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any order, with duplicates and replays of older roots, reaches the newest root.
    #[test]
    fn any_permutation_reaches_the_newest(
        first in 0u64..5,
        shapes in shapes(),
        seed in any::<u64>(),
        dupes in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    ) {
        let chain = build(first, &shapes);
        let mut candidates = chain.links.clone();
        for d in &dupes {
            candidates.push(d.get(&chain.links).clone());
        }
        // A replay of the start itself (signed by its keys) is ignored.
        candidates.push(sign(&chain.start, &enough(first, &chain.start, &chain.picks[0])));
        let mut rng = seed;
        for i in (1..candidates.len()).rev() {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            candidates.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let got = walk(&chain.start, &candidates).unwrap();
        prop_assert_eq!(&got, chain.roots.last().unwrap());
        // From any root on the way, the same end.
        for r in &chain.roots {
            prop_assert_eq!(&walk(r, &candidates).unwrap(), chain.roots.last().unwrap());
        }
    }

    /// A removed link stops the walk at the root before it (a gap when later links exist).
    #[test]
    fn a_removed_link_stops_before_it(first in 0u64..5, shapes in shapes(), k in any::<prop::sample::Index>()) {
        let chain = build(first, &shapes);
        let k = k.index(chain.links.len());
        let mut candidates = chain.links.clone();
        candidates.remove(k);
        let before = &chain.roots[k];
        match walk(&chain.start, &candidates) {
            Ok(r) => {
                prop_assert_eq!(k, chain.links.len() - 1, "only the last link may go unnoticed");
                prop_assert_eq!(&r, before);
            }
            Err(e) => {
                prop_assert_eq!(&e.reached, before);
                let gap = matches!(*e.error, RotationError::Gap { missing, .. } if missing == before.version + 1);
                prop_assert!(gap, "{e}");
            }
        }
    }

    /// A link signed only by the old keys, or only by its own, is refused and the walk stays before it.
    #[test]
    fn a_half_signed_link_is_refused(
        first in 0u64..5,
        shapes in shapes(),
        k in any::<prop::sample::Index>(),
        only_old in any::<bool>(),
    ) {
        let chain = build(first, &shapes);
        let k = k.index(chain.links.len());
        let (prev, next) = (&chain.roots[k], &chain.roots[k + 1]);
        let signers = if only_old {
            enough(prev.version, prev, &chain.picks[k])
        } else {
            enough(next.version, next, &chain.picks[k + 1])
        };
        let mut candidates = chain.links.clone();
        candidates[k] = sign(next, &signers);
        let e = walk(&chain.start, &candidates).unwrap_err();
        prop_assert_eq!(&e.reached, prev);
        let RotationError::Link { version, error } = &*e.error else {
            return Err(TestCaseError::fail(format!("not a refused link: {e}")));
        };
        prop_assert_eq!(*version, next.version);
        if only_old {
            prop_assert!(matches!(**error, RotationError::NotSignedByItself(_)), "{error}");
        } else {
            prop_assert!(matches!(**error, RotationError::NotSignedByCurrent(_)), "{error}");
        }
    }

    /// Whatever subset of links arrives, the walk never goes below its start.
    #[test]
    fn never_goes_backwards(
        first in 0u64..5,
        shapes in shapes(),
        keep in prop::collection::vec(any::<bool>(), 6),
        from in any::<prop::sample::Index>(),
    ) {
        let chain = build(first, &shapes);
        let start = from.get(&chain.roots);
        let candidates: Vec<_> = chain
            .links
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| l.clone())
            .collect();
        let reached = match walk(start, &candidates) {
            Ok(r) => r,
            Err(e) => e.reached,
        };
        prop_assert!(reached.version >= start.version);
        prop_assert!(chain.roots.contains(&reached));
    }

    /// The kept root wins unless the image's is newer.
    #[test]
    fn effective_is_the_newer_with_the_kept_on_ties(iv in 0u64..4, kv in prop::option::of(0u64..4)) {
        let image = root(iv, 1, &[0]);
        let kept = kv.map(|v| root(v, 1, &[1]));
        let got = effective(image.clone(), kept.clone());
        match kept {
            Some(k) if k.version >= image.version => prop_assert_eq!(got, k),
            _ => prop_assert_eq!(got, image),
        }
    }
}

#[test]
fn a_skipped_version_is_refused_alone_and_a_gap_in_a_chain() {
    let chain = build(1, &[(vec![0], 1), (vec![0], 1), (vec![0], 1)]);
    // v3 signed by v1's keys and its own, offered to a v1 robot without v2.
    let v3 = &chain.roots[2];
    let skip = sign(v3, &[keys_of(1, &[0])[0], keys_of(3, &[0])[0]]);
    let err = accept_next(&chain.start, &skip).unwrap_err();
    assert!(matches!(
        err,
        RotationError::NotNextVersion {
            current: 1,
            candidate: 3
        }
    ));
    let e = walk(&chain.start, &[chain.links[1].clone()]).unwrap_err();
    assert_eq!(e.reached, chain.start);
    assert_eq!(
        e.to_string(),
        "the trust chain has no version 2 but continues at version 3: a chain with a gap cannot be \
         walked; publish the missing root; the trust root stays at version 1"
    );
}

#[test]
fn two_valid_roots_for_one_version_are_a_fork() {
    let chain = build(1, &[(vec![0], 1), (vec![0, 1], 1)]);
    let other = root(2, 1, &[2]);
    let fork = sign(&other, &[keys_of(1, &[0])[0], keys_of(2, &[2])[0]]);
    let e = walk(&chain.start, &[fork.clone(), chain.links[0].clone()]).unwrap_err();
    assert!(
        matches!(*e.error, RotationError::Fork { version: 2 }),
        "{e}"
    );
    assert_eq!(e.reached, chain.start);
    // A garbage copy beside the real link does not block it.
    let garbage = sign(&other, &[]);
    let got = walk(&chain.start, &[garbage, chain.links[0].clone()]).unwrap();
    assert_eq!(got, chain.roots[1]);
}

#[test]
fn the_self_signature_error_says_how_to_fix_it() {
    let chain = build(1, &[(vec![0], 1), (vec![0], 1)]);
    let only_old = sign(&chain.roots[1], &[keys_of(1, &[0])[0]]);
    let err = accept_next(&chain.start, &only_old).unwrap_err();
    assert!(matches!(
        err,
        RotationError::NotSignedByItself(ThresholdError::UnknownKeys { .. })
    ));
    assert!(err.to_string().contains("ota-bundle trust sign"), "{err}");
}

#[test]
fn chain_files_one_root_or_a_list() {
    let chain = build(1, &[(vec![0], 1), (vec![0], 1), (vec![1], 1)]);
    let list = chain_to_json(&chain.links);
    let parsed = parse_chain(&list).unwrap();
    assert_eq!(
        parsed.iter().map(|r| &r.signed).collect::<Vec<_>>(),
        chain.roots[1..].iter().collect::<Vec<_>>()
    );
    let one = parse_chain(&chain.links[0].to_json_pretty()).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(parse_chain("[]").unwrap().len(), 0);
    let err = parse_chain("[{\"type\":\"nope\"}]").unwrap_err();
    assert!(err.to_string().contains("not a trust root"), "{err}");
    assert!(parse_chain("[1,").is_err());
}
