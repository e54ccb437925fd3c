//! What a server is configured with: runtime settings and the secrets callers are checked against.

use std::path::PathBuf;
use std::time::Duration;

use ota_keys::TrustRoot;

use crate::bundle_store::BundleStoreRef;

/// Runtime settings of a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory (database, blobs, tmp).
    pub data_dir: PathBuf,
    /// Trust root uploads are checked against.
    pub trust: TrustRoot,
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// If non-empty, only bundles with one of these `compatible` strings are accepted.
    pub allowed_compatible: Vec<String>,
    /// Suggested poll interval.
    pub poll_interval_secs: u32,
    /// Suggested poll jitter.
    pub poll_jitter_secs: u32,
    /// Polls faster than this get 429 (zero: no limit).
    pub min_poll_interval: Duration,
    /// Concurrent device requests above this get 503.
    pub max_inflight_device_requests: usize,
    /// Largest JSON body.
    pub max_json_bytes: usize,
    /// Telemetry history older than this is deleted.
    pub history_retention_secs: u64,
    /// How often the health guards are evaluated.
    pub guard_interval: Duration,
    /// SHA-256 of the read-only scrape token (`--metrics-token`): it reads `GET /metrics` and nothing else.
    pub metrics_token_hash: Option<[u8; 32]>,
    /// The database's URL (`--database`; `None`: the SQLite file in `data_dir`), see [`crate::store::open`].
    pub database: Option<String>,
    /// Where bundles live (default: `data_dir/blobs`; `--bundle-store`).
    pub bundle_store: BundleStoreRef,
    /// Answer downloads with a 307 to a presigned store URL valid this long, when the store can presign
    /// (`--presign-downloads`); `None`: stream them through the server.
    pub presign_downloads: Option<Duration>,
    /// How robots unknown to the server are admitted (`--admission`).
    pub admission: crate::admission::AdmissionMode,
    /// Lifetime of a device token issued to a robot that proved its key (`--device-token-ttl-secs`).
    pub device_token_ttl_secs: u64,
    /// Connection cap and timeouts ([`crate::listener`]).
    pub connections: crate::listener::ConnectionLimits,
    /// Alert thresholds, the maintenance score's rule, the webhook, report retention ([`crate::alerts`]).
    pub alerts: crate::alerts::AlertSettings,
    /// Console sessions and trusted proxies ([`crate::accounts`]).
    pub accounts: crate::accounts::AccountSettings,
}

impl Config {
    /// Where blobs live.
    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    /// Where uploads are staged.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }
}

/// Secrets the server checks callers against.
#[derive(Clone)]
pub struct Secrets {
    /// SHA-256 of each admin token.
    pub admin_token_hashes: Vec<[u8; 32]>,
    /// The fleet enrollment secret.
    pub enrollment_secret: String,
    /// HMAC key device tokens are derived with.
    pub token_key: Vec<u8>,
}
