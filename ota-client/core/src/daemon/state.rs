//! The daemon's persisted records (`daemon-state.json`): pure data, saved by the agent.

use serde::{Deserialize, Serialize};

/// The offer being worked on, persisted before anything is done for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveOffer {
    /// The rollout that offered it.
    pub rollout_id: u64,
    /// The server's bundle id.
    pub bundle_id: String,
    /// The release.
    pub version: semver::Version,
    /// The bundle's identity (the client's `bundle_hash`).
    pub manifest_digest: String,
    /// The trial was armed and the reboot requested.
    pub rebooting: bool,
    /// Written to the standby slot ahead of its install, and reported `staged`.
    #[serde(default)]
    pub staged: bool,
}

impl ActiveOffer {
    /// The offer as it is first worked on.
    pub fn from_offer(offer: &ota_protocol::device::UpdateOffer) -> ActiveOffer {
        ActiveOffer {
            rollout_id: offer.rollout_id,
            bundle_id: offer.bundle_id.clone(),
            version: offer.version.clone(),
            manifest_digest: offer.manifest_digest.clone(),
            rebooting: false,
            staged: false,
        }
    }

    /// Whether `other` is the same offer (the same bundle from the same rollout).
    pub fn same_offer(&self, other: &ActiveOffer) -> bool {
        self.rollout_id == other.rollout_id && self.manifest_digest == other.manifest_digest
    }
}

/// Everything the daemon persists between runs (and across reboots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// The id this robot enrolls as.
    pub device_id: String,
    /// Sent with every enrollment attempt until one succeeds, so a retry gets the same token.
    pub enroll_request_id: String,
    /// Makes report ids unique even if the client's event ids start again.
    pub instance: String,
    /// The offer being worked on.
    pub active: Option<ActiveOffer>,
    /// Client events that are not reports (a download interrupted by a shutdown or an
    /// outage, retried later), acknowledged without being sent.
    #[serde(default)]
    pub suppressed_events: Vec<u64>,
}

impl DaemonState {
    /// A fresh identity for `device_id`; `random` makes the request id and instance unique.
    pub fn new(device_id: &str, random: u64) -> DaemonState {
        DaemonState {
            device_id: device_id.to_string(),
            enroll_request_id: enroll_request_id(random),
            instance: format!("{:012x}", mix(random) & 0xffff_ffff_ffff),
            active: None,
            suppressed_events: Vec::new(),
        }
    }
}

/// An enrollment request id made from `random`.
pub fn enroll_request_id(random: u64) -> String {
    format!("enroll-{random:016x}{:016x}", mix(random))
}

/// splitmix64's finaliser: a second, independent-looking word from one random word.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
