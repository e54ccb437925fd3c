//! `ota-client daemon`: the polling half of the client.
//!
//! Enrolls once (the token is kept in `DATA_DIR/device-token`, mode 0600; the enrollment
//! `request_id` is persisted before it is sent, so a retry gets the same token), then loops:
//!
//! 1. report the client's unreported events (commits, rollbacks, failures) and acknowledge
//!    each only after the server accepted it, under a stable `report_id`, so a power cut
//!    never loses or duplicates a report;
//! 2. poll with inventory and telemetry;
//! 3. on an offer: report `downloading`, install through [`Client::install`] exactly like
//!    `ota-client install` (HTTP download with the device's bearer token, resumed after
//!    dropped connections), report `installing` progress (throttled), then `rebooting`, and
//!    reboot. After the reboot `ota-client confirm` commits or rolls back and the next
//!    daemon start reports what happened.
//!
//! Every failed request backs off exponentially with full jitter (bounded), honouring
//! `Retry-After`; permanent answers are not hammered. An offer whose install failed is
//! reported at once and the server is polled again only after the backoff, so a server that
//! keeps offering a refused bundle does not get a download loop. The offer being worked on is
//! persisted before anything is done for it. [`run`] is a library function with an
//! injectable [`Clock`] and reboot hook so tests and demos run many robots in one process.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ota_bundle_format::BundleError;
use ota_client_core::{EventKind, ReportEvent};
use ota_protocol::device::{
    EnrollRequest, EnrollResponse, PollRequest, PollResponse, ReportRequest, ReportResponse,
    ReportStatus, UpdateOffer, MAX_LOG_TAIL,
};
use ota_protocol::{paths, ErrorBody};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError, InstallOptions, InstallReport, Progress};
use crate::config::{Config, ConfigError, ServerConfig};
use crate::source::{BundleSource, HttpRequest, SourceError};
use crate::store::StoreError;
use crate::telemetry::Sampler;
use crate::Slot;

/// The device token, in the data directory.
pub const TOKEN_FILE: &str = "device-token";
/// The daemon's own state (identity, the offer being worked on), in the data directory.
pub const STATE_FILE: &str = "daemon-state.json";
/// Timeout of enroll, poll and report requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of best-effort progress reports (sent while the bundle streams).
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(3);
/// Progress reports: at most one per this many percent of an image...
const PROGRESS_STEP: u8 = 20;
/// ...and at most one per this interval.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Log lines kept for the `log_tail` of failure reports.
const LOG_LINES: usize = 40;
/// The daemon's log in the data directory (survives the reboot into a trial, so a rollback
/// report carries what happened before it); rotated to `daemon.log.1` past this size.
pub const LOG_FILE: &str = "daemon.log";
const LOG_FILE_MAX: u64 = 64 * 1024;
/// A `Retry-After` longer than this is treated as this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why the daemon cannot run at all (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// No `[server]` section.
    #[error("{} has no [server] section: add url and enrollment_secret (or enrollment_secret_file) to run the daemon", .0.display())]
    NoServer(PathBuf),
    /// No usable device id.
    #[error("cannot determine this robot's device id ({0}); set [server] device_id")]
    DeviceId(String),
    /// A file of the daemon.
    #[error("{op} {}: {error}", path.display())]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The daemon's state file is damaged.
    #[error("daemon state {} is corrupt ({detail}); move it away to enroll again", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        detail: String,
    },
    /// The client cannot be opened.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The HTTP client cannot be set up.
    #[error("cannot set up HTTP: {0}")]
    Http(String),
}

/// Time and randomness, injectable so tests and demos can run robots fast.
pub trait Clock: Send + Sync {
    /// A monotonic now.
    fn now(&self) -> Instant;
    /// Sleeps `d`, returning early (with `false`) once `cancel` is set.
    fn sleep(&self, d: Duration, cancel: &AtomicBool) -> bool;
    /// A random number (jitter).
    fn random(&self) -> u64;
}

/// Real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration, cancel: &AtomicBool) -> bool {
        let until = Instant::now() + d;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    fn random(&self) -> u64 {
        random_u64()
    }
}

/// Real time with every sleep scaled by a factor (0.01: a 5-minute backoff takes 3 s).
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock(pub f64);

impl Clock for ScaledClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration, cancel: &AtomicBool) -> bool {
        SystemClock.sleep(d.mul_f64(self.0.max(0.0)), cancel)
    }

    fn random(&self) -> u64 {
        random_u64()
    }
}

/// A random number from the standard library's randomly keyed hasher.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Routine (a poll without an update).
    Debug,
    /// A step of an update.
    Info,
    /// A retried problem.
    Warn,
    /// A failure that needs an operator.
    Error,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        })
    }
}

