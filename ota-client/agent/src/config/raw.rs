//! The configuration file's schema as serde reads it: unknown keys are refused, every value is
//! checked when [`parse`](super::parse) turns it into the typed configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) compatible: String,
    pub(super) trust_root: PathBuf,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) slots: BTreeMap<String, RawClass>,
    pub(super) bootloader: RawBootloader,
    #[serde(default)]
    pub(super) booted_slot: Option<RawBooted>,
    #[serde(default)]
    pub(super) health_check: Vec<RawHealth>,
    pub(super) reboot_command: Option<Vec<String>>,
    #[serde(default)]
    pub(super) http: Option<RawHttp>,
    #[serde(default)]
    pub(super) server: Option<RawServer>,
    #[serde(default)]
    pub(super) readiness: Option<RawReadiness>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    pub(super) command: RawCommand,
    pub(super) timeout_secs: Option<u64>,
    pub(super) phases: Option<Vec<ota_protocol::fleet::WaitPhase>>,
}

/// A command as a program path (run without a shell) or an argv list.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawCommand {
    Program(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) url: String,
    pub(super) device_id: Option<String>,
    pub(super) enrollment_secret: Option<String>,
    pub(super) enrollment_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) tags: BTreeMap<String, String>,
    pub(super) telemetry_command: Option<Vec<String>>,
    pub(super) backoff_initial_ms: Option<u64>,
    pub(super) backoff_max_secs: Option<u64>,
    pub(super) max_metadata_age_secs: Option<u64>,
    pub(super) build_time: Option<u64>,
    pub(super) identity_key: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClass {
    pub(super) a: PathBuf,
    pub(super) b: PathBuf,
    pub(super) size: Option<u64>,
    pub(super) active_link: Option<PathBuf>,
    pub(super) service_restart: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBootloader {
    pub(super) backend: String,
    pub(super) grubenv: Option<PathBuf>,
    pub(super) fw_env_config: Option<PathBuf>,
    pub(super) default_env: Option<PathBuf>,
    pub(super) state_file: Option<PathBuf>,
    pub(super) tries: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBooted {
    pub(super) source: Option<String>,
    pub(super) path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) name: String,
    pub(super) command: Vec<String>,
    pub(super) timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) connect_timeout_secs: Option<u64>,
    pub(super) read_timeout_secs: Option<u64>,
    pub(super) retries: Option<u32>,
    pub(super) retry_delay_ms: Option<u64>,
    pub(super) low_speed_limit: Option<u64>,
    pub(super) low_speed_time_secs: Option<u64>,
}
