//! Configuration text to [`Config`]: TOML errors name the line and the key, and every value is
//! checked once, one function per section, each error naming its dotted key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ota_protocol::fleet::WaitPhase;

use super::raw::{
    RawBooted, RawBootloader, RawClass, RawCommand, RawConfig, RawHealth, RawHttp, RawReadiness,
    RawServer,
};
use super::{
    BootedSlotConfig, BootloaderConfig, BootloaderKind, ClassConfig, Config, ConfigError,
    HealthCheck, HttpConfig, ReadinessConfig, SecretSource, ServerConfig, DEFAULT_DATA_DIR,
    DEFAULT_MAX_METADATA_AGE, DEFAULT_READINESS_TIMEOUT, DEFAULT_TRIES,
};

/// Builds the error for an invalid value: (dotted key, what is wrong and what is expected).
type Invalid<'a> = &'a dyn Fn(&str, &str) -> ConfigError;

impl Config {
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
        let slots = parse_slots(raw.slots, &invalid)?;
        let bootloader = parse_bootloader(raw.bootloader, &invalid)?;
        let booted_slot = parse_booted_slot(raw.booted_slot, &invalid)?;
        let health_checks = parse_health_checks(raw.health_check, &invalid)?;
        let reboot_command = raw
            .reboot_command
            .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]);
        if reboot_command.is_empty() {
            return Err(invalid("reboot_command", "must not be empty"));
        }
        let http = match raw.http {
            None => HttpConfig::default(),
            Some(h) => parse_http(h, &invalid)?,
        };
        let server = match raw.server {
            None => None,
            Some(r) => Some(parse_server(r, &invalid)?),
        };
        let readiness = match raw.readiness {
            None => None,
            Some(r) => Some(parse_readiness(r, &invalid)?),
        };
        Ok(Config {
            server,
            readiness,
            source: path.to_path_buf(),
            compatible: raw.compatible,
            trust_root: raw.trust_root,
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            slots,
            bootloader,
            booted_slot,
            health_checks,
            reboot_command,
            http,
        })
    }
}

/// `[slots.<class>]`: two distinct devices each; only live classes restart a service.
fn parse_slots(
    raw: BTreeMap<String, RawClass>,
    invalid: Invalid,
) -> Result<BTreeMap<String, ClassConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("slots", "configure at least one slot class, e.g. [slots.rootfs] a = \"/dev/...\" b = \"/dev/...\""));
    }
    let mut slots = BTreeMap::new();
    for (name, c) in raw {
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
    Ok(slots)
}

/// `[bootloader]`: the backend with the one file it needs, and 1..=9 tries.
fn parse_bootloader(b: RawBootloader, invalid: Invalid) -> Result<BootloaderConfig, ConfigError> {
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
                &format!("unknown backend \"{other}\": expected \"grub\", \"uboot\" or \"file\""),
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
    Ok(BootloaderConfig { kind, tries })
}

/// `[booted_slot]`: the kernel command line (default `/proc/cmdline`) or a file.
fn parse_booted_slot(
    raw: Option<RawBooted>,
    invalid: Invalid,
) -> Result<BootedSlotConfig, ConfigError> {
    Ok(match raw {
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
    })
}

/// `[[health_check]]`: a name, a command, a timeout (default 30 s).
fn parse_health_checks(
    raw: Vec<RawHealth>,
    invalid: Invalid,
) -> Result<Vec<HealthCheck>, ConfigError> {
    let mut health_checks = Vec::new();
    for (i, h) in raw.into_iter().enumerate() {
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
    Ok(health_checks)
}

/// `[http]`: the defaults of [`HttpConfig`] with what the file overrides; a download must be
/// able to time out.
fn parse_http(h: RawHttp, invalid: Invalid) -> Result<HttpConfig, ConfigError> {
    let mut http = HttpConfig {
        ca_file: h.ca_file,
        ..HttpConfig::default()
    };
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
    Ok(http)
}

/// `[server]`: an http(s) base URL, a valid device id, exactly one enrollment secret, sane backoff.
fn parse_server(r: RawServer, invalid: Invalid) -> Result<ServerConfig, ConfigError> {
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
    let max_metadata_age = r
        .max_metadata_age_secs
        .map_or(DEFAULT_MAX_METADATA_AGE, Duration::from_secs);
    if max_metadata_age.is_zero() {
        return Err(invalid(
            "server.max_metadata_age_secs",
            "must be greater than 0 (a week, 604800, is the default)",
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
        max_metadata_age,
        build_time: r.build_time,
        identity_key: r.identity_key,
    })
}

/// `[readiness]`: a non-empty command, a timeout, the phases it gates (default: all, each once).
fn parse_readiness(r: RawReadiness, invalid: Invalid) -> Result<ReadinessConfig, ConfigError> {
    let command = match r.command {
        RawCommand::Program(p) => vec![p],
        RawCommand::Argv(argv) => argv,
    };
    if command.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(invalid(
            "readiness.command",
            "must name a program, e.g. \"/usr/bin/robot-ready\" or [\"robot-ready\", \"--json\"]",
        ));
    }
    if r.timeout_secs == Some(0) {
        return Err(invalid("readiness.timeout_secs", "must be greater than 0"));
    }
    let phases = r.phases.unwrap_or_else(|| WaitPhase::ALL.to_vec());
    if phases.is_empty() {
        return Err(invalid(
            "readiness.phases",
            "must name at least one of \"download\", \"install\", \"reboot\" (remove [readiness] to gate nothing)",
        ));
    }
    if let Some(p) = phases
        .iter()
        .enumerate()
        .find_map(|(i, p)| phases[..i].contains(p).then_some(p))
    {
        return Err(invalid(
            "readiness.phases",
            &format!("\"{p}\" is listed twice"),
        ));
    }
    Ok(ReadinessConfig {
        command,
        timeout: r
            .timeout_secs
            .map_or(DEFAULT_READINESS_TIMEOUT, Duration::from_secs),
        phases,
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