/// Where log lines go.
pub type LogSink = Arc<dyn Fn(Level, &str) + Send + Sync>;
/// A reboot performed instead of the configured reboot command.
pub type RebootHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the daemon's surroundings provide.
#[derive(Clone)]
pub struct DaemonHooks {
    /// Time and jitter.
    pub clock: Arc<dyn Clock>,
    /// Reboots the robot; `None`: run the configured `reboot_command`.
    pub reboot: Option<RebootHook>,
    /// Log lines.
    pub log: LogSink,
}

impl Default for DaemonHooks {
    fn default() -> Self {
        DaemonHooks {
            clock: Arc::new(SystemClock),
            reboot: None,
            log: Arc::new(|level, line| {
                if level >= Level::Info {
                    eprintln!("ota-client daemon: {level}: {line}");
                }
            }),
        }
    }
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Cancelled (SIGTERM, Ctrl-C, the caller).
    Stopped,
    /// A trial was armed and the reboot command ran: the robot is going down.
    Rebooted,
}

/// Exponential backoff with full jitter: the n-th consecutive failure waits a uniformly
/// random time in `0..=min(max, initial * 2^(n-1))`, and at least the server's `Retry-After`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff between `initial` and `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay after one more failure.
    pub fn next(&mut self, random: u64, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .initial
            .saturating_mul(1u32 << (self.failures - 1).min(20))
            .min(self.max);
        let ms = ceiling.as_millis() as u64;
        let jittered = Duration::from_millis(random % (ms + 1));
        match retry_after {
            Some(r) => jittered.max(r.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// A success: start again from `initial`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The offer being worked on, persisted before anything is done for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Active {
    rollout_id: u64,
    bundle_id: String,
    version: semver::Version,
    manifest_digest: String,
    /// The trial was armed and the reboot requested.
    rebooting: bool,
}

/// `daemon-state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    device_id: String,
    /// Sent with every enrollment attempt until one succeeds.
    enroll_request_id: String,
    /// Makes report ids unique even if the client's event ids start again.
    instance: String,
    active: Option<Active>,
    /// Client events that are not reports (a download interrupted by a shutdown or an
    /// outage, retried later), acknowledged without being sent.
    #[serde(default)]
    suppressed_events: Vec<u64>,
}

/// Why one cycle of the loop stopped.
#[derive(Debug)]
enum Failure {
    /// Try again after a backoff.
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
    /// The token is no longer valid: enroll again.
    Reenroll(String),
    /// Retrying soon cannot help (wrong secret, identity conflict): wait the longest backoff.
    Permanent(String),
    /// The daemon cannot go on.
    Fatal(DaemonError),
}

impl Failure {
    fn transient(why: impl Into<String>) -> Failure {
        Failure::Transient {
            why: why.into(),
            retry_after: None,
        }
    }
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        Failure::Fatal(e)
    }
}

/// What the loop does next.
enum Next {
    Sleep(Duration),
    Now,
    Rebooted,
    Stop,
}

/// An answer from the server other than 2xx, or no answer.
#[derive(Debug)]
enum CallError {
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
    Unauthorized(String),
    Permanent {
        status: u16,
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transient { why, .. } => f.write_str(why),
            CallError::Unauthorized(m) => write!(f, "HTTP 401: {m}"),
            CallError::Permanent { status, message } => write!(f, "HTTP {status}: {message}"),
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Transient { why, retry_after } => Failure::Transient { why, retry_after },
            CallError::Unauthorized(m) => Failure::Reenroll(format!(
                "the server no longer accepts this device's token ({m})"
            )),
            other => Failure::Permanent(other.to_string()),
        }
    }
}

/// An error with its sources, on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}

