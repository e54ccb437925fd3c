//! The blocking reqwest implementation of [`ApiClient`](super::ApiClient) (cargo feature `client`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use super::ErrorKind;
use crate::admin::{
    BundleInfo, CreateRolloutRequest, DeviceDetail, DeviceInfo, PublishResponse, RolloutDetail,
    RolloutInfo,
};
use crate::device::{
    parse_retry_after, EnrollRequest, EnrollResponse, PollRequest, PollResponse, ReportRequest,
    ReportResponse,
};
use crate::fleet::{DeviceLabels, GroupInfo, GroupSettings, MetricHistory};
use crate::{paths, ErrorBody};

/// A failed call, in words an operator can act on. `Display` is one line: `path: HTTP status: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.line())]
pub struct ApiError {
    /// What the caller should do about it.
    pub kind: ErrorKind,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The server's `ErrorBody`, or what went wrong on the way.
    pub message: String,
    /// The server's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// The path (or URL) that was called; empty for a failure before any call (client setup).
    pub path: String,
}

impl ApiError {
    fn line(&self) -> String {
        let mut line = String::new();
        if !self.path.is_empty() {
            line.push_str(&self.path);
            line.push_str(": ");
        }
        if let Some(status) = self.status {
            line.push_str(&format!("HTTP {status}: "));
        }
        line.push_str(&self.message);
        line
    }

    /// A local mistake (setup, file): retrying cannot help.
    fn setup(path: &str, message: String) -> ApiError {
        ApiError {
            kind: ErrorKind::GiveUp,
            status: None,
            message,
            retry_after: None,
            path: path.to_string(),
        }
    }
}

/// Where and how to reach the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Base URL, e.g. `https://ota.example.com:8443` (a trailing `/` is ignored).
    pub base_url: String,
    /// A PEM CA certificate (bundle) to trust, for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Bearer token sent with every call (admin token, or a device's token).
    pub token: Option<String>,
    /// Limit on a whole call (uploads excepted: the server verifies a bundle before answering).
    pub timeout: Duration,
    /// Limit on opening the connection.
    pub connect_timeout: Duration,
}

impl ClientOptions {
    /// Options for `base_url` with no CA file, no token, a 60 s call and a 10 s connect timeout.
    pub fn new(base_url: impl Into<String>) -> ClientOptions {
        ClientOptions {
            base_url: base_url.into(),
            ca_file: None,
            token: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Reads a PEM CA file; the error names the file and says what is wrong with it.
pub fn load_ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, ApiError> {
    let pem = std::fs::read(path)
        .map_err(|e| ApiError::setup("", format!("cannot read CA file {}: {e}", path.display())))?;
    let not_pem = |why: String| {
        ApiError::setup(
            "",
            format!("CA file {} is not a PEM certificate{why}", path.display()),
        )
    };
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| not_pem(format!(": {e}")))?;
    if certs.is_empty() {
        return Err(not_pem(" (no BEGIN CERTIFICATE block)".into()));
    }
    Ok(certs)
}

/// A client of one server. Clones are cheap and share the connection pool.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: Client,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl ApiClient {
    /// Checks the base URL, loads the CA file and sets up the connection pool.
    pub fn new(options: &ClientOptions) -> Result<ApiClient, ApiError> {
        let base = options.base_url.trim_end_matches('/');
        let bad_url = || {
            ApiError::setup(
                "",
                format!(
                    "server URL {:?} must start with http:// or https:// and name a host, e.g. https://ota.example.com:8443",
                    options.base_url
                ),
            )
        };
        let url = reqwest::Url::parse(base).map_err(|_| bad_url())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad_url());
        }
        // No client-wide timeout: each call sets its own, so `with_timeout` is a cheap clone and uploads can
        // take as long as they need.
        let mut builder = Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(None);
        if let Some(ca) = &options.ca_file {
            for cert in load_ca_certificates(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| {
            let message = match &options.ca_file {
                Some(ca) => format!("CA file {} is not usable: {}", ca.display(), one_line(&e)),
                None => format!("cannot set up the HTTP client: {}", one_line(&e)),
            };
            ApiError::setup("", message)
        })?;
        Ok(ApiClient {
            http,
            base: base.to_string(),
            token: options.token.clone(),
            timeout: options.timeout,
        })
    }

