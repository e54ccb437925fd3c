//! The client's configuration (`/etc/ota/client.toml`), parsed once into typed values.
//! Every error names the file and the key (or line) so an operator can fix it on the robot.
//! A commented example lives in `ota-client/examples/client.toml`.//!
//! [`raw`] is the file's schema as serde reads it; [`parse`](mod@parse) turns it into these types,
//! checking every value once.

mod parse;
mod raw;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ota/client.toml";
/// Default state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ota";
/// Default number of trial boots.
pub const DEFAULT_TRIES: u8 = 3;
/// Default `[server] max_metadata_age_secs`: a week of the robot's uptime without a new signed timestamp.
pub const DEFAULT_MAX_METADATA_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// TOML syntax or schema error.
    #[error("config {}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is invalid.
    #[error("config {}: key `{key}`: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it was read from (for messages).
    pub source: PathBuf,
    /// This robot's product string; bundles must match it exactly.
    pub compatible: String,
    /// The installed trust root (JSON trust root or a single `.pub`).
    pub trust_root: PathBuf,
    /// The client's state directory.
    pub data_dir: PathBuf,
    /// Slot classes by name.
    pub slots: BTreeMap<String, ClassConfig>,
    /// The boot environment.
    pub bootloader: BootloaderConfig,
    /// How the booted slot is known.
    pub booted_slot: BootedSlotConfig,
    /// Health checks run on a trial boot and after a live switch.
    pub health_checks: Vec<HealthCheck>,
    /// Command that reboots the robot.
    pub reboot_command: Vec<String>,
    /// HTTP download settings.
    pub http: HttpConfig,
    /// The fleet server `ota-client daemon` polls (`[server]`); `None` without one.
    pub server: Option<ServerConfig>,
    /// The robot's own say before an update (`[readiness]`); `None`: always ready.
    pub readiness: Option<ReadinessConfig>,
}

/// `[readiness]`: a command the robot stack answers before the daemon downloads, installs or
/// reboots, so an update never starts in the middle of a mission or at 3 % battery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessConfig {
    /// argv; run with the phase (`download`, `install`, `reboot`) as one more argument and the
    /// offer in `OTA_*` environment variables. Exit 0: go; else the first line it prints is why not.
    pub command: Vec<String>,
    /// Killed (and counted as "not ready") after this long.
    pub timeout: Duration,
    /// The phases it gates.
    pub phases: Vec<ota_protocol::fleet::WaitPhase>,
}

/// The readiness check's default timeout.
pub const DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(10);

/// `[server]`: what `ota-client daemon` needs to enroll, poll and report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Base URL, e.g. `https://ota.example.com:8443` (its CA: `[http] ca_file`).
    pub url: String,
    /// This robot's id; `None`: /etc/machine-id, else the hostname.
    pub device_id: Option<String>,
    /// Where the fleet enrollment secret comes from.
    pub enrollment_secret: SecretSource,
    /// Tags rollouts select on (`site = "warehouse-3"`).
    pub tags: BTreeMap<String, String>,
    /// Prints a JSON object merged into each poll's telemetry (battery, position, metrics).
    pub telemetry_command: Option<Vec<String>>,
    /// First retry delay after a failed request (doubled each time, full jitter).
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Uptime without a new signed timestamp after which the robot raises its freeze alarm (only with a
    /// trust root that names a timestamp key; docs/time-model.md).
    pub max_metadata_age: Duration,
    /// The image's build time (Unix seconds), the robot's time floor to start from; `None`: the modification
    /// time of the image's trust root file.
    pub build_time: Option<u64>,
    /// A factory-provisioned identity key (PKCS#8 PEM); `None`: generated in the data directory on first start
    /// (`crate::identity`).
    pub identity_key: Option<PathBuf>,
}

/// A secret given inline or in a file.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `enrollment_secret = "..."`.
    Inline(String),
    /// `enrollment_secret_file = "/etc/ota/enrollment-secret"`.
    File(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl SecretSource {
    /// The secret (a file's content without surrounding whitespace).
    pub fn read(&self) -> Result<String, ConfigError> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|error| ConfigError::Read {
                    path: path.clone(),
                    error,
                }),
        }
    }
}

/// One slot class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// Slot A's device or file.
    pub a: PathBuf,
    /// Slot B's device or file.
    pub b: PathBuf,
    /// Capacity override (otherwise the device's or file's size).
    pub size: Option<u64>,
    /// For live classes: the symlink pointing at the active slot.
    pub active_link: Option<PathBuf>,
    /// For live classes: command run after switching the symlink.
    pub service_restart: Vec<String>,
}

impl ClassConfig {
    /// The device or file of `slot`.
    pub fn path(&self, slot: ota_client_core::Slot) -> &Path {
        match slot {
            ota_client_core::Slot::A => &self.a,
            ota_client_core::Slot::B => &self.b,
        }
    }

    /// Live classes are switched by their symlink, without reboot.
    pub fn is_live(&self) -> bool {
        self.active_link.is_some()
    }
}

/// The bootloader backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootloaderKind {
    /// A GRUB environment block file.
    Grub {
        /// The grubenv file.
        grubenv: PathBuf,
    },
    /// A U-Boot environment described by `fw_env.config`.
    UBoot {
        /// The `fw_env.config` file.
        fw_env_config: PathBuf,
        /// The board's default environment (`u-boot-initial-env`), needed for the first
        /// write of a never-written environment.
        default_env: Option<PathBuf>,
    },
    /// The `file` backend (custom bootloaders, tests).
    File {
        /// The state file.
        state_file: PathBuf,
    },
}

/// `[bootloader]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootloaderConfig {
    /// The backend.
    pub kind: BootloaderKind,
    /// Trial boots armed per install (1..=9).
    pub tries: u8,
}

/// `[booted_slot]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootedSlotConfig {
    /// A kernel command line with `ota.slot=A|B` (default `/proc/cmdline`).
    Cmdline(PathBuf),
    /// A file containing `A` or `B` (tests, custom setups).
    File(PathBuf),
}

/// `[[health_check]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Name shown in reports.
    pub name: String,
    /// argv.
    pub command: Vec<String>,
    /// Killed (and failed) after this long.
    pub timeout: Duration,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Extra CA certificate (PEM) trusted for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// A body that delivers nothing for this long counts as a dropped connection.
    pub read_timeout: Duration,
    /// Retries after a dropped connection or a temporary server error (without progress).
    pub retries: u32,
    /// First retry delay; doubled each retry (capped at 60 s), with jitter.
    pub retry_delay: Duration,
    /// A connection that averages fewer bytes per second than this over [`Self::low_speed_time`] counts as a
    /// failed attempt even though bytes arrive (0: no limit). Without it a server that trickles a byte just
    /// inside every read timeout would hold a robot for as long as it likes.
    pub low_speed_limit: u64,
    /// The window over which [`Self::low_speed_limit`] is measured.
    pub low_speed_time: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            ca_file: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            retries: 8,
            retry_delay: Duration::from_secs(1),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Reads and validates the configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// The boot-coupled classes, in name order.
    pub fn boot_classes(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|(_, c)| !c.is_live())
            .map(|(n, _)| n.clone())
            .collect()
    }
}
