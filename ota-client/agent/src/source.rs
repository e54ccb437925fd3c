//! Where a bundle comes from: a local file or an http(s) URL, read front to back exactly
//! once and streamed straight into the verifying reader (never staged on disk).
//!
//! A download survives dropped connections: it reconnects with `Range: bytes=<pos>-` and
//! `If-Range`, and accepts the continuation only if the server answers `206` with a
//! `Content-Range` starting exactly where it stopped, for the same total length and the same
//! `ETag`, so bytes of a changed file are never spliced onto the old ones. Retries are
//! bounded (per lack of progress) with exponential backoff and jitter, waiting at least as long
//! as a 429/5xx answer's `Retry-After` asks (up to the backoff's cap); 401/403/404/410 stop
//! at once; a body that stalls for the read timeout counts as a dropped connection.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header;

use crate::config::HttpConfig;
use crate::readahead::ReadAhead;

/// A bundle location given on the command line or by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleSource {
    /// A local file.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
    /// An `http://` or `https://` URL fetched with extra request headers (a device's
    /// `Authorization: Bearer`), sent again on every resumed request.
    Http(HttpRequest),
}

/// An HTTP download with extra headers. `Debug` and `Display` never show header values.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The URL.
    pub url: String,
    /// Extra request headers (name, value).
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// A request for `url` with a bearer token.
    pub fn bearer(url: &str, token: &str) -> HttpRequest {
        HttpRequest {
            url: url.to_string(),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
        }
    }
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
    }
}

impl BundleSource {
    /// URLs start with `http://` or `https://`; anything else is a path.
    pub fn parse(text: &str) -> BundleSource {
        if text.starts_with("http://") || text.starts_with("https://") {
            BundleSource::Url(text.to_string())
        } else {
            BundleSource::File(PathBuf::from(text))
        }
    }
}

impl std::fmt::Display for BundleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleSource::File(p) => write!(f, "{}", p.display()),
            BundleSource::Url(u) => f.write_str(u),
            BundleSource::Http(r) => f.write_str(&r.url),
        }
    }
}

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A local file cannot be opened.
    #[error("cannot open bundle {}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The server says the bundle is not there or not for us: retrying cannot help.
    #[error("download of {url} failed: HTTP {status}: {hint}")]
    Permanent {
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// What to do.
        hint: &'static str,
    },
    /// Retries exhausted.
    #[error("download of {url} failed after {attempts} attempts without progress: {last}")]
    GaveUp {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The download cannot continue without splicing two different files.
    #[error("download of {url} cannot resume: {detail}; run the install again")]
    CannotResume {
        /// The URL.
        url: String,
        /// What did not match.
        detail: String,
    },
    /// The HTTP client cannot be set up (bad CA file, ...).
    #[error("cannot set up HTTP: {0}")]
    Setup(String),
    /// Cancelled by the caller.
    #[error("download cancelled")]
    Cancelled,
}

/// An opened bundle.
pub struct Opened {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// Total size, if known.
    pub size: Option<u64>,
}

/// Opens `source`. For URLs the first request is made here, so a 404 fails at once.
pub fn open(
    source: &BundleSource,
    http: &HttpConfig,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<Opened, SourceError> {
    match source {
        BundleSource::File(path) => {
            let file = File::open(path).map_err(|error| SourceError::File {
                path: path.clone(),
                error,
            })?;
            let size = file.metadata().ok().map(|m| m.len());
            Ok(Opened {
                reader: Box::new(file),
                size,
            })
        }
        BundleSource::Url(_) | BundleSource::Http(_) => {
            let (url, headers) = match source {
                BundleSource::Http(r) => (r.url.as_str(), r.headers.as_slice()),
                BundleSource::Url(u) => (u.as_str(), &[][..]),
                BundleSource::File(_) => unreachable!("matched above"),
            };
            let mut reader = HttpReader::new(url, headers, http, cancel)?;
            reader.connect()?;
            let size = reader.total;
            let reader = ReadAhead::new(Box::new(reader)).map_err(|e| {
                SourceError::Setup(format!("cannot start the download thread: {e}"))
            })?;
            Ok(Opened {
                reader: Box::new(reader),
                size,
            })
        }
    }
}

/// What identifies the file on the server, sent back as `If-Range`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validator {
    /// `ETag` of the first response.
    pub etag: Option<String>,
    /// `Last-Modified` of the first response.
    pub last_modified: Option<String>,
}

impl Validator {
    /// The `If-Range` value: a strong ETag, else the Last-Modified date (weak ETags are not
    /// allowed in If-Range).
    pub fn if_range(&self) -> Option<&str> {
        match &self.etag {
            Some(e) if !e.starts_with("W/") => Some(e),
            _ => self.last_modified.as_deref(),
        }
    }
}

