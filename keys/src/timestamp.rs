//! Signed timestamps: how a robot without a trusted clock learns that the metadata it is shown is fresh.
//!
//! The trust root may name a `timestamp` role ([`TimestampRole`]): online keys, kept on the server, that sign a
//! small document ([`Timestamp`]) every period. A robot verifies it against its own root
//! ([`verify_timestamp`]) and keeps what it learnt (the version only moves forward, `issued_at` raises its time
//! floor); the decisions about replay and staleness are the client core's (`ota_client_core::freshness`).
//! The role's keys are never release keys: an online key that could also sign bundles would turn a server
//! compromise into a fleet compromise. Pure: values in, values out.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{KeyId, PublicKey, SecretKey, Signature, ThresholdError, TrustRoot, TrustRootError};

/// Value of the `"type"` field of a timestamp document; also prefixed to the signed bytes, so a timestamp
/// signature can never be taken for a signature over anything else.
pub const TIMESTAMP_TYPE: &str = "ota-timestamp";

/// The trust root's `timestamp` role: the online keys that sign timestamps and how many must sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampRole {
    /// How many distinct keys of `keys` must sign a timestamp.
    pub threshold: u32,
    /// The timestamp keys (e.g. one per server replica, threshold 1).
    pub keys: Vec<PublicKey>,
}

impl TimestampRole {
    /// Threshold 1 over `keys`.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { threshold: 1, keys }
    }

    /// The role's keys as a root of their own: [`TrustRoot::validate`] and
    /// [`TrustRoot::verify_threshold`] are the one implementation of "threshold of distinct keys".
    fn as_root(&self) -> TrustRoot {
        TrustRoot {
            version: 0,
            threshold: self.threshold,
            keys: self.keys.clone(),
            timestamp: None,
        }
    }

    /// Valid as a key set (see [`TrustRoot::validate`]) and sharing no key with the release keys `release`.
    pub fn validate(&self, release: &[KeyId]) -> Result<(), TrustRootError> {
        self.as_root()
            .validate()
            .map_err(|e| TrustRootError::TimestampRole(Box::new(e)))?;
        let release: BTreeSet<&KeyId> = release.iter().collect();
        match self
            .keys
            .iter()
            .map(PublicKey::key_id)
            .find(|id| release.contains(id))
        {
            Some(id) => Err(TrustRootError::TimestampKeyIsReleaseKey(id)),
            None => Ok(()),
        }
    }
}

/// What a timestamp says: "the server's timestamp key was alive at `issued_at`; do not believe this after
/// `expires`". Times are Unix seconds by the signer's clock (the robot's clock is never used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    /// Monotonic: a robot never accepts a lower one than it has seen.
    pub version: u64,
    /// When it was signed.
    pub issued_at: u64,
    /// After this it is stale; always later than `issued_at`.
    pub expires: u64,
    /// The version of the newest trust root the signer knows (a robot below it has a chain to walk).
    pub trust_version: u64,
}

impl Timestamp {
    /// The bytes signatures cover: `ota-timestamp`, a NUL, and the compact JSON of this struct (field order
    /// fixed by the struct).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = TIMESTAMP_TYPE.as_bytes().to_vec();
        bytes.push(0);
        serde_json::to_writer(&mut bytes, self).expect("serializing a Timestamp cannot fail");
        bytes
    }
}

/// The timestamp document:
/// `{"type":"ota-timestamp","signed":{"version":..,"issued_at":..,"expires":..,"trust_version":..},"signatures":[..]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedTimestamp {
    /// Always [`TIMESTAMP_TYPE`] (checked by [`verify_timestamp`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// The timestamp; signatures cover [`Timestamp::signed_bytes`].
    pub signed: Timestamp,
    /// Signatures, sorted by key id.
    pub signatures: Vec<Signature>,
}

impl SignedTimestamp {
    /// `timestamp` signed by each of `keys`.
    pub fn sign(timestamp: Timestamp, keys: &[&SecretKey]) -> Self {
        let bytes = timestamp.signed_bytes();
        let mut signatures: Vec<Signature> = keys.iter().map(|k| k.sign(&bytes)).collect();
        signatures.sort_by_key(|s| s.key_id);
        signatures.dedup_by_key(|s| s.key_id);
        Self {
            kind: TIMESTAMP_TYPE.to_owned(),
            signed: timestamp,
            signatures,
        }
    }
}

/// Why a timestamp was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The robot's trust root names no timestamp role, so there is nothing to verify against.
    #[error("the trust root names no timestamp key (no `timestamp` role)")]
    NoRole,
    /// Not a timestamp document.
    #[error("not a timestamp: {0}")]
    Parse(String),
    /// Expires at or before it was issued: no signer of ours makes that.
    #[error("timestamp version {version} expires ({expires}) before it was issued ({issued_at})")]
    Malformed {
        /// Its version.
        version: u64,
        /// Its `issued_at`.
        issued_at: u64,
        /// Its `expires`.
        expires: u64,
    },
    /// Not signed by enough of the role's keys.
    #[error(
        "timestamp version {version} is not signed by the trust root's timestamp key: {error}; \
         put the server's timestamp public key (`ota-server timestamp-key`) in the root's timestamp role"
    )]
    NotSigned {
        /// Its version.
        version: u64,
        /// What the signatures lacked.
        error: ThresholdError,
    },
}

/// Parses a timestamp document from its JSON value (as carried in a poll response).
pub fn parse_timestamp(value: &serde_json::Value) -> Result<SignedTimestamp, TimestampError> {
    SignedTimestamp::deserialize(value).map_err(|e| TimestampError::Parse(e.to_string()))
}

/// Accepts `doc` when `root` has a timestamp role, the document is well formed and a threshold of the role's
/// keys signed it; returns what it says. Says nothing about freshness: that needs the robot's memory.
pub fn verify_timestamp(
    root: &TrustRoot,
    doc: &SignedTimestamp,
) -> Result<Timestamp, TimestampError> {
    let role = root.timestamp.as_ref().ok_or(TimestampError::NoRole)?;
    if doc.kind != TIMESTAMP_TYPE {
        return Err(TimestampError::Parse(format!(
            "\"type\" is {:?}, expected \"{TIMESTAMP_TYPE}\"",
            doc.kind
        )));
    }
    let ts = doc.signed;
    if ts.expires <= ts.issued_at {
        return Err(TimestampError::Malformed {
            version: ts.version,
            issued_at: ts.issued_at,
            expires: ts.expires,
        });
    }
    role.as_root()
        .verify_threshold(&ts.signed_bytes(), &doc.signatures)
        .map_err(|error| TimestampError::NotSigned {
            version: ts.version,
            error,
        })?;
    Ok(ts)
}

/// The timestamp a signer issues at `now` for `period` seconds: aligned to a multiple of the period, so
/// replicas sharing a key (and roughly a clock) sign the very same document; version = `issued_at`, so
/// versions grow with time; valid for three periods, so a robot polling a replica a period behind still sees
/// it valid. A zero period counts as one second.
pub fn issue(now: u64, period: u64, trust_version: u64) -> Timestamp {
    let period = period.max(1);
    let issued_at = now - now % period;
    Timestamp {
        version: issued_at,
        issued_at,
        expires: issued_at.saturating_add(period.saturating_mul(3)),
        trust_version,
    }
}

#[cfg(test)]
mod tests;
