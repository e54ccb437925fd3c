//! The client's configuration (`/etc/ota/client.toml`), parsed once into typed values.
//! Every error names the file and the key (or line) so an operator can fix it on the robot.
//! A commented example lives in `ota-client/examples/client.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ota/client.toml";
/// Default state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/ota";
/// Default number of trial boots.
pub const DEFAULT_TRIES: u8 = 3;

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
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    compatible: String,
    trust_root: PathBuf,
    data_dir: Option<PathBuf>,
    slots: BTreeMap<String, RawClass>,
    bootloader: RawBootloader,
    #[serde(default)]
    booted_slot: Option<RawBooted>,
    #[serde(default)]
    health_check: Vec<RawHealth>,
    reboot_command: Option<Vec<String>>,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    server: Option<RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    url: String,
    device_id: Option<String>,
    enrollment_secret: Option<String>,
    enrollment_secret_file: Option<PathBuf>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    telemetry_command: Option<Vec<String>>,
    backoff_initial_ms: Option<u64>,
    backoff_max_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    a: PathBuf,
    b: PathBuf,
    size: Option<u64>,
    active_link: Option<PathBuf>,
    service_restart: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBootloader {
    backend: String,
    grubenv: Option<PathBuf>,
    fw_env_config: Option<PathBuf>,
    default_env: Option<PathBuf>,
    state_file: Option<PathBuf>,
    tries: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBooted {
    source: Option<String>,
    path: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    name: String,
    command: Vec<String>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    ca_file: Option<PathBuf>,
    connect_timeout_secs: Option<u64>,
    read_timeout_secs: Option<u64>,
    retries: Option<u32>,
    retry_delay_ms: Option<u64>,
    low_speed_limit: Option<u64>,
    low_speed_time_secs: Option<u64>,
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

    /// Parses configuration text; `path` is used in messages and to resolve nothing else.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let start = e.span().map(|s| s.start.min(text.len()));
            let message = e.message().trim().replace('\n', " ");
            ConfigError::Parse {
                path: path.to_path_buf(),
                line: start.map(|s| text[..s].matches('\n').count() + 1),
                message: match start.and_then(|s| key_at(text, s)) {
                    Some(key) if !message.contains(&key) => format!("key `{key}`: {message}"),
                    _ => message,
                },
            }
        })?;
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if raw.compatible.trim().is_empty() {
            return Err(invalid("compatible", "must not be empty"));
        }
        if raw.slots.is_empty() {
            return Err(invalid("slots", "configure at least one slot class, e.g. [slots.rootfs] a = \"/dev/...\" b = \"/dev/...\""));
        }
        let mut slots = BTreeMap::new();
        for (name, c) in raw.slots {
            let key = format!("slots.{name}");
            if c.a == c.b {
                return Err(invalid(
                    &key,
                    "`a` and `b` name the same device: a slot pair needs two",
                ));
            }
            if c.size == Some(0) {
                return Err(invalid(&format!("{key}.size"), "must be greater than 0"));
            }
            if c.service_restart.is_some() && c.active_link.is_none() {
                return Err(invalid(
                    &format!("{key}.service_restart"),
                    "only live classes (with `active_link`) restart a service",
                ));
            }
            if c.service_restart.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(
                    &format!("{key}.service_restart"),
                    "must not be an empty command",
                ));
            }
            slots.insert(
                name,
                ClassConfig {
                    a: c.a,
                    b: c.b,
                    size: c.size,
                    active_link: c.active_link,
                    service_restart: c.service_restart.unwrap_or_default(),
                },
            );
        }
        let b = raw.bootloader;
        let need = |v: Option<PathBuf>, key: &str| -> Result<PathBuf, ConfigError> {
            v.ok_or_else(|| {
                invalid(
                    &format!("bootloader.{key}"),
                    &format!("is required with backend = \"{}\"", b.backend),
                )
            })
        };
        let kind = match b.backend.as_str() {
            "grub" => BootloaderKind::Grub {
                grubenv: need(b.grubenv.clone(), "grubenv")?,
            },
            "uboot" => BootloaderKind::UBoot {
                fw_env_config: need(b.fw_env_config.clone(), "fw_env_config")?,
                default_env: b.default_env.clone(),
            },
            "file" => BootloaderKind::File {
                state_file: need(b.state_file.clone(), "state_file")?,
            },
            other => {
                return Err(invalid(
                    "bootloader.backend",
                    &format!(
                        "unknown backend \"{other}\": expected \"grub\", \"uboot\" or \"file\""
                    ),
                ))
            }
        };
        let tries = b.tries.unwrap_or(DEFAULT_TRIES);
        if !(1..=ota_bootloader::MAX_TRIES).contains(&tries) {
            return Err(invalid(
                "bootloader.tries",
                "must be 1..9 (one decimal digit in the boot environment)",
            ));
        }
        let booted_slot = match raw.booted_slot {
            None => BootedSlotConfig::Cmdline("/proc/cmdline".into()),
            Some(r) => match r.source.as_deref().unwrap_or("cmdline") {
                "cmdline" => {
                    BootedSlotConfig::Cmdline(r.path.unwrap_or_else(|| "/proc/cmdline".into()))
                }
                "file" => BootedSlotConfig::File(r.path.ok_or_else(|| {
                    invalid("booted_slot.path", "is required with source = \"file\"")
                })?),
                other => {
                    return Err(invalid(
                        "booted_slot.source",
                        &format!("unknown source \"{other}\": expected \"cmdline\" or \"file\""),
                    ))
                }
            },
        };
        let mut health_checks = Vec::new();
        for (i, h) in raw.health_check.into_iter().enumerate() {
            if h.name.trim().is_empty() {
                return Err(invalid(
                    &format!("health_check[{i}].name"),
                    "must not be empty",
                ));
            }
            if h.command.is_empty() {
                return Err(invalid(
                    &format!("health_check[{i}].command"),
                    "must not be empty",
                ));
            }
            if h.timeout_secs == Some(0) {
                return Err(invalid(
                    &format!("health_check[{i}].timeout_secs"),
                    "must be greater than 0",
                ));
            }
            health_checks.push(HealthCheck {
                name: h.name,
                command: h.command,
                timeout: Duration::from_secs(h.timeout_secs.unwrap_or(30)),
            });
        }
        let reboot_command = raw
            .reboot_command
            .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]);
        if reboot_command.is_empty() {
            return Err(invalid("reboot_command", "must not be empty"));
        }
        let mut http = HttpConfig::default();
        if let Some(h) = raw.http {
            http.ca_file = h.ca_file;
            if let Some(s) = h.connect_timeout_secs {
                http.connect_timeout = Duration::from_secs(s);
            }
            if let Some(s) = h.read_timeout_secs {
                if s == 0 {
                    return Err(invalid(
                        "http.read_timeout_secs",
                        "must be greater than 0: a stalled download must time out",
                    ));
                }
                http.read_timeout = Duration::from_secs(s);
            }
            if let Some(r) = h.retries {
                http.retries = r;
            }
            if let Some(ms) = h.retry_delay_ms {
                http.retry_delay = Duration::from_millis(ms);
            }
            if let Some(limit) = h.low_speed_limit {
                http.low_speed_limit = limit;
            }
            if let Some(s) = h.low_speed_time_secs {
                if s == 0 {
                    return Err(invalid(
                        "http.low_speed_time_secs",
                        "must be greater than 0 (set low_speed_limit = 0 to disable the limit)",
                    ));
                }
                http.low_speed_time = Duration::from_secs(s);
            }
        }
        let server = match raw.server {
            None => None,
            Some(r) => Some(parse_server(r, &invalid)?),
        };
        Ok(Config {
            server,
            source: path.to_path_buf(),
            compatible: raw.compatible,
            trust_root: raw.trust_root,
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            slots,
            bootloader: BootloaderConfig { kind, tries },
            booted_slot,
            health_checks,
            reboot_command,
            http,
        })
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

