//! The resuming HTTP body: reconnects with `Range`/`If-Range` after a dropped connection, a
//! stall or a trickle below the low-speed limit, within bounded retries.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ota_protocol::client::load_ca_certificates;
use reqwest::blocking::{Client, Response};
use reqwest::header;

use super::error::SourceError;
use super::failure::ReadFailure;
use super::resume::{check_first, check_resume, classify, ResponseFacts, StatusClass, Validator};
use super::retry::retry_wait;
use crate::config::HttpConfig;
use crate::random::random_u64;

/// Why a request or a body read failed, for the retry and give-up messages: a stall names
/// itself and the read timeout; anything else lists its causes (reqwest's own message alone,
/// e.g. "error decoding response body", names neither).
pub(super) fn describe(e: &(dyn std::error::Error + 'static), read_timeout: Duration) -> String {
    let mut text = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let stalled = err
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_timeout() && !r.is_connect())
            || err
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut);
        if stalled {
            return format!(
                "the server sent no data for {} ms (read timeout)",
                read_timeout.as_millis()
            );
        }
        let t = err.to_string();
        if !text.contains(&t) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&t);
        }
        cur = err.source();
    }
    text
}

/// The extra request headers (a device's `Authorization`), values marked sensitive so they are never logged.
pub(super) fn header_map(extra: &[(String, String)]) -> Result<header::HeaderMap, SourceError> {
    let mut headers = header::HeaderMap::new();
    for (name, value) in extra {
        let name = header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SourceError::Setup(format!("invalid HTTP header name {name:?}")))?;
        let mut value = header::HeaderValue::from_str(value)
            .map_err(|_| SourceError::Setup(format!("invalid value for HTTP header {name}")))?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// THE blocking HTTP client of bundle downloads (streamed and ranged): timeouts and extra CA from `cfg`.
pub(super) fn build_client(cfg: &HttpConfig) -> Result<Client, SourceError> {
    let mut builder = Client::builder()
        .connect_timeout(cfg.connect_timeout)
        // reqwest's blocking timeout applies to each operation (sending, every body
        // read), i.e. it is a stall timeout, not a limit on the whole download.
        .timeout(cfg.read_timeout);
    if let Some(ca) = &cfg.ca_file {
        for cert in load_ca_certificates(ca).map_err(|e| SourceError::Setup(e.message))? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| SourceError::Setup(e.to_string()))
}

/// Sleeps `delay` before a retry, waking every 50 ms to stop at once when `cancel` is set.
pub(super) fn sleep_unless_cancelled(
    delay: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<(), SourceError> {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(SourceError::Cancelled);
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// Failed attempts in a row without progress, and the wait the server last asked for: the retry policy both the
/// streaming and the ranged reader follow (bounded attempts, backoff with jitter, never sooner than Retry-After,
/// a cancel wins).
#[derive(Debug, Default)]
pub(super) struct Retries {
    failures: u32,
    retry_after: Option<Duration>,
}

impl Retries {
    /// Real progress: the count of failures starts again.
    pub(super) fn progressed(&mut self) {
        self.failures = 0;
    }

    /// A 408/425/429/5xx answer: keeps its `Retry-After` for the next wait and says what failed.
    pub(super) fn refused(&mut self, resp: &Response, status: u16) -> String {
        self.retry_after = header_str(resp, header::RETRY_AFTER)
            .as_deref()
            .and_then(ota_protocol::device::parse_retry_after);
        match self.retry_after {
            Some(d) => format!("HTTP {status} (Retry-After: {} s)", d.as_secs()),
            None => format!("HTTP {status}"),
        }
    }

    /// Records a failed attempt at `url`; sleeps the backoff or gives up.
    pub(super) fn failed(
        &mut self,
        url: &str,
        cfg: &HttpConfig,
        cancel: Option<&AtomicBool>,
        why: String,
    ) -> Result<(), SourceError> {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(SourceError::Cancelled);
        }
        self.failures += 1;
        if self.failures > cfg.retries {
            return Err(SourceError::GaveUp {
                url: url.to_string(),
                attempts: self.failures,
                last: why,
            });
        }
        let delay = retry_wait(
            self.failures,
            cfg.retry_delay,
            random_u64(),
            self.retry_after.take(),
        );
        sleep_unless_cancelled(delay, cancel)
    }
}

/// The low-speed check of one connection: a connection that averages fewer than
/// [`HttpConfig::low_speed_limit`] bytes per second over [`HttpConfig::low_speed_time`] counts as failed, so
/// a server trickling a byte just inside every read timeout cannot hold a robot for as long as it likes.
pub(super) struct SpeedWindow {
    start: Instant,
    bytes: u64,
}

impl SpeedWindow {
    /// A window starting now (at each new connection).
    pub(super) fn new() -> SpeedWindow {
        SpeedWindow {
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` new bytes. Returns whether the window has delivered enough to count as progress, and the
    /// failure to record when a window ended below the limit.
    pub(super) fn account(&mut self, n: usize, cfg: &HttpConfig) -> (bool, Option<String>) {
        let needed = (cfg.low_speed_limit as f64 * cfg.low_speed_time.as_secs_f64()) as u64;
        self.bytes += n as u64;
        let enough = cfg.low_speed_limit == 0 || self.bytes >= needed;
        let elapsed = self.start.elapsed();
        if elapsed < cfg.low_speed_time {
            return (enough, None);
        }
        let slow = (!enough).then(|| {
            format!(
                "the server sent only {} bytes in {:.1} s, below the low-speed limit of {} bytes/s",
                self.bytes,
                elapsed.as_secs_f64(),
                cfg.low_speed_limit
            )
        });
        *self = SpeedWindow::new();
        (enough, slow)
    }
}

/// A resuming HTTP body.
pub(super) struct HttpReader {
    client: Client,
    url: String,
    headers: header::HeaderMap,
    cfg: HttpConfig,
    body: Option<Response>,
    pos: u64,
    /// The body's length, once the first response said it.
    pub(super) total: Option<u64>,
    validator: Validator,
    started: bool,
    retries: Retries,
    /// The current low-speed window.
    window: SpeedWindow,
    cancel: Option<Arc<AtomicBool>>,
    /// Where the kind of the error that ends the body is left for the installer.
    failure: ReadFailure,
}

enum Attempt {
    Retry(String),
    Fatal(SourceError),
}

pub(super) fn header_str(resp: &Response, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl HttpReader {
    /// A reader for `url` with `extra` headers; nothing is sent until [`HttpReader::connect`].
    pub(super) fn new(
        url: &str,
        extra: &[(String, String)],
        cfg: &HttpConfig,
        cancel: Option<Arc<AtomicBool>>,
        failure: ReadFailure,
    ) -> Result<HttpReader, SourceError> {
        let headers = header_map(extra)?;
        let client = build_client(cfg)?;
        Ok(HttpReader {
            client,
            url: url.to_string(),
            headers,
            cfg: cfg.clone(),
            body: None,
            pos: 0,
            total: None,
            validator: Validator::default(),
            started: false,
            retries: Retries::default(),
            window: SpeedWindow::new(),
            cancel,
            failure,
        })
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn request(&mut self) -> Result<Response, Attempt> {
        let mut req = self.client.get(&self.url).headers(self.headers.clone());
        if self.started {
            req = req.header(header::RANGE, format!("bytes={}-", self.pos));
            if let Some(v) = self.validator.if_range() {
                req = req.header(header::IF_RANGE, v);
            }
        }
        let resp = req
            .send()
            .map_err(|e| Attempt::Retry(describe(&e, self.cfg.read_timeout)))?;
        let status = resp.status().as_u16();
        match classify(status) {
            StatusClass::Ok => {}
            StatusClass::Retry => return Err(Attempt::Retry(self.retries.refused(&resp, status))),
            StatusClass::Permanent(hint) => {
                return Err(Attempt::Fatal(SourceError::Permanent {
                    url: self.url.clone(),
                    status,
                    hint,
                }))
            }
        }
        let facts = ResponseFacts {
            status,
            content_range: header_str(&resp, header::CONTENT_RANGE),
            content_length: resp.content_length(),
            etag: header_str(&resp, header::ETAG),
            last_modified: header_str(&resp, header::LAST_MODIFIED),
        };
        if self.started {
            check_resume(self.pos, self.total, &self.validator, &facts).map_err(|detail| {
                Attempt::Fatal(SourceError::CannotResume {
                    url: self.url.clone(),
                    detail,
                })
            })?;
        } else {
            let (total, validator) = check_first(&facts).map_err(Attempt::Retry)?;
            self.total = total;
            self.validator = validator;
            self.started = true;
        }
        Ok(resp)
    }

    /// Records a failure without progress; sleeps the backoff or gives up.
    fn failed(&mut self, why: String) -> Result<(), SourceError> {
        self.retries
            .failed(&self.url, &self.cfg, self.cancel.as_deref(), why)
    }

    pub(super) fn connect(&mut self) -> Result<(), SourceError> {
        loop {
            if self.cancelled() {
                return Err(SourceError::Cancelled);
            }
            match self.request() {
                Ok(r) => {
                    self.body = Some(r);
                    self.window = SpeedWindow::new();
                    return Ok(());
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => self.failed(why)?,
            }
        }
    }

    /// Counts `n` new bytes: a window that has delivered enough is real progress (the failure count starts
    /// again); a window that ends below the limit is a failed attempt. Returns the failure to record, if any.
    fn account(&mut self, n: usize) -> Option<String> {
        let (enough, slow) = self.window.account(n, &self.cfg);
        if enough {
            self.retries.progressed();
        }
        slow
    }
}

impl HttpReader {
    /// The next bytes of the body, reconnecting as needed; the error is the download's verdict.
    fn next_bytes(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.cancelled() {
                return Err(SourceError::Cancelled);
            }
            if self.body.is_none() {
                self.connect()?;
            }
            let body = self.body.as_mut().expect("connected");
            match body.read(buf) {
                Ok(0) => {
                    if self.total.is_some_and(|t| self.pos < t) {
                        self.body = None;
                        self.failed("the connection closed before the end of the bundle".into())?;
                        continue;
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    self.pos += n as u64;
                    if let Some(why) = self.account(n) {
                        // Keep the bytes (the next attempt resumes after them), drop the connection.
                        self.body = None;
                        self.failed(why)?;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.body = None;
                    // A body error is an io::Error around the reqwest error: describe that.
                    let why = match e.get_ref() {
                        Some(inner) => describe(inner, self.cfg.read_timeout),
                        None => describe(&e, self.cfg.read_timeout),
                    };
                    self.failed(why)?;
                }
            }
        }
    }
}

impl Read for HttpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.next_bytes(buf).map_err(|e| {
            self.failure.built(e.kind());
            io::Error::other(e)
        })
    }
}