struct Api {
    http: reqwest::blocking::Client,
    quick: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn new(config: &Config, base: &str) -> Result<Api, DaemonError> {
        let build = |timeout: Duration| -> Result<reqwest::blocking::Client, DaemonError> {
            let mut b = reqwest::blocking::Client::builder()
                .connect_timeout(config.http.connect_timeout.min(timeout))
                .timeout(timeout);
            if let Some(ca) = &config.http.ca_file {
                let pem = std::fs::read(ca).map_err(|error| DaemonError::File {
                    op: "reading CA file",
                    path: ca.clone(),
                    error,
                })?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    DaemonError::Http(format!("{} is not a PEM certificate: {e}", ca.display()))
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build().map_err(|e| DaemonError::Http(one_line(&e)))
        };
        Ok(Api {
            http: build(REQUEST_TIMEOUT)?,
            quick: build(PROGRESS_TIMEOUT)?,
            base: base.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn post<B: Serialize, R: DeserializeOwned>(
        &self,
        quick: bool,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> Result<R, CallError> {
        let client = if quick { &self.quick } else { &self.http };
        let mut req = client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().map_err(|e| CallError::Transient {
            why: format!("{path}: {}", one_line(&e)),
            retry_after: None,
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return resp.json::<R>().map_err(|e| CallError::Transient {
                why: format!("{path}: unreadable answer: {}", one_line(&e)),
                retry_after: None,
            });
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(ota_protocol::device::parse_retry_after);
        let message = resp
            .text()
            .ok()
            .and_then(|t| serde_json::from_str::<ErrorBody>(&t).ok())
            .map_or_else(|| format!("HTTP {status}"), |b| b.error);
        Err(match status {
            401 => CallError::Unauthorized(message),
            408 | 425 | 429 | 500..=599 => CallError::Transient {
                why: format!("{path}: HTTP {status}: {message}"),
                retry_after,
            },
            _ => CallError::Permanent { status, message },
        })
    }
}

/// Log lines go to the sink, to `daemon.log` (best effort) and into a ring; the last lines
/// are the `log_tail` of failure reports.
#[derive(Clone)]
struct Log {
    sink: LogSink,
    ring: Arc<Mutex<VecDeque<String>>>,
    file: Option<PathBuf>,
}

impl Log {
    fn line(&self, level: Level, message: &str) {
        if level >= Level::Info {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let line = format!("{now} {level}: {message}");
            if let Some(path) = &self.file {
                append_log(path, &line);
            }
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == LOG_LINES {
                ring.pop_front();
            }
            ring.push_back(line);
        }
        (self.sink)(level, message);
    }

    fn lines(&self) -> Vec<String> {
        if let Some(path) = &self.file {
            let mut text = std::fs::read_to_string(rotated(path)).unwrap_or_default();
            text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            if !text.is_empty() {
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                return lines[lines.len().saturating_sub(LOG_LINES)..].to_vec();
            }
        }
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }

    fn tail(&self) -> String {
        let text = self.lines().join("\n");
        if text.len() <= MAX_LOG_TAIL {
            return text;
        }
        let mut cut = text.len() - MAX_LOG_TAIL;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Appends a line to the log file, rotating it when it is full. Failures are ignored: the
/// log is a convenience, never a reason to stop updating.
fn append_log(path: &Path, line: &str) {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_FILE_MAX) {
        let _ = std::fs::rename(path, rotated(path));
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// This robot's id when `[server] device_id` is not set: /etc/machine-id, else the hostname.
pub fn default_device_id() -> Result<String, DaemonError> {
    let mut tried = Vec::new();
    for path in [
        "/etc/machine-id",
        "/proc/sys/kernel/hostname",
        "/etc/hostname",
    ] {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let id = text.trim().to_string();
                match ota_protocol::validate_device_id(&id) {
                    Ok(()) => return Ok(id),
                    Err(e) => tried.push(format!("{path}: {e}")),
                }
            }
            Err(e) => tried.push(format!("{path}: {e}")),
        }
    }
    Err(DaemonError::DeviceId(tried.join("; ")))
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Is this install error worth retrying later (an outage, a shutdown, a busy lock) rather
/// than a verdict on the update to report?
fn is_transient(e: &ClientError) -> bool {
    fn source(e: &SourceError) -> bool {
        matches!(e, SourceError::GaveUp { .. } | SourceError::Cancelled)
    }
    fn io(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| {
            inner.downcast_ref::<SourceError>().is_some_and(source)
                || inner
                    .downcast_ref::<BundleError>()
                    .is_some_and(|b| matches!(b, BundleError::Io { error, .. } if io(error)))
                || inner.downcast_ref::<std::io::Error>().is_some_and(io)
        })
    }
    match e {
        ClientError::Source(s) => source(s),
        ClientError::Store(StoreError::Locked { .. }) => true,
        ClientError::Bundle(BundleError::Io { error, .. }) => io(error),
        _ => false,
    }
}

struct Daemon<'a> {
    client: Client,
    server: ServerConfig,
    hooks: &'a DaemonHooks,
    cancel: &'a Arc<AtomicBool>,
    api: Api,
    log: Log,
    state: Persisted,
    state_path: PathBuf,
    token_path: PathBuf,
    sampler: Sampler,
    telemetry_problem: Option<String>,
}

fn new_id(prefix: &str, clock: &dyn Clock) -> String {
    format!("{prefix}{:016x}{:016x}", clock.random(), random_u64())
}

impl<'a> Daemon<'a> {
    fn open(
        client: Client,
        hooks: &'a DaemonHooks,
        cancel: &'a Arc<AtomicBool>,
    ) -> Result<Daemon<'a>, DaemonError> {
        let config = client.config().clone();
        let server = config
            .server
            .clone()
            .ok_or_else(|| DaemonError::NoServer(config.source.clone()))?;
        let device_id = match &server.device_id {
            Some(id) => id.clone(),
            None => default_device_id()?,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|error| DaemonError::File {
            op: "creating",
            path: config.data_dir.clone(),
            error,
        })?;
        let state_path = config.data_dir.join(STATE_FILE);
        let token_path = config.data_dir.join(TOKEN_FILE);
        let loaded = match std::fs::read(&state_path) {
            Ok(bytes) => Some(serde_json::from_slice::<Persisted>(&bytes).map_err(|e| {
                DaemonError::Corrupt {
                    path: state_path.clone(),
                    detail: e.to_string(),
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(DaemonError::File {
                    op: "reading",
                    path: state_path,
                    error,
                })
            }
        };
        let log = Log {
            sink: hooks.log.clone(),
            ring: Arc::default(),
            file: Some(config.data_dir.join(LOG_FILE)),
        };
        let clock = hooks.clock.as_ref();
        let mut d = Daemon {
            api: Api::new(&config, &server.url)?,
            sampler: Sampler::new(&config.data_dir, server.telemetry_command.clone()),
            client,
            server,
            hooks,
            cancel,
            log,
            state: loaded.clone().unwrap_or_default(),
            state_path,
            token_path,
            telemetry_problem: None,
        };
        if d.state.device_id != device_id {
            if loaded.is_some() {
                d.log.line(
                    Level::Warn,
                    &format!(
                        "device id changed from {} to {device_id}: enrolling again",
                        d.state.device_id
                    ),
                );
            }
            d.state = Persisted {
                device_id,
                enroll_request_id: new_id("enroll-", clock),
                instance: format!("{:012x}", clock.random() & 0xffff_ffff_ffff),
                active: None,
                suppressed_events: Vec::new(),
            };
            d.remove_token()?;
            d.save()?;
        }
        Ok(d)
    }

    fn save(&self) -> Result<(), DaemonError> {
        let bytes = serde_json::to_vec_pretty(&self.state).expect("serialisable");
        ota_keys::write_file_atomically(&self.state_path, &bytes, 0o600).map_err(|error| {
            DaemonError::File {
                op: "writing",
                path: self.state_path.clone(),
                error,
            }
        })
    }

    fn remove_token(&self) -> Result<(), DaemonError> {
        match std::fs::remove_file(&self.token_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(DaemonError::File {
                op: "removing",
                path: self.token_path.clone(),
                error,
            }),
        }
    }

    fn info(&self, message: &str) {
        self.log.line(Level::Info, message);
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// After a 401: forget the token, enroll with a new request id.
    fn reenroll(&mut self) -> Result<(), DaemonError> {
        self.remove_token()?;
        self.state.enroll_request_id = new_id("enroll-", self.hooks.clock.as_ref());
        self.save()
    }

    fn token(&mut self) -> Result<String, Failure> {
        match std::fs::read_to_string(&self.token_path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Failure::Fatal(DaemonError::File {
                    op: "reading",
                    path: self.token_path.clone(),
                    error,
                }))
            }
        }
        let secret = self
            .server
            .enrollment_secret
            .read()
            .map_err(|e: ConfigError| Failure::Permanent(e.to_string()))?;
        let req = EnrollRequest {
            enrollment_secret: secret,
            device_id: self.state.device_id.clone(),
            compatible: self.client.config().compatible.clone(),
            tags: self.server.tags.clone(),
            request_id: self.state.enroll_request_id.clone(),
        };
        let resp: EnrollResponse = self
            .api
            .post(false, paths::ENROLL, None, &req)
            .map_err(|e| match e {
                CallError::Unauthorized(m) => Failure::Permanent(format!(
                    "enrollment refused: {m} (check [server] enrollment_secret)"
                )),
                CallError::Permanent { status: 409, message } => Failure::Permanent(format!(
                    "enrollment refused: {message} (another robot enrolled as {}; an operator must delete that device on the server, or set [server] device_id)",
                    self.state.device_id
                )),
                CallError::Permanent { message, .. } => {
                    Failure::Permanent(format!("enrollment refused: {message}"))
                }
                other => other.into(),
            })?;
        ota_keys::write_file_atomically(&self.token_path, resp.token.as_bytes(), 0o600).map_err(
            |error| {
                Failure::Fatal(DaemonError::File {
                    op: "writing",
                    path: self.token_path.clone(),
                    error,
                })
            },
        )?;
        self.info(&format!(
            "enrolled as {} with {}",
            resp.device_id, self.server.url
        ));
        Ok(resp.token)
    }

    /// The offer an event belongs to.
    fn event_offer(&self, ev: &ReportEvent) -> Option<&Active> {
        self.state
            .active
            .as_ref()
            .filter(|a| match &ev.bundle_hash {
                Some(h) => *h == a.manifest_digest,
                None => ev.kind == EventKind::InstallFailed,
            })
    }

    fn event_report(&self, ev: &ReportEvent) -> ReportRequest {
        let active = self.event_offer(ev);
        let reason = if ev.reason.trim().is_empty() {
            "no reason recorded".to_string()
        } else {
            ev.reason.clone()
        };
        let (status, error, why) = match ev.kind {
            EventKind::Committed | EventKind::LiveCommitted => (ReportStatus::Success, None, None),
            EventKind::TrialFailed | EventKind::RolledBack => {
                (ReportStatus::RolledBack, None, Some(reason))
            }
            EventKind::LiveFailed | EventKind::LiveInterrupted | EventKind::InstallFailed => {
                (ReportStatus::Failure, Some(reason), None)
            }
            EventKind::MarkedBad => (
                ReportStatus::Failure,
                Some(format!(
                    "slot {} was marked bad: {reason}",
                    ev.slot.map_or("?".into(), |s| s.to_string())
                )),
                None,
            ),
        };
        let bad = status.is_bad();
        ReportRequest {
            report_id: format!("event-{}-{}", self.state.instance, ev.id),
            rollout_id: active.map(|a| a.rollout_id),
            version: ev
                .version
                .clone()
                .or_else(|| active.map(|a| a.version.clone())),
            manifest_digest: ev
                .bundle_hash
                .clone()
                .or_else(|| active.map(|a| a.manifest_digest.clone())),
            status,
            progress_percent: None,
            error,
            log_tail: bad.then(|| self.log.tail()).filter(|t| !t.is_empty()),
            reason: why,
        }
    }

    /// Reports every unreported event, acknowledging each once the server has it.
    fn report_events(&mut self, token: &str) -> Result<(), Failure> {
        let events = self.client.status().unreported_events;
        for ev in events {
            if self.cancelled() {
                return Ok(());
            }
            if let Some(i) = self
                .state
                .suppressed_events
                .iter()
                .position(|&id| id == ev.id)
            {
                self.client
                    .ack_events(ev.id)
                    .map_err(|e| Failure::transient(e.to_string()))?;
                self.state.suppressed_events.remove(i);
                self.save()?;
                continue;
            }
            let req = self.event_report(&ev);
            let ends_offer = self.event_offer(&ev).is_some() && req.status.is_terminal();
            let what = match req.status {
                ReportStatus::Success => "success".to_string(),
                ReportStatus::RolledBack => {
                    format!("rollback ({})", req.reason.as_deref().unwrap_or(""))
                }
                _ => format!("failure ({})", req.error.as_deref().unwrap_or("")),
            };
            let version = req
                .version
                .as_ref()
                .map_or_else(|| "an update".to_string(), |v| v.to_string());
            match self
                .api
                .post::<_, ReportResponse>(false, paths::REPORT, Some(token), &req)
            {
                Ok(_) => self.info(&format!("reported {what} of {version}")),
                Err(CallError::Permanent { status, message }) => self.log.line(
                    Level::Warn,
                    &format!("the server refused the report of {what} of {version} (HTTP {status}: {message}); dropping it"),
                ),
                Err(e) => return Err(e.into()),
            }
            self.client
                .ack_events(ev.id)
                .map_err(|e| Failure::transient(e.to_string()))?;
            if ends_offer {
                self.state.active = None;
                self.save()?;
            }
        }
        Ok(())
    }

    fn poll(&mut self, token: &str) -> Result<PollResponse, Failure> {
        let status = self.client.status();
        let config = self.client.config();
        let class = config
            .boot_classes()
            .into_iter()
            .next()
            .or_else(|| config.slots.keys().next().cloned());
        let mut slots = std::collections::BTreeMap::new();
        let mut current_version = None;
        for s in &status.slots {
            if Some(&s.class) != class.as_ref() {
                continue;
            }
            if let Some(v) = &s.version {
                slots.insert(s.slot.to_string(), v.to_string());
            }
            if s.active {
                current_version = s.version.clone();
            }
        }
        let (telemetry, problem) = self.sampler.sample();
        if problem != self.telemetry_problem {
            if let Some(p) = &problem {
                self.log.line(Level::Warn, p);
            }
            self.telemetry_problem = problem;
        }
        let req = PollRequest {
            compatible: config.compatible.clone(),
            current_version,
            booted_slot: status.booted.map(|s| s.to_string()),
            slots,
            telemetry,
        };
        let resp: PollResponse = self.api.post(false, paths::POLL, Some(token), &req)?;
        self.log.line(
            Level::Debug,
            &match &resp.update {
                None => "polled: no update".to_string(),
                Some(u) => format!("polled: offered {}", u.version),
            },
        );
        Ok(resp)
    }

    fn report_status(
        &self,
        token: &str,
        offer: &Active,
        status: ReportStatus,
        progress: Option<u8>,
        error: Option<String>,
    ) -> Result<(), CallError> {
        let req = ReportRequest {
            report_id: format!(
                "status-{}-{}-{}-{}",
                self.state.instance,
                offer.rollout_id,
                short(&offer.manifest_digest),
                status.as_str()
            ),
            rollout_id: Some(offer.rollout_id),
            version: Some(offer.version.clone()),
            manifest_digest: Some(offer.manifest_digest.clone()),
            status,
            progress_percent: progress,
            log_tail: error
                .is_some()
                .then(|| self.log.tail())
                .filter(|t| !t.is_empty()),
            error,
            reason: None,
        };
        self.api
            .post::<_, ReportResponse>(false, paths::REPORT, Some(token), &req)
            .map(|_| ())
    }

    fn reboot(&mut self, token: &str, active: &Active) -> Result<Next, Failure> {
        if let Err(e) = self.report_status(token, active, ReportStatus::Rebooting, None, None) {
            // The outcome is reported after the reboot anyway.
            self.log.line(
                Level::Warn,
                &format!("could not report the reboot ({e}); rebooting anyway"),
            );
        }
        let result = match &self.hooks.reboot {
            Some(hook) => hook(),
            None => self.client.reboot_now().map_err(|e| e.to_string()),
        };
        match result {
            Ok(()) => Ok(Next::Rebooted),
            Err(e) => Err(Failure::transient(format!(
                "the reboot into {} failed: {e}",
                active.version
            ))),
        }
    }

    fn install(&mut self, token: &str, offer: UpdateOffer) -> Result<Next, Failure> {
        let active = Active {
            rollout_id: offer.rollout_id,
            bundle_id: offer.bundle_id.clone(),
            version: offer.version.clone(),
            manifest_digest: offer.manifest_digest.clone(),
            rebooting: false,
        };
        let status = self.client.status();
        let armed = status.trial.is_some()
            && status
                .pending_trial
                .as_ref()
                .is_some_and(|p| p.bundle_hash == offer.manifest_digest);
        if armed {
            let mut a = active;
            a.rebooting = true;
            self.state.active = Some(a.clone());
            self.save()?;
            self.info(&format!(
                "{} is armed for a trial boot but the robot did not reboot: rebooting",
                a.version
            ));
            return self.reboot(token, &a);
        }
        if self.state.active.as_ref() != Some(&active) {
            self.state.active = Some(active.clone());
            self.save()?;
        }
        self.info(&format!(
            "update {} offered (rollout {}, {} bytes): downloading and installing",
            offer.version, offer.rollout_id, offer.size
        ));
        self.report_status(token, &active, ReportStatus::Downloading, Some(0), None)?;
        let before = status.unreported_events.last().map_or(0, |e| e.id + 1);
        let source = BundleSource::Http(HttpRequest::bearer(
            &self.api.url(&offer.download_url),
            token,
        ));
        let mut progress = Reporter {
            api: &self.api,
            log: &self.log,
            clock: self.hooks.clock.as_ref(),
            token,
            active: &active,
            instance: &self.state.instance,
            image: 0,
            size: 0,
            written: 0,
            last_step: 0,
            last_sent: None,
        };
        let options = InstallOptions {
            allow_downgrade: false,
            reboot: false,
            cancel: Some(Arc::clone(self.cancel)),
        };
        let result = self.client.install(&source, &options, &mut progress);
        match result {
            Ok(InstallReport::TrialArmed { slot, .. }) => {
                let mut a = active;
                a.rebooting = true;
                self.state.active = Some(a.clone());
                self.save()?;
                self.info(&format!(
                    "{} written to slot {slot} and armed for a trial boot: rebooting",
                    a.version
                ));
                self.reboot(token, &a)
            }
            Ok(InstallReport::LiveSwitched { flips, .. }) => {
                let classes: Vec<String> = flips.into_iter().map(|f| f.class).collect();
                self.info(&format!(
                    "{} switched live ({}) and healthy",
                    active.version,
                    classes.join(", ")
                ));
                Ok(Next::Now)
            }
            Err(e) if self.cancelled() || is_transient(&e) => {
                // Not a verdict on the update: do not report a failure, try again later.
                let new: Vec<u64> = self
                    .client
                    .status()
                    .unreported_events
                    .iter()
                    .filter(|ev| ev.id >= before && ev.kind == EventKind::InstallFailed)
                    .map(|ev| ev.id)
                    .collect();
                self.state.suppressed_events.extend(new);
                self.save()?;
                if self.cancelled() {
                    self.info(&format!(
                        "installing {} interrupted by shutdown",
                        active.version
                    ));
                    return Ok(Next::Stop);
                }
                Err(Failure::transient(format!(
                    "installing {} was interrupted ({e}); retrying",
                    active.version
                )))
            }
            Err(e) => {
                let message = e.to_string();
                self.log.line(
                    Level::Error,
                    &format!("installing {} failed: {message}", active.version),
                );
                let recorded = self
                    .client
                    .status()
                    .unreported_events
                    .iter()
                    .any(|ev| ev.id >= before);
                if !recorded {
                    // The client could not record it: report it here, or the server would
                    // offer the same update forever.
                    self.report_status(token, &active, ReportStatus::Failure, None, Some(message))?;
                    self.state.active = None;
                    self.save()?;
                }
                // Report it now, then back off before the next poll: a server that offers the
                // refused bundle again must not get a download loop.
                self.report_events(token)?;
                Err(Failure::transient(format!(
                    "the offer of {} failed; polling again after a backoff",
                    active.version
                )))
            }
        }
    }

    fn cycle(&mut self) -> Result<Next, Failure> {
        let token = self.token()?;
        self.report_events(&token)?;
        if self.cancelled() {
            return Ok(Next::Stop);
        }
        let resp = self.poll(&token)?;
        match resp.update {
            Some(offer) if !self.cancelled() => self.install(&token, offer),
            _ => Ok(Next::Sleep(
                resp.next_poll_delay(self.hooks.clock.random() as u32),
            )),
        }
    }
}

/// Sends throttled `installing` reports while the bundle streams into the slots.
struct Reporter<'a> {
    api: &'a Api,
    log: &'a Log,
    clock: &'a dyn Clock,
    token: &'a str,
    active: &'a Active,
    instance: &'a str,
    image: usize,
    size: u64,
    written: u64,
    last_step: u8,
    last_sent: Option<Instant>,
}

impl Reporter<'_> {
    fn send(&mut self, percent: u8) {
        let req = ReportRequest {
            report_id: format!(
                "progress-{}-{}-{}-{}-{percent}",
                self.instance,
                self.active.rollout_id,
                short(&self.active.manifest_digest),
                self.image
            ),
            rollout_id: Some(self.active.rollout_id),
            version: Some(self.active.version.clone()),
            manifest_digest: Some(self.active.manifest_digest.clone()),
            status: ReportStatus::Installing,
            progress_percent: Some(percent),
            error: None,
            log_tail: None,
            reason: None,
        };
        // Best effort: the outcome is what matters, and a slow server must not stall the
        // write for long.
        if let Err(e) =
            self.api
                .post::<_, ReportResponse>(true, paths::REPORT, Some(self.token), &req)
        {
            self.log
                .line(Level::Debug, &format!("progress report not sent: {e}"));
        }
        self.last_sent = Some(self.clock.now());
    }
}

impl Progress for Reporter<'_> {
    fn phase(&mut self, message: &str) {
        self.log.line(Level::Debug, message);
    }

    fn image_started(&mut self, image: &str, class: &str, slot: Slot, size: u64) {
        self.image += 1;
        self.size = size;
        self.written = 0;
        self.last_step = 0;
        self.log.line(
            Level::Info,
            &format!("writing {image} ({size} bytes) into {class} slot {slot}"),
        );
        self.send(0);
    }

    fn bytes_written(&mut self, n: u64) {
        self.written += n;
        if self.size == 0 {
            return;
        }
        let percent = (self.written.saturating_mul(100) / self.size).min(100) as u8;
        let step = percent / PROGRESS_STEP * PROGRESS_STEP;
        let due = self
            .last_sent
            .is_none_or(|t| self.clock.now().duration_since(t) >= PROGRESS_INTERVAL);
        if step > self.last_step && due {
            self.last_step = step;
            self.send(step);
        }
    }

    fn image_finished(&mut self) {
        if self.last_step < 100 {
            self.last_step = 100;
            self.send(100);
        }
    }
}

/// Runs the daemon for `config` until `cancel` is set ([`Exit::Stopped`]) or a reboot was
/// started ([`Exit::Rebooted`]).
pub fn run(
    config: Config,
    hooks: &DaemonHooks,
    cancel: &Arc<AtomicBool>,
) -> Result<Exit, DaemonError> {
    run_client(Client::open(config)?, hooks, cancel)
}

/// [`run`] over an already opened client (e.g. one made with [`Client::with_backend`]).
pub fn run_client(
    client: Client,
    hooks: &DaemonHooks,
    cancel: &Arc<AtomicBool>,
) -> Result<Exit, DaemonError> {
    let mut d = Daemon::open(client, hooks, cancel)?;
    let mut backoff = Backoff::new(d.server.backoff_initial, d.server.backoff_max);
    d.info(&format!(
        "started as device {} polling {}",
        d.state.device_id, d.server.url
    ));
    let clock = Arc::clone(&hooks.clock);
    loop {
        if d.cancelled() {
            return Ok(Exit::Stopped);
        }
        let delay = match d.cycle() {
            Ok(Next::Sleep(delay)) => {
                backoff.reset();
                delay
            }
            Ok(Next::Now) => {
                backoff.reset();
                continue;
            }
            Ok(Next::Rebooted) => return Ok(Exit::Rebooted),
            Ok(Next::Stop) => return Ok(Exit::Stopped),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient { why, retry_after }) => {
                let delay = backoff.next(clock.random(), retry_after);
                d.log.line(
                    Level::Warn,
                    &format!(
                        "{why}; retry {} in {:.1} s",
                        backoff.failures(),
                        delay.as_secs_f64()
                    ),
                );
                delay
            }
            Err(Failure::Reenroll(why)) => {
                d.reenroll()?;
                let delay = backoff.next(clock.random(), None);
                d.log.line(
                    Level::Warn,
                    &format!("{why}; enrolling again in {:.1} s", delay.as_secs_f64()),
                );
                delay
            }
            Err(Failure::Permanent(why)) => {
                let delay = backoff
                    .next(clock.random(), None)
                    .max(d.server.backoff_max / 2);
                d.log.line(
                    Level::Error,
                    &format!("{why}; trying again in {:.0} s", delay.as_secs_f64()),
                );
                delay
            }
        };
        if !clock.sleep(delay, cancel) {
            return Ok(Exit::Stopped);
        }
    }
}

/// The daemon state for tests and tools: the id this robot enrolled as, if it has.
pub fn enrolled_device_id(data_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(data_dir.join(STATE_FILE)).ok()?;
    let state: Persisted = serde_json::from_slice(&bytes).ok()?;
    data_dir
        .join(TOKEN_FILE)
        .exists()
        .then_some(state.device_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_full_jitter_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for n in 1..40u32 {
            let ceiling = Duration::from_secs(1)
                .saturating_mul(1 << (n - 1).min(20))
                .min(Duration::from_secs(300));
            let d = b.next(u64::MAX - 7, None);
            assert!(d <= ceiling, "failure {n}: {d:?} > {ceiling:?}");
        }
        assert_eq!(b.failures(), 39);
        // Full jitter reaches both ends.
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(300));
        assert_eq!(b.next(0, None), Duration::ZERO);
        assert_eq!(b.next(2000, None), Duration::from_millis(2000));
        // Retry-After is a floor, capped at an hour.
        b.reset();
        assert_eq!(
            b.next(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            b.next(0, Some(Duration::from_secs(1 << 40))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn transient_install_errors_are_told_apart() {
        let gave_up = SourceError::GaveUp {
            url: "u".into(),
            attempts: 3,
            last: "x".into(),
        };
        assert!(is_transient(&ClientError::Source(gave_up)));
        assert!(is_transient(&ClientError::Source(SourceError::Cancelled)));
        let mid_stream = ClientError::Bundle(BundleError::Io {
            context: "reading".into(),
            error: std::io::Error::other(SourceError::Cancelled),
        });
        assert!(is_transient(&mid_stream));
        let forbidden = ClientError::Source(SourceError::Permanent {
            url: "u".into(),
            status: 403,
            hint: "h",
        });
        assert!(!is_transient(&forbidden));
        let nested = ClientError::Bundle(BundleError::Io {
            context: "reading".into(),
            error: std::io::Error::other(SourceError::Permanent {
                url: "u".into(),
                status: 404,
                hint: "h",
            }),
        });
        assert!(!is_transient(&nested));
    }

    #[test]
    fn log_tail_is_bounded() {
        let log = Log {
            sink: Arc::new(|_, _| {}),
            ring: Arc::default(),
            file: None,
        };
        for i in 0..100 {
            log.line(Level::Info, &format!("line {i} {}", "é".repeat(2000)));
        }
        log.line(Level::Debug, "not kept");
        let tail = log.tail();
        assert!(tail.len() <= MAX_LOG_TAIL);
        assert!(tail.ends_with(&"é".repeat(10)));
        assert!(!tail.contains("not kept"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = Log {
            sink: Arc::new(|_, _| {}),
            ring: Arc::default(),
            file: Some(path.clone()),
        };
        for i in 0..2000 {
            log.line(Level::Info, &format!("line {i} {}", "x".repeat(100)));
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= LOG_FILE_MAX + 200 && size(&rotated(&path)) <= LOG_FILE_MAX + 200);
        // A new daemon (after a reboot) sees the previous one's lines.
        let after_reboot = Log {
            sink: Arc::new(|_, _| {}),
            ring: Arc::default(),
            file: Some(path),
        };
        let lines = after_reboot.lines();
        assert_eq!(lines.len(), LOG_LINES);
        assert!(lines.last().unwrap().contains("line 1999"));
    }
}