    /// This client with another bearer token.
    pub fn with_token(&self, token: &str) -> ApiClient {
        ApiClient {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// This client with another limit on each call (e.g. short, for progress reports that may be dropped).
    pub fn with_timeout(&self, timeout: Duration) -> ApiClient {
        ApiClient {
            timeout,
            ..self.clone()
        }
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of `path`; an absolute `http(s)://` URL (e.g. an offer's download URL) is kept as it is.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// `GET` a JSON resource.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(self.http.get(self.url(path)), path)
    }

    /// `POST` a JSON body, decode the JSON answer.
    pub fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(self.http.post(self.url(path)).json(body), path)
    }

    /// `PUT` a JSON body, decode the JSON answer.
    pub fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.call(self.http.put(self.url(path)).json(body), path)
    }

    /// `DELETE` a resource, decode the JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(self.http.delete(self.url(path)), path)
    }

    // --- device protocol ---

    /// `POST /api/devices/enroll` (the enrollment secret is in the request; no token needed).
    pub fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, ApiError> {
        self.post(paths::ENROLL, request)
    }

    /// `POST /api/device/poll` with the device's token.
    pub fn poll(&self, request: &PollRequest) -> Result<PollResponse, ApiError> {
        self.post(paths::POLL, request)
    }

    /// `POST /api/device/report` with the device's token.
    pub fn report(&self, request: &ReportRequest) -> Result<ReportResponse, ApiError> {
        self.post(paths::REPORT, request)
    }

    // --- admin API ---

    /// Uploads a bundle file, streamed from disk (never read into memory whole).
    pub fn publish_file(&self, bundle: &Path) -> Result<PublishResponse, ApiError> {
        let open_error = |e: std::io::Error| {
            ApiError::setup(
                paths::BUNDLES,
                format!("cannot open bundle {}: {e}", bundle.display()),
            )
        };
        let file = File::open(bundle).map_err(open_error)?;
        let len = file.metadata().map_err(open_error)?.len();
        self.publish_body(Body::sized(file, len), len)
    }

    /// Uploads bundle bytes held in memory.
    pub fn publish_bytes(&self, bundle: Vec<u8>) -> Result<PublishResponse, ApiError> {
        let len = bundle.len() as u64;
        self.publish_body(Body::from(bundle), len)
    }

    fn publish_body(&self, body: Body, len: u64) -> Result<PublishResponse, ApiError> {
        // The server refuses a bad token before reading the body, and a client still sending a large body then
        // sees a broken connection instead of the answer: check server and token first, cheaply.
        self.get::<IgnoredAny>(paths::BUNDLES)?;
        let request = self
            .http
            .post(self.url(paths::BUNDLES))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let response = self.send(request, None).map_err(|e| {
            let mut error = self.transport_error(paths::BUNDLES, &e);
            error.message = format!(
                "{}; if the server closed the connection early, the bundle ({len} bytes) may exceed its \
                 --max-upload-bytes",
                error.message
            );
            error
        })?;
        self.answer(response, paths::BUNDLES)
    }

    /// `GET /api/bundles`.
    pub fn bundles(&self) -> Result<Vec<BundleInfo>, ApiError> {
        self.get(paths::BUNDLES)
    }

    /// `GET /api/rollouts`.
    pub fn rollouts(&self) -> Result<Vec<RolloutInfo>, ApiError> {
        self.get(paths::ROLLOUTS)
    }

    /// `GET /api/rollouts/{id}`: one rollout with its devices.
    pub fn rollout(&self, id: u64) -> Result<RolloutDetail, ApiError> {
        self.get(&format!("{}/{id}", paths::ROLLOUTS))
    }

    /// `POST /api/rollouts`.
    pub fn create_rollout(&self, request: &CreateRolloutRequest) -> Result<RolloutInfo, ApiError> {
        self.post(paths::ROLLOUTS, request)
    }

    /// `POST /api/rollouts/{id}/{action}` with `action` one of `pause`, `resume`, `abort`.
    pub fn rollout_action(&self, id: u64, action: &str) -> Result<RolloutInfo, ApiError> {
        let path = format!("{}/{id}/{action}", paths::ROLLOUTS);
        self.call(self.http.post(self.url(&path)), &path)
    }

