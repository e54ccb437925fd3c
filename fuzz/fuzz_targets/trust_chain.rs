//! The trust chain a robot walks from its root to the newest one (from the server or inside a bundle, so from
//! anyone): `parse_chain` of any text, then `walk` from the fixed test root, as given and with every link
//! re-signed by the test keys so the fuzzer gets past the signatures. The walk never goes backwards, does not
//! depend on the order of the links, and what parses writes back to the same chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_keys::chain::{chain_to_json, parse_chain, walk};
use ota_keys::{SignedTrustRoot, TrustRoot};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(chain) = parse_chain(text) else {
        return;
    };
    let json = chain_to_json(&chain);
    let again = parse_chain(&json).expect("a written chain parses");
    assert_eq!(chain_to_json(&again), json);

    let start = ota_fuzz::trust_root();
    check(&start, &chain);
    let resigned: Vec<SignedTrustRoot> = chain
        .iter()
        .cloned()
        .map(|mut link| {
            for key in ota_fuzz::test_keys() {
                link.sign(&key);
            }
            link
        })
        .collect();
    check(&start, &resigned);
});

fn check(start: &TrustRoot, chain: &[SignedTrustRoot]) {
    let reached = |r: Result<TrustRoot, ota_keys::chain::WalkError>| match r {
        Ok(root) => (true, root),
        Err(e) => (false, e.reached),
    };
    let (ok, root) = reached(walk(start, chain));
    assert!(root.version >= start.version, "the walk went backwards");
    let mut reversed = chain.to_vec();
    reversed.reverse();
    let (ok_rev, root_rev) = reached(walk(start, &reversed));
    assert_eq!(
        (ok, &root),
        (ok_rev, &root_rev),
        "the walk depends on the order of the links"
    );
}
