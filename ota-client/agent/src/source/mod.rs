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
//!
//! The pure parts are apart from the I/O: [`resume`] (which response continues a download),
//! [`retry`] (how long to wait); [`http`] is the reader that applies them. [`ranges`] reads chosen byte
//! ranges of a bundle (a file, or a server answering multi-range requests, read strictly by `multipart`).

mod error;
mod failure;
mod http;
mod multipart;
pub mod ranges;
pub mod resume;
pub mod retry;

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use error::SourceError;
pub use failure::ReadFailure;
pub use resume::{
    check_first, check_resume, classify, parse_content_range, ResponseFacts, StatusClass, Validator,
};
pub use retry::{backoff, retry_wait, MAX_RETRY_WAIT};

use crate::config::HttpConfig;
use crate::readahead::ReadAhead;
use failure::Delivering;
use http::HttpReader;

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
    /// Ask by ranges from the first request: the server is known to answer them (the fleet server), so a
    /// chunked bundle costs no streamed bytes that the range engine then drops.
    pub ranges_first: bool,
}

impl HttpRequest {
    /// A request for `url` with a bearer token.
    pub fn bearer(url: &str, token: &str) -> HttpRequest {
        HttpRequest {
            url: url.to_string(),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            ranges_first: false,
        }
    }

    /// The same request, asked by ranges from the first request.
    pub fn ranges_first(mut self) -> HttpRequest {
        self.ranges_first = true;
        self
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

/// An opened bundle.
pub struct Opened {
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
    /// Total size, if known.
    pub size: Option<u64>,
    /// The kind of the error `reader` ended with, if it ended with one.
    pub failure: ReadFailure,
}

impl Opened {
    fn new(reader: Box<dyn Read + Send>, size: Option<u64>, failure: ReadFailure) -> Opened {
        let reader = Box::new(Delivering {
            inner: reader,
            failure: failure.clone(),
        });
        Opened {
            reader,
            size,
            failure,
        }
    }
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
            Ok(Opened::new(Box::new(file), size, ReadFailure::default()))
        }
        BundleSource::Url(_) | BundleSource::Http(_) => {
            let (url, headers) = match source {
                BundleSource::Http(r) => (r.url.as_str(), r.headers.as_slice()),
                BundleSource::Url(u) => (u.as_str(), &[][..]),
                BundleSource::File(_) => unreachable!("matched above"),
            };
            let failure = ReadFailure::default();
            let mut reader = HttpReader::new(url, headers, http, cancel, failure.clone())?;
            reader.connect()?;
            let size = reader.total;
            let reader = ReadAhead::new(Box::new(reader)).map_err(|e| {
                SourceError::Setup(format!("cannot start the download thread: {e}"))
            })?;
            Ok(Opened::new(Box::new(reader), size, failure))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use ota_protocol::client::ErrorKind;

    use super::*;

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
            ranges_first: false,
        };
        let err = open(&BundleSource::Http(bad), &HttpConfig::default(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("invalid HTTP header name"), "{err}");
    }

    /// Fails with `kind` (as the HTTP reader does) after `ok` good reads.
    struct Failing {
        ok: usize,
        failure: Option<(ReadFailure, ErrorKind)>,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.ok > 0 {
                self.ok -= 1;
                buf[0] = 1;
                return Ok(1);
            }
            if let Some((f, kind)) = &self.failure {
                f.built(*kind);
            }
            Err(io::Error::other("gone"))
        }
    }

    #[test]
    fn the_failure_kind_is_known_once_the_consumer_got_the_error() {
        let failure = ReadFailure::default();
        let inner = Failing {
            ok: 1,
            failure: Some((failure.clone(), ErrorKind::Retry)),
        };
        let mut opened = Opened::new(Box::new(inner), None, failure);
        let mut buf = [0u8; 4];
        assert_eq!(opened.reader.read(&mut buf).unwrap(), 1);
        assert_eq!(opened.failure.kind(), None);
        // Built ahead of the consumer (as on the read-ahead thread): not the consumer's yet.
        opened.failure.built(ErrorKind::Retry);
        assert_eq!(opened.failure.kind(), None);
        assert!(opened.reader.read(&mut buf).is_err());
        assert_eq!(opened.failure.kind(), Some(ErrorKind::Retry));
        // A plain I/O error (a local file) is nobody's decision to retry.
        let plain = Failing {
            ok: 0,
            failure: None,
        };
        let mut opened = Opened::new(Box::new(plain), None, ReadFailure::default());
        assert!(opened.reader.read(&mut buf).is_err());
        assert_eq!(opened.failure.kind(), Some(ErrorKind::GiveUp));
    }
}
