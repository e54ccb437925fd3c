//! Trust chains: how a robot moves from the root it holds to the newest one, one version at a time.
//!
//! A link is accepted only when it is exactly one version newer and signed by a threshold of the previous root's
//! keys (the old keys hand over) AND a threshold of its own keys (the new keys exist and work, so a typo in a key
//! cannot strand a fleet). Every link verifies itself, so a chain can travel over any channel (a server, a
//! bundle, a USB stick) without being trusted. Pure: text and roots in, roots out.

use std::fmt;

use crate::{accept_rotation, RotationError, SignedTrustRoot, TrustRoot, TrustRootError};

/// Accepts `candidate` as the successor of `current`: a valid root whose version is exactly
/// `current.version + 1`, signed by a threshold of `current`'s keys and by a threshold of its own.
pub fn accept_next(
    current: &TrustRoot,
    candidate: &SignedTrustRoot,
) -> Result<TrustRoot, RotationError> {
    // Validity, "newer" and the old keys' threshold: the hand-over rule every rotation always had.
    let next = accept_rotation(current, candidate)?;
    if current.version.checked_add(1) != Some(next.version) {
        return Err(RotationError::NotNextVersion {
            current: current.version,
            candidate: next.version,
        });
    }
    next.verify_threshold(&next.signed_bytes(), &candidate.signatures)
        .map_err(RotationError::NotSignedByItself)?;
    Ok(next)
}

/// Why a walk stopped early, and the last root it reached (never older than the start), which a robot keeps.
#[derive(Debug)]
pub struct WalkError {
    /// The newest root accepted before the walk stopped.
    pub reached: TrustRoot,
    /// Why the next link was not accepted (boxed: the error is large, the walk's result is not).
    pub error: Box<RotationError>,
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; the trust root stays at version {}",
            self.error, self.reached.version
        )
    }
}

impl std::error::Error for WalkError {}

/// Walks `candidates` (any order) from `start`, one version at a time with [`accept_next`], and returns the
/// newest root reached.
///
/// Candidates at or below the current version are replays and ignored; identical copies of a link are one
/// link; a link whose every copy is refused stops the walk, as does a missing version with newer ones present
/// (a gap) or two different accepted roots for one version (a fork). The result never depends on the order of
/// `candidates` and is never older than `start`.
pub fn walk(start: &TrustRoot, candidates: &[SignedTrustRoot]) -> Result<TrustRoot, WalkError> {
    let mut sorted: Vec<&SignedTrustRoot> = candidates
        .iter()
        .filter(|c| c.signed.version > start.version)
        .collect();
    // The canonical JSON breaks ties, so which copy's error is reported does not depend on the input order.
    sorted.sort_by_cached_key(|c| (c.signed.version, c.to_json_pretty()));
    let mut current = start.clone();
    let mut rest = sorted.as_slice();
    while let Some(first) = rest.first() {
        let version = first.signed.version;
        let n = rest
            .iter()
            .take_while(|c| c.signed.version == version)
            .count();
        let (same, tail) = rest.split_at(n);
        rest = tail;
        let stop = |current: TrustRoot, error| WalkError {
            reached: current,
            error: Box::new(error),
        };
        let expected = current.version.saturating_add(1);
        if version != expected {
            return Err(stop(
                current,
                RotationError::Gap {
                    missing: expected,
                    next: version,
                },
            ));
        }
        let mut accepted: Option<TrustRoot> = None;
        let mut refused = None;
        for candidate in same {
            match accept_next(&current, candidate) {
                Ok(root) if accepted.as_ref().is_some_and(|a| *a != root) => {
                    return Err(stop(current, RotationError::Fork { version }));
                }
                Ok(root) => accepted = Some(root),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        match (accepted, refused) {
            (Some(root), _) => current = root,
            (None, Some(error)) => {
                return Err(stop(
                    current,
                    RotationError::Link {
                        version,
                        error: Box::new(error),
                    },
                ))
            }
            (None, None) => unreachable!("a group holds at least one candidate"),
        }
    }
    Ok(current)
}

/// The root a robot verifies with, from the root built into its image and the root it kept after a walk: the
/// kept one unless the image brings a newer version.
///
/// Safe without re-walking at every start because the kept root is written only by the robot, only after a walk
/// accepted it, on its own data partition; an image built with a newer root (a fresh factory image) wins, and
/// the next walk starts there.
pub fn effective(image: TrustRoot, kept: Option<TrustRoot>) -> TrustRoot {
    match kept {
        Some(kept) if kept.version >= image.version => kept,
        _ => image,
    }
}

/// Parses a chain file: one trust root file, or a JSON list of them.
pub fn parse_chain(text: &str) -> Result<Vec<SignedTrustRoot>, TrustRootError> {
    if !text.trim_start().starts_with('[') {
        return SignedTrustRoot::from_json(text).map(|root| vec![root]);
    }
    let values: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| TrustRootError::Parse {
            path: None,
            detail: format!("a trust chain must be a trust root or a JSON list of them: {e}"),
        })?;
    values
        .iter()
        .map(|v| SignedTrustRoot::from_json(&v.to_string()))
        .collect()
}

/// A chain as a JSON list (pretty, with a trailing newline), the form [`parse_chain`] reads.
pub fn chain_to_json(chain: &[SignedTrustRoot]) -> String {
    let mut text =
        serde_json::to_string_pretty(chain).expect("serializing trust roots to JSON cannot fail");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests;