/// The response headers the resume logic looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    /// HTTP status.
    pub status: u16,
    /// `Content-Range`.
    pub content_range: Option<String>,
    /// `Content-Length`.
    pub content_length: Option<u64>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
}

/// What to do with a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx.
    Ok,
    /// Retrying cannot help.
    Permanent(&'static str),
    /// Try again later.
    Retry,
}

/// Classifies a status code.
pub fn classify(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Ok,
        401 | 403 => StatusClass::Permanent(
            "the server refuses access to this bundle (check the robot's credentials)",
        ),
        404 | 410 => StatusClass::Permanent("the server does not have this bundle (check the URL)"),
        416 => StatusClass::Permanent("the server cannot serve the requested range"),
        408 | 425 | 429 | 500..=599 => StatusClass::Retry,
        _ => StatusClass::Permanent("unexpected response"),
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end).then_some((start, end, total))
}

/// Checks the first response (no Range). Returns the total length and the validator.
pub fn check_first(resp: &ResponseFacts) -> Result<(Option<u64>, Validator), String> {
    if resp.status != 200 {
        return Err(format!("expected HTTP 200, got {}", resp.status));
    }
    Ok((
        resp.content_length,
        Validator {
            etag: resp.etag.clone(),
            last_modified: resp.last_modified.clone(),
        },
    ))
}

/// Checks that a response to `Range: bytes=<pos>-` continues the same file exactly at `pos`.
pub fn check_resume(
    pos: u64,
    total: Option<u64>,
    validator: &Validator,
    resp: &ResponseFacts,
) -> Result<(), String> {
    if resp.status == 200 {
        return Err("the server sent the whole file instead of the missing range (the bundle changed on the server, or it does not support ranges)".into());
    }
    if resp.status != 206 {
        return Err(format!(
            "expected HTTP 206 for a range request, got {}",
            resp.status
        ));
    }
    let Some((start, end, range_total)) =
        resp.content_range.as_deref().and_then(parse_content_range)
    else {
        return Err("a 206 response without a valid Content-Range".into());
    };
    if start != pos {
        return Err(format!(
            "asked for byte {pos} onwards, the server sent from byte {start}"
        ));
    }
    if let (Some(t), Some(rt)) = (total, range_total) {
        if t != rt {
            return Err(format!(
                "the file is now {rt} bytes, it was {t} (the bundle changed on the server)"
            ));
        }
    }
    if let Some(t) = total.or(range_total) {
        if end + 1 != t {
            return Err(format!(
                "the server sent bytes {start}-{end} of {t}, not the rest of the file"
            ));
        }
    }
    if let (Some(a), Some(b)) = (&validator.etag, &resp.etag) {
        if a != b {
            return Err(format!(
                "ETag changed from {a} to {b} (the bundle changed on the server)"
            ));
        }
    }
    Ok(())
}

/// The longest single wait between download attempts, whatever the backoff or the server says.
/// With the bounded retry count it bounds how long a hostile server can hold an install.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Delay before retry number `attempt` (1-based): `base * 2^(attempt-1)` capped at
/// [`MAX_RETRY_WAIT`], then a random 50-100 % of it so a fleet does not reconnect in lockstep.
pub fn backoff(attempt: u32, base: Duration, random: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_RETRY_WAIT);
    let ms = capped.as_millis() as u64;
    let half = ms / 2;
    Duration::from_millis(half + random % (ms - half + 1))
}

/// The wait before retry number `attempt`: the backoff, or longer when the server's
/// `Retry-After` asked for more (a server shedding load says when to come back), never more
/// than [`MAX_RETRY_WAIT`].
pub fn retry_wait(
    attempt: u32,
    base: Duration,
    random: u64,
    retry_after: Option<Duration>,
) -> Duration {
    let own = backoff(attempt, base, random);
    match retry_after {
        Some(asked) => own.max(asked.min(MAX_RETRY_WAIT)),
        None => own,
    }
}