    /// `GET /api/devices`: the inventory.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, ApiError> {
        self.get(paths::DEVICES)
    }

    /// `GET /api/devices/{id}`: one device with its reports.
    pub fn device(&self, id: &str) -> Result<DeviceDetail, ApiError> {
        self.get(&format!("{}/{id}", paths::DEVICES))
    }

    /// `GET /api/devices/{id}/history?metric=NAME[&since=UNIX]`: a metric's downsampled history, oldest
    /// first (default: the last 24 hours).
    pub fn history(
        &self,
        device: &str,
        metric: &str,
        since: Option<u64>,
    ) -> Result<MetricHistory, ApiError> {
        // Metric names are free-form: percent-encode all but the unreserved characters.
        let metric: String = metric
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut path = format!("{}/{device}/history?metric={metric}", paths::DEVICES);
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        self.get(&path)
    }

    /// `PUT /api/devices/{id}/labels`: sets a device's operator tags and group.
    pub fn set_labels(&self, id: &str, labels: &DeviceLabels) -> Result<DeviceInfo, ApiError> {
        self.put(&format!("{}/{id}/labels", paths::DEVICES), labels)
    }

    /// `GET /api/groups`: device groups with their settings and sizes.
    pub fn groups(&self) -> Result<Vec<GroupInfo>, ApiError> {
        self.get(paths::GROUPS)
    }

    /// `PUT /api/groups/{name}`: creates or replaces a group's settings.
    pub fn put_group(&self, name: &str, settings: &GroupSettings) -> Result<GroupInfo, ApiError> {
        self.put(&format!("{}/{name}", paths::GROUPS), settings)
    }

    // --- plumbing ---

    fn send(
        &self,
        mut request: RequestBuilder,
        timeout: Option<Duration>,
    ) -> Result<Response, reqwest::Error> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        request.send()
    }

    fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        path: &str,
    ) -> Result<T, ApiError> {
        let response = self
            .send(request, Some(self.timeout))
            .map_err(|e| self.transport_error(path, &e))?;
        self.answer(response, path)
    }

    /// Decodes a 2xx JSON answer, or turns any other into an [`ApiError`].
    fn answer<T: DeserializeOwned>(&self, response: Response, path: &str) -> Result<T, ApiError> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response
            .bytes()
            .map_err(|e| self.transport_error(path, &e))?;
        let error = |kind: ErrorKind, message: String| ApiError {
            kind,
            status: Some(status.as_u16()),
            message,
            retry_after,
            path: path.to_string(),
        };
        if status.is_success() {
            // 204 No Content (a deletion, a sign-out) decodes as JSON `null`: ask for `()`.
            let json: &[u8] = if status.as_u16() == 204 {
                b"null"
            } else {
                &body
            };
            return serde_json::from_slice(json).map_err(|e| {
                error(
                    ErrorKind::Retry,
                    format!(
                        "unexpected answer from the server ({e}): {}",
                        snippet(&body)
                    ),
                )
            });
        }
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => b.error,
            Err(_) if body.iter().all(u8::is_ascii_whitespace) => status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string(),
            Err(_) => snippet(&body),
        };
        Err(error(ErrorKind::for_status(status.as_u16()), message))
    }

    /// No answer: retry later, unless the request itself is malformed.
    fn transport_error(&self, path: &str, e: &reqwest::Error) -> ApiError {
        let (kind, message) = if e.is_builder() {
            (
                ErrorKind::GiveUp,
                // reqwest's "builder error: ..." wrapper says nothing an operator can act on; its cause does.
                format!(
                    "invalid request to the server at {}: {} (expected a URL such as {})",
                    self.base,
                    root_cause(e),
                    crate::defaults::DEFAULT_SERVER_URL
                ),
            )
        } else if e.is_timeout() {
            (
                ErrorKind::Retry,
                format!(
                    "no answer from the server at {} in time ({})",
                    self.base,
                    root_cause(e)
                ),
            )
        } else if e.is_connect() {
            (
                ErrorKind::Retry,
                format!(
                    "cannot reach the server at {}: {}{}",
                    self.base,
                    root_cause(e),
                    tls_hint(&root_cause(e))
                ),
            )
        } else {
            (ErrorKind::Retry, one_line(e))
        };
        ApiError {
            kind,
            status: None,
            message,
            retry_after: None,
            path: path.to_string(),
        }
    }
}

/// What to do about a TLS refusal an operator can fix, from its cause's words; empty for any other.
pub(crate) fn tls_hint(cause: &str) -> &'static str {
    if cause.contains("CaUsedAsEndEntity") {
        " (the server presents a CA certificate as its own: serve a certificate signed by that CA, with the \
         server's name and not a CA itself, and give clients the CA; see docs/tls.md)"
    } else {
        ""
    }
}

/// At most 200 characters of a body, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.trim().chars().take(200).collect();
    if text.trim().chars().count() > 200 {
        s.push('…');
    }
    s.replace(['\n', '\r'], " ")
}

/// The innermost cause (e.g. "Connection refused"), which says more than reqwest's "error sending request".
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string().replace('\n', " ")
}

/// An error with its sources, on one line, each cause said once.
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
