//! The trust chain a bundle may carry: signed trust roots beside the signatures in `signatures.json`, so a robot
//! updated from a file or a USB stick moves to the root that signed the bundle before it checks the signatures.
//!
//! The roots are outside the signed manifest on purpose: each one authenticates itself (a walk accepts it only when
//! a threshold of the previous root's keys and of its own signed it, [`ota_keys::chain`]), so nothing is gained by
//! signing them again, and a co-signer or an operator can add or replace the chain without touching the manifest
//! (the bundle id does not change). This module holds the member's rules (bounded, one root per version, oldest
//! first) and the one decision every verifier makes with it ([`resolve`]): pure, roots in, a root out.

use ota_keys::chain;
use ota_keys::{SignedTrustRoot, TrustRoot};

use crate::error::BundleError;

/// Most roots a bundle may carry. Fleets rotate a handful of times over years; a robot further behind than this
/// catches up from the server or a chain file (`ota-client trust update`) first.
pub const MAX_CHAIN_ROOTS: usize = 32;

/// The member's form: at most [`MAX_CHAIN_ROOTS`] roots, versions strictly increasing (oldest first, one root per
/// version). Each root's own validity (keys, threshold) was checked when it was parsed; its signatures are the
/// walk's business.
pub fn check_chain(chain: &[SignedTrustRoot]) -> Result<(), BundleError> {
    if chain.len() > MAX_CHAIN_ROOTS {
        return Err(BundleError::BadSignatureBlock(format!(
            "the trust chain holds {} roots, over the limit of {MAX_CHAIN_ROOTS}",
            chain.len()
        )));
    }
    if let Some(pair) = chain
        .windows(2)
        .find(|w| w[0].signed.version >= w[1].signed.version)
    {
        return Err(BundleError::BadSignatureBlock(format!(
            "the trust chain must list one root per version, oldest first (version {} is followed by {})",
            pair[0].signed.version, pair[1].signed.version
        )));
    }
    Ok(())
}

/// The chain in the member's form: sorted by version, identical copies merged. Two different roots for one
/// version stay, so [`check_chain`] refuses them.
pub fn normalize_chain(mut chain: Vec<SignedTrustRoot>) -> Vec<SignedTrustRoot> {
    chain.sort_by_cached_key(|r| (r.signed.version, r.to_json_pretty()));
    chain.dedup_by(|a, b| a.to_json_pretty() == b.to_json_pretty());
    chain
}

/// Which root a bundle's signatures are checked against, and whether the carried chain moved it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The root to verify the signatures with: the newest root the walk reached (the start when the chain holds
    /// nothing newer).
    pub root: TrustRoot,
    /// The version the walk started from.
    pub from: u64,
    /// The carried root that is now the newest, when the chain moved the root forward: what a robot keeps.
    pub adopted: Option<SignedTrustRoot>,
}

/// Walks the carried `chain` from `start` (a robot's kept root, or `verify --trust`) with the same walk as every
/// other channel ([`chain::walk`]), all or nothing: a link that does not verify refuses the bundle and moves
/// nothing (unlike a chain from the server, which keeps the last good link: a bundle with a broken chain is a
/// broken bundle). Roots at or below `start` are ignored, so a chain older than the robot's root is never a
/// downgrade and the signatures are then checked against `start`.
pub fn resolve(start: &TrustRoot, chain: &[SignedTrustRoot]) -> Result<Resolved, BundleError> {
    let reached = chain::walk(start, chain).map_err(|e| BundleError::TrustChain {
        error: e.error,
        kept: start.version,
    })?;
    let adopted = (reached != *start)
        .then(|| chain.iter().find(|r| r.signed == reached).cloned())
        .flatten();
    Ok(Resolved {
        root: reached,
        from: start.version,
        adopted,
    })
}

#[cfg(test)]
mod tests;