fn parse_server(
    r: RawServer,
    invalid: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<ServerConfig, ConfigError> {
    let url = r.url.trim().trim_end_matches('/').to_string();
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if host.is_none_or(str::is_empty) {
        return Err(invalid(
            "server.url",
            "must be an http:// or https:// base URL, e.g. \"https://ota.example.com\"",
        ));
    }
    if let Some(id) = &r.device_id {
        ota_protocol::validate_device_id(id).map_err(|m| invalid("server.device_id", &m))?;
    }
    let enrollment_secret = match (r.enrollment_secret, r.enrollment_secret_file) {
        (Some(s), None) if !s.trim().is_empty() => SecretSource::Inline(s),
        (Some(_), None) => return Err(invalid("server.enrollment_secret", "must not be empty")),
        (None, Some(p)) => SecretSource::File(p),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "server.enrollment_secret",
                "give either enrollment_secret or enrollment_secret_file, not both",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "server.enrollment_secret",
                "is required (or enrollment_secret_file): the fleet secret to enroll with",
            ))
        }
    };
    if r.telemetry_command.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid(
            "server.telemetry_command",
            "must not be an empty command",
        ));
    }
    let backoff_initial = Duration::from_millis(r.backoff_initial_ms.unwrap_or(1000));
    let backoff_max = Duration::from_secs(r.backoff_max_secs.unwrap_or(300));
    if backoff_initial.is_zero() {
        return Err(invalid(
            "server.backoff_initial_ms",
            "must be greater than 0",
        ));
    }
    if backoff_max < backoff_initial {
        return Err(invalid(
            "server.backoff_max_secs",
            "must not be shorter than backoff_initial_ms",
        ));
    }
    Ok(ServerConfig {
        url,
        device_id: r.device_id,
        enrollment_secret,
        tags: r.tags,
        telemetry_command: r.telemetry_command,
        backoff_initial,
        backoff_max,
    })
}