/// Why a request or a body read failed, for the retry and give-up messages: a stall names
/// itself and the read timeout; anything else lists its causes (reqwest's own message alone,
/// e.g. "error decoding response body", names neither).
fn describe(e: &(dyn std::error::Error + 'static), read_timeout: Duration) -> String {
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

fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A resuming HTTP body.
struct HttpReader {
    client: Client,
    url: String,
    headers: header::HeaderMap,
    cfg: HttpConfig,
    body: Option<Response>,
    pos: u64,
    total: Option<u64>,
    validator: Validator,
    started: bool,
    failures: u32,
    /// Start of the current low-speed window, and bytes received in it.
    window_start: Instant,
    window_bytes: u64,
    cancel: Option<Arc<AtomicBool>>,
    /// The `Retry-After` of the last refused request, for the next wait.
    retry_after: Option<Duration>,
}

enum Attempt {
    Retry(String),
    Fatal(SourceError),
}

fn header_str(resp: &Response, name: header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl HttpReader {
    fn new(
        url: &str,
        extra: &[(String, String)],
        cfg: &HttpConfig,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<HttpReader, SourceError> {
        let mut headers = header::HeaderMap::new();
        for (name, value) in extra {
            let name = header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SourceError::Setup(format!("invalid HTTP header name {name:?}")))?;
            let mut value = header::HeaderValue::from_str(value)
                .map_err(|_| SourceError::Setup(format!("invalid value for HTTP header {name}")))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let mut builder = Client::builder()
            .connect_timeout(cfg.connect_timeout)
            // reqwest's blocking timeout applies to each operation (sending, every body
            // read), i.e. it is a stall timeout, not a limit on the whole download.
            .timeout(cfg.read_timeout);
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                SourceError::Setup(format!("cannot read CA file {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                SourceError::Setup(format!(
                    "CA file {} is not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| SourceError::Setup(e.to_string()))?;
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
            failures: 0,
            window_start: Instant::now(),
            window_bytes: 0,
            cancel,
            retry_after: None,
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
            StatusClass::Retry => {
                self.retry_after = header_str(&resp, header::RETRY_AFTER)
                    .as_deref()
                    .and_then(ota_protocol::device::parse_retry_after);
                let why = match self.retry_after {
                    Some(d) => format!("HTTP {status} (Retry-After: {} s)", d.as_secs()),
                    None => format!("HTTP {status}"),
                };
                return Err(Attempt::Retry(why));
            }
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
        self.failures += 1;
        if self.failures > self.cfg.retries {
            return Err(SourceError::GaveUp {
                url: self.url.clone(),
                attempts: self.failures,
                last: why,
            });
        }
        let delay = retry_wait(
            self.failures,
            self.cfg.retry_delay,
            random(),
            self.retry_after.take(),
        );
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if self.cancelled() {
                return Err(SourceError::Cancelled);
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        Ok(())
    }

    fn connect(&mut self) -> Result<(), SourceError> {
        loop {
            if self.cancelled() {
                return Err(SourceError::Cancelled);
            }
            match self.request() {
                Ok(r) => {
                    self.body = Some(r);
                    self.window_start = Instant::now();
                    self.window_bytes = 0;
                    return Ok(());
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => self.failed(why)?,
            }
        }
    }

    /// Bytes a connection must deliver per low-speed window.
    fn low_speed_bytes(&self) -> u64 {
        (self.cfg.low_speed_limit as f64 * self.cfg.low_speed_time.as_secs_f64()) as u64
    }

    /// Counts `n` new bytes: a window that has delivered enough is real progress (the failure count starts
    /// again); a window that ends below the limit is a failed attempt. Returns the failure to record, if any.
    fn account(&mut self, n: usize) -> Option<String> {
        self.window_bytes += n as u64;
        if self.cfg.low_speed_limit == 0 || self.window_bytes >= self.low_speed_bytes() {
            self.failures = 0;
        }
        let elapsed = self.window_start.elapsed();
        if elapsed < self.cfg.low_speed_time {
            return None;
        }
        let slow = self.cfg.low_speed_limit > 0 && self.window_bytes < self.low_speed_bytes();
        let why = slow.then(|| {
            format!(
                "the server sent only {} bytes in {:.1} s, below the low-speed limit of {} bytes/s",
                self.window_bytes,
                elapsed.as_secs_f64(),
                self.cfg.low_speed_limit
            )
        });
        self.window_start = Instant::now();
        self.window_bytes = 0;
        why
    }
}

impl Read for HttpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.cancelled() {
                return Err(io::Error::other(SourceError::Cancelled));
            }
            if self.body.is_none() {
                self.connect().map_err(io::Error::other)?;
            }
            let body = self.body.as_mut().expect("connected");
            match body.read(buf) {
                Ok(0) => {
                    if self.total.is_some_and(|t| self.pos < t) {
                        self.body = None;
                        self.failed("the connection closed before the end of the bundle".into())
                            .map_err(io::Error::other)?;
                        continue;
                    }
                    return Ok(0);
                }
                Ok(n) => {
                    self.pos += n as u64;
                    if let Some(why) = self.account(n) {
                        // Keep the bytes (the next attempt resumes after them), drop the connection.
                        self.body = None;
                        self.failed(why).map_err(io::Error::other)?;
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
                    self.failed(why).map_err(io::Error::other)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(range: &str, etag: Option<&str>) -> ResponseFacts {
        ResponseFacts {
            status: 206,
            content_range: Some(range.into()),
            etag: etag.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn sources() {
        assert_eq!(
            BundleSource::parse("https://x/b.otab"),
            BundleSource::Url("https://x/b.otab".into())
        );
        assert_eq!(
            BundleSource::parse("http://x/b"),
            BundleSource::Url("http://x/b".into())
        );
        assert_eq!(
            BundleSource::parse("/tmp/b.otab"),
            BundleSource::File("/tmp/b.otab".into())
        );
        assert_eq!(
            BundleSource::parse("httpx.otab"),
            BundleSource::File("httpx.otab".into())
        );
    }

    #[test]
    fn header_values_are_never_displayed() {
        let r = HttpRequest::bearer("http://x/b", "ota1.secret");
        assert_eq!(r.headers[0].1, "Bearer ota1.secret");
        let shown = format!("{r:?} {}", BundleSource::Http(r.clone()));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("authorization") && shown.contains("http://x/b"));
        let bad = HttpRequest {
            url: "http://x/b".into(),
            headers: vec![("bad name".into(), "v".into())],
        };
        let err = open(&BundleSource::Http(bad), &HttpConfig::default(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("invalid HTTP header name"), "{err}");
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, 999, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }

    #[test]
    fn status_classes() {
        for s in [401, 403, 404, 410, 416] {
            assert!(matches!(classify(s), StatusClass::Permanent(_)), "{s}");
        }
        for s in [429, 500, 502, 503, 504] {
            assert_eq!(classify(s), StatusClass::Retry, "{s}");
        }
        assert_eq!(classify(206), StatusClass::Ok);
    }

    #[test]
    fn resume_accepts_only_the_exact_continuation_of_the_same_file() {
        let v = Validator {
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        assert_eq!(v.if_range(), Some("\"v1\""));
        assert!(check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-999/1000", Some("\"v1\""))
        )
        .is_ok());
        assert!(check_resume(100, Some(1000), &v, &partial("bytes 100-999/1000", None)).is_ok());
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-999/1000", Some("\"v2\"")),
        )
        .unwrap_err();
        assert!(e.contains("ETag"), "{e}");
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 0-999/1000", Some("\"v1\"")),
        )
        .unwrap_err();
        assert!(e.contains("from byte 0"), "{e}");
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-1199/1200", Some("\"v1\"")),
        )
        .unwrap_err();
        assert!(e.contains("changed"), "{e}");
        let e = check_resume(
            100,
            Some(1000),
            &v,
            &partial("bytes 100-499/1000", Some("\"v1\"")),
        )
        .unwrap_err();
        assert!(e.contains("not the rest"), "{e}");
        // If-Range failed: the server sends the whole (new) file with 200
        let whole = ResponseFacts {
            status: 200,
            content_length: Some(1000),
            ..Default::default()
        };
        assert!(check_resume(100, Some(1000), &v, &whole)
            .unwrap_err()
            .contains("whole file"));
        assert!(check_resume(
            100,
            Some(1000),
            &v,
            &ResponseFacts {
                status: 206,
                ..Default::default()
            }
        )
        .is_err());
    }

    #[test]
    fn weak_etags_fall_back_to_last_modified() {
        let v = Validator {
            etag: Some("W/\"x\"".into()),
            last_modified: Some("Tue, 01 Jan 2030 00:00:00 GMT".into()),
        };
        assert_eq!(v.if_range(), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert_eq!(Validator::default().if_range(), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        for attempt in 1..40 {
            let full = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(60));
            for r in [0, 1, 12345, u64::MAX] {
                let d = backoff(attempt, base, r);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} vs {full:?}"
                );
            }
        }
        assert_ne!(backoff(5, base, 1), backoff(5, base, 777));
        assert_eq!(backoff(1, Duration::ZERO, 99), Duration::ZERO);
    }

    #[test]
    fn retry_after_lengthens_the_wait_up_to_the_cap_and_never_shortens_it() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            for r in [0, 7, u64::MAX] {
                let own = backoff(attempt, base, r);
                assert_eq!(retry_wait(attempt, base, r, None), own);
                for asked in [0, 1, 30, 60, 61, 3600, u64::MAX / 2] {
                    let asked = Duration::from_secs(asked);
                    let wait = retry_wait(attempt, base, r, Some(asked));
                    assert!(
                        wait >= own,
                        "a short Retry-After never shortens the backoff"
                    );
                    assert!(wait <= MAX_RETRY_WAIT.max(own));
                    assert_eq!(wait, own.max(asked.min(MAX_RETRY_WAIT)));
                }
            }
        }
    }
}