/// The dotted key (`slots.rootfs.a`) defined on the line containing byte `offset`, so
/// type errors name the key and not just the line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(['[', ']']).trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
compatible = "acme-robot-v2"
trust_root = "/etc/ota/trust.json"
[slots.rootfs]
a = "/dev/mmcblk0p2"
b = "/dev/mmcblk0p3"
[bootloader]
backend = "grub"
grubenv = "/boot/grub/grubenv"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ota/client.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/ota"));
        assert_eq!(c.bootloader.tries, 3);
        assert_eq!(
            c.booted_slot,
            BootedSlotConfig::Cmdline("/proc/cmdline".into())
        );
        assert_eq!(c.reboot_command, vec!["systemctl", "reboot"]);
        assert_eq!(c.boot_classes(), vec!["rootfs"]);
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.server, None);
    }

    #[test]
    fn server_section() {
        let c = parse(&format!(
            "{MINIMAL}[server]\nurl = \"https://ota.example.com/\"\nenrollment_secret_file = \"/etc/ota/secret\"\ntags = {{ site = \"w1\" }}\n"
        ))
        .unwrap();
        let s = c.server.unwrap();
        assert_eq!(s.url, "https://ota.example.com");
        assert_eq!(s.device_id, None);
        assert_eq!(
            s.enrollment_secret,
            SecretSource::File("/etc/ota/secret".into())
        );
        assert_eq!(s.tags["site"], "w1");
        assert_eq!(s.backoff_initial, Duration::from_secs(1));
        assert_eq!(s.backoff_max, Duration::from_secs(300));
        let e = err(&format!(
            "{MINIMAL}[server]\nurl = \"ota.example.com\"\nenrollment_secret = \"s\"\n"
        ));
        assert!(e.contains("server.url"), "{e}");
        let e = err(&format!("{MINIMAL}[server]\nurl = \"http://x\"\n"));
        assert!(e.contains("server.enrollment_secret"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[server]\nurl = \"http://x\"\nenrollment_secret = \"s\"\ndevice_id = \"a b\"\n"
        ));
        assert!(e.contains("server.device_id"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[server]\nurl = \"http://x\"\nenrollment_secret = \"s\"\nbackoff_initial_ms = 0\n"
        ));
        assert!(e.contains("server.backoff_initial_ms"), "{e}");
        assert!(!format!("{:?}", SecretSource::Inline("hunter2".into())).contains("hunter2"));
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../../examples/client.toml");
        let c = parse(text).unwrap();
        assert!(c.slots["model"].is_live());
        assert!(!c.slots["rootfs"].is_live());
        assert_eq!(
            c.slots["model"].service_restart,
            vec!["systemctl", "restart", "inference"]
        );
        assert!(!c.health_checks.is_empty());
        let server = c.server.unwrap();
        assert_eq!(server.url, "https://ota.example.com:8443");
        assert_eq!(server.tags["site"], "warehouse-3");
        assert!(server.telemetry_command.is_some());
        assert_eq!(c.http.low_speed_limit, 1024);
        assert_eq!(c.http.low_speed_time, Duration::from_secs(60));
    }

    #[test]
    fn low_speed_limit() {
        let c = parse(&format!(
            "{MINIMAL}[http]\nlow_speed_limit = 0\nlow_speed_time_secs = 5\n"
        ))
        .unwrap();
        assert_eq!(c.http.low_speed_limit, 0);
        assert_eq!(c.http.low_speed_time, Duration::from_secs(5));
        let e = err(&format!("{MINIMAL}[http]\nlow_speed_time_secs = 0\n"));
        assert!(e.contains("http.low_speed_time_secs"), "{e}");
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = err(&MINIMAL.replace("compatible = \"acme-robot-v2\"\n", ""));
        assert!(
            e.contains("/etc/ota/client.toml") && e.contains("compatible"),
            "{e}"
        );
        let e = err(&format!("{MINIMAL}\nbogus = 1\n"));
        assert!(e.contains("line") && e.contains("bogus"), "{e}");
        let e = err(&MINIMAL.replace("backend = \"grub\"", "backend = \"lilo\""));
        assert!(
            e.contains("bootloader.backend") && e.contains("lilo"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("grubenv = \"/boot/grub/grubenv\"", ""));
        assert!(e.contains("bootloader.grubenv"), "{e}");
        let e = err(&MINIMAL.replace("/dev/mmcblk0p3", "/dev/mmcblk0p2"));
        assert!(e.contains("slots.rootfs"), "{e}");
        let e = err(&format!("{MINIMAL}tries = 10\n"));
        assert!(e.contains("bootloader.tries"), "{e}");
        let e = err(&format!("{MINIMAL}[booted_slot]\nsource = \"file\"\n"));
        assert!(e.contains("booted_slot.path"), "{e}");
        let e = err(&format!(
            "{MINIMAL}[[health_check]]\nname = \"x\"\ncommand = []\n"
        ));
        assert!(e.contains("health_check[0].command"), "{e}");
        let e = err(&MINIMAL.replace("a = \"/dev/mmcblk0p2\"", "a = 5"));
        assert!(
            e.contains("line 5") && e.contains("key `slots.rootfs.a`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one-line messages: {e}");
    }

    #[test]
    fn backends_and_sources() {
        let c = parse(&MINIMAL.replace(
            "backend = \"grub\"\ngrubenv = \"/boot/grub/grubenv\"",
            "backend = \"file\"\nstate_file = \"/tmp/x\"\ntries = 5",
        ))
        .unwrap();
        assert_eq!(
            c.bootloader.kind,
            BootloaderKind::File {
                state_file: "/tmp/x".into()
            }
        );
        assert_eq!(c.bootloader.tries, 5);
        let c = parse(&format!(
            "{MINIMAL}[booted_slot]\nsource = \"file\"\npath = \"/run/slot\"\n"
        ))
        .unwrap();
        assert_eq!(c.booted_slot, BootedSlotConfig::File("/run/slot".into()));
    }
}
