//! Random access to a bundle's bytes, for installs that fetch only what the robot lacks: a local file
//! (`pread`) or an HTTP server that answers ranges ([`HttpRanges`]: up to [`MAX_RANGES_PER_REQUEST`] ranges
//! per request, answers read strictly by [`super::multipart`], the file pinned by its validator so bytes
//! of two versions are never mixed, dropped connections retried for what was not yet delivered).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use ota_bundle_format::chunked::Span;
use reqwest::blocking::{Client, Response};
use reqwest::header;

use super::error::SourceError;
use super::http::{build_client, describe, header_map, header_str, Retries, SpeedWindow};
pub use super::multipart::RangeSink;
use super::multipart::{boundary, content_range, read_parts, read_single, BodyError};
use super::resume::{classify, parse_content_range, StatusClass, Validator};
use crate::config::HttpConfig;

/// Most ranges asked in one request (the server refuses more; longer lists are split).
pub use ota_bundle_format::chunked::RANGES_PER_REQUEST as MAX_RANGES_PER_REQUEST;

/// Bytes read from a local file per piece handed to the sink.
const FILE_PIECE: usize = 1024 * 1024;

/// Random access to a bundle's bytes: a local file (pread) or an HTTP server that answers ranges.
pub trait RangeSource: Send {
    /// Total length of the bundle.
    fn len(&self) -> u64;
    /// Whether the bundle is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads the given ascending, non-overlapping byte ranges and hands each part's bytes, in order, to
    /// `sink` (streamed in pieces: `sink(range_index, bytes)` may be called several times per range).
    /// Errors name the source. (`&'s mut RangeSink<'s>` is `&mut dyn FnMut(usize, &[u8]) -> Result<(),
    /// SourceError>` spelled out; implementations may write either.)
    fn read_ranges<'s>(
        &mut self,
        ranges: &[Span],
        sink: &'s mut RangeSink<'s>,
    ) -> Result<(), SourceError>;
    /// Bytes received from the network so far (0 for files), headers and multipart framing included.
    fn wire_bytes(&self) -> u64;
}

/// Checks that `ranges` are ascending, non-overlapping and inside a `len`-byte file (empty ranges are
/// allowed and read as nothing).
pub fn check_ranges(ranges: &[Span], len: u64) -> Result<(), String> {
    let mut end = 0;
    for (i, r) in ranges.iter().enumerate() {
        let last = r.offset.checked_add(r.len).filter(|e| *e <= len);
        let Some(last) = last else {
            return Err(format!(
                "range {i} (bytes {}+{}) is outside the {len}-byte bundle",
                r.offset, r.len
            ));
        };
        if r.offset < end {
            return Err(format!(
                "range {i} (from byte {}) is not after the one before it",
                r.offset
            ));
        }
        end = last;
    }
    Ok(())
}

/// The `Range` header asking for `spans` (each non-empty).
pub fn range_header(spans: impl IntoIterator<Item = Span>) -> String {
    let specs: Vec<String> = spans
        .into_iter()
        .map(|s| format!("{}-{}", s.offset, s.offset + s.len - 1))
        .collect();
    format!("bytes={}", specs.join(","))
}

/// What is left to ask for of `ranges` after `done[i]` bytes of each were delivered, with each range's
/// index: the non-empty rests, at most [`MAX_RANGES_PER_REQUEST`] of them (the next request's list).
pub fn next_request(ranges: &[Span], done: &[u64]) -> Vec<(usize, Span)> {
    ranges
        .iter()
        .zip(done)
        .enumerate()
        .filter(|(_, (r, d))| **d < r.len)
        .map(|(i, (r, d))| {
            (
                i,
                Span {
                    offset: r.offset + d,
                    len: r.len - d,
                },
            )
        })
        .take(MAX_RANGES_PER_REQUEST)
        .collect()
}

/// A local bundle file.
pub struct FileRanges {
    file: File,
    path: PathBuf,
    len: u64,
}

impl FileRanges {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<FileRanges, SourceError> {
        let error = |error| SourceError::File {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(error)?;
        let len = file.metadata().map_err(error)?.len();
        Ok(FileRanges {
            file,
            path: path.to_path_buf(),
            len,
        })
    }

    fn error(&self, what: String, error: io::Error) -> SourceError {
        SourceError::File {
            path: self.path.clone(),
            error: io::Error::new(error.kind(), format!("{what}: {error}")),
        }
    }
}

impl RangeSource for FileRanges {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_ranges<'s>(
        &mut self,
        ranges: &[Span],
        sink: &'s mut RangeSink<'s>,
    ) -> Result<(), SourceError> {
        check_ranges(ranges, self.len)
            .map_err(|e| self.error(e, io::ErrorKind::InvalidInput.into()))?;
        let mut buf =
            vec![0u8; FILE_PIECE.min(ranges.iter().map(|r| r.len).max().unwrap_or(0) as usize)];
        for (i, r) in ranges.iter().enumerate() {
            let mut pos = r.offset;
            while pos < r.end() {
                let n = ((r.end() - pos) as usize).min(buf.len());
                let read = self
                    .file
                    .read_at(&mut buf[..n], pos)
                    .map_err(|e| self.error(format!("reading byte {pos}"), e))?;
                if read == 0 {
                    return Err(self.error(
                        format!("the file ends before byte {pos}"),
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                sink(i, &buf[..read])?;
                pos += read as u64;
            }
        }
        Ok(())
    }

    fn wire_bytes(&self) -> u64 {
        0
    }
}

/// One failed request: worth another try, or the end.
enum Attempt {
    Retry(String),
    Fatal(SourceError),
}

/// A bundle on an HTTP server that answers ranges, pinned to the version first seen.
pub struct HttpRanges {
    client: Client,
    url: String,
    headers: header::HeaderMap,
    cfg: HttpConfig,
    cancel: Option<Arc<AtomicBool>>,
    len: u64,
    validator: Validator,
    wire: u64,
    /// Failed attempts in a row without progress, and the server's last Retry-After.
    retries: Retries,
    /// The low-speed window of the current connection, and whether it delivered enough to be progress.
    window: SpeedWindow,
    enough: bool,
}

/// Rough size of a response's status line and headers.
fn head_size(resp: &Response) -> u64 {
    let headers: usize = resp
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    headers as u64 + 17
}

/// Counts the bytes read through it and applies the low-speed check (a connection below the limit ends
/// with an error, as a dropped one).
struct Metered<'a, R> {
    inner: R,
    wire: &'a mut u64,
    window: &'a mut SpeedWindow,
    /// Set once the window delivered enough to count as progress.
    enough: &'a mut bool,
    cfg: &'a HttpConfig,
    cancel: Option<&'a AtomicBool>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(io::Error::other("download cancelled"));
        }
        let n = self.inner.read(buf)?;
        *self.wire += n as u64;
        let (enough, slow) = self.window.account(n, self.cfg);
        *self.enough |= enough;
        match slow {
            Some(why) => Err(io::Error::new(io::ErrorKind::TimedOut, why)),
            None => Ok(n),
        }
    }
}

impl HttpRanges {
    /// Probes `url` with `Range: bytes=0-0`. `Ok(None)`: the server does not answer ranges (or gives no
    /// validator to pin the file by), the caller streams the bundle instead.
    pub fn open(
        url: &str,
        headers: &[(String, String)],
        http: &HttpConfig,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<Option<HttpRanges>, SourceError> {
        let mut source = HttpRanges {
            client: build_client(http)?,
            url: url.to_string(),
            headers: header_map(headers)?,
            cfg: http.clone(),
            cancel,
            len: 0,
            validator: Validator::default(),
            wire: 0,
            retries: Retries::default(),
            window: SpeedWindow::new(),
            enough: false,
        };
        loop {
            match source.probe() {
                Ok(ranged) => return Ok(ranged.then_some(source)),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => source.failed(why)?,
            }
        }
    }

    /// Whether the server answers ranges; pins the length and the validator.
    fn probe(&mut self) -> Result<bool, Attempt> {
        let resp = self.send("bytes=0-0")?;
        if resp.status().as_u16() != 206 {
            return Ok(false);
        }
        let range = header_str(&resp, header::CONTENT_RANGE);
        let Some((0, 0, Some(len))) = range.as_deref().and_then(parse_content_range) else {
            return Err(self.wrong(format!(
                "asked for byte 0, the server answered Content-Range {range:?}"
            )));
        };
        let validator = Validator {
            etag: header_str(&resp, header::ETAG),
            last_modified: header_str(&resp, header::LAST_MODIFIED),
        };
        if validator.if_range().is_none() {
            return Ok(false);
        }
        let mut body = self.metered(resp);
        read_single(&mut body, 1, &mut |_, _| Ok(())).map_err(|e| self.body_error(e))?;
        self.len = len;
        self.validator = validator;
        Ok(true)
    }

    /// The body of a new connection, metered.
    fn metered(&mut self, resp: Response) -> Metered<'_, Response> {
        self.window = SpeedWindow::new();
        self.enough = false;
        Metered {
            inner: resp,
            wire: &mut self.wire,
            window: &mut self.window,
            enough: &mut self.enough,
            cfg: &self.cfg,
            cancel: self.cancel.as_deref(),
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn wrong(&self, detail: String) -> Attempt {
        Attempt::Fatal(SourceError::CannotResume {
            url: self.url.clone(),
            detail: format!("the server answered a range request wrongly: {detail}"),
        })
    }

    fn changed(&self, detail: String) -> Attempt {
        Attempt::Fatal(SourceError::CannotResume {
            url: self.url.clone(),
            detail: format!("the bundle changed on the server ({detail})"),
        })
    }

    fn body_error(&self, e: BodyError) -> Attempt {
        match e {
            BodyError::Dropped(why) => Attempt::Retry(why),
            BodyError::Wrong(detail) => self.wrong(detail),
            BodyError::Sink(e) => Attempt::Fatal(e),
        }
    }

    /// Sends a request for `range` (with the pinned validator once there is one); a 2xx answer is returned,
    /// anything else is an [`Attempt`] error.
    fn send(&mut self, range: &str) -> Result<Response, Attempt> {
        if self.cancelled() {
            return Err(Attempt::Fatal(SourceError::Cancelled));
        }
        let mut req = self
            .client
            .get(&self.url)
            .headers(self.headers.clone())
            .header(header::RANGE, range);
        if let Some(v) = self.validator.if_range() {
            req = req.header(header::IF_RANGE, v);
        }
        let resp = req
            .send()
            .map_err(|e| Attempt::Retry(describe(&e, self.cfg.read_timeout)))?;
        self.wire += head_size(&resp);
        let status = resp.status().as_u16();
        match classify(status) {
            StatusClass::Ok => Ok(resp),
            StatusClass::Retry => Err(Attempt::Retry(self.retries.refused(&resp, status))),
            StatusClass::Permanent(hint) => Err(Attempt::Fatal(SourceError::Permanent {
                url: self.url.clone(),
                status,
                hint,
            })),
        }
    }

    /// Records a failed attempt; sleeps the backoff or gives up.
    fn failed(&mut self, why: String) -> Result<(), SourceError> {
        self.retries
            .failed(&self.url, &self.cfg, self.cancel.as_deref(), why)
    }

    /// One request for `asked` (range index, rest of the range); `done` counts the bytes delivered.
    fn fetch(
        &mut self,
        asked: &[(usize, Span)],
        done: &mut [u64],
        sink: &mut RangeSink<'_>,
    ) -> Result<(), Attempt> {
        let resp = self.send(&range_header(asked.iter().map(|(_, s)| *s)))?;
        let etag = header_str(&resp, header::ETAG);
        if let (Some(pinned), Some(now)) = (&self.validator.etag, &etag) {
            if pinned != now {
                return Err(self.changed(format!("ETag {pinned} became {now}")));
            }
        }
        if self.validator.etag.is_none() {
            let now = header_str(&resp, header::LAST_MODIFIED);
            if let (Some(pinned), Some(now)) = (&self.validator.last_modified, &now) {
                if pinned != now {
                    return Err(self.changed(format!("Last-Modified {pinned} became {now}")));
                }
            }
        }
        let status = resp.status().as_u16();
        if status != 206 {
            return Err(self.wrong(format!(
                "HTTP {status} instead of 206: the server ignored the range request"
            )));
        }
        let multipart = header_str(&resp, header::CONTENT_TYPE)
            .as_deref()
            .and_then(boundary);
        let single = header_str(&resp, header::CONTENT_RANGE);
        let total = self.len;
        let mut deliver = |k: usize, bytes: &[u8]| {
            let (i, _) = asked[k];
            done[i] += bytes.len() as u64;
            sink(i, bytes)
        };
        let result = match multipart {
            Some(Err(e)) => return Err(self.wrong(e)),
            Some(Ok(boundary)) => {
                let spans: Vec<(u64, u64)> = asked.iter().map(|(_, s)| (s.offset, s.len)).collect();
                let mut body = self.metered(resp);
                read_parts(&mut body, &boundary, &spans, total, &mut deliver)
            }
            None => {
                let [(_, want)] = asked else {
                    return Err(self.wrong(format!(
                        "{} ranges were asked, the server answered one (Content-Range {single:?})",
                        asked.len()
                    )));
                };
                let want_range = content_range(want.offset, want.len, total);
                if single.as_deref() != Some(want_range.as_str()) {
                    return Err(self.wrong(format!(
                        "Content-Range {single:?}, {want_range:?} was asked"
                    )));
                }
                let mut body = self.metered(resp);
                read_single(&mut body, want.len, &mut deliver)
            }
        };
        result.map_err(|e| self.body_error(e))
    }
}

impl RangeSource for HttpRanges {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_ranges<'s>(
        &mut self,
        ranges: &[Span],
        sink: &'s mut RangeSink<'s>,
    ) -> Result<(), SourceError> {
        check_ranges(ranges, self.len).map_err(|detail| SourceError::CannotResume {
            url: self.url.clone(),
            detail: format!("asked for a wrong list of ranges: {detail}"),
        })?;
        let mut done = vec![0u64; ranges.len()];
        loop {
            let asked = next_request(ranges, &done);
            if asked.is_empty() {
                return Ok(());
            }
            let before: u64 = done.iter().sum();
            match self.fetch(&asked, &mut done, sink) {
                Ok(()) => self.retries.progressed(),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    // Bytes delivered at a good pace are progress; a trickle is not.
                    if self.enough && done.iter().sum::<u64>() > before {
                        self.retries.progressed();
                    }
                    self.failed(why)?;
                }
            }
        }
    }

    fn wire_bytes(&self) -> u64 {
        self.wire
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn span(offset: u64, len: u64) -> Span {
        Span { offset, len }
    }

    #[test]
    fn range_lists_are_checked() {
        assert!(check_ranges(&[span(0, 10), span(10, 5), span(20, 0), span(20, 80)], 100).is_ok());
        assert!(check_ranges(&[span(0, 10), span(9, 5)], 100)
            .unwrap_err()
            .contains("range 1"));
        assert!(check_ranges(&[span(10, 5), span(0, 5)], 100).is_err());
        assert!(check_ranges(&[span(95, 6)], 100)
            .unwrap_err()
            .contains("outside"));
        assert!(check_ranges(&[span(u64::MAX, 2)], 100).is_err());
        assert_eq!(range_header([span(0, 1), span(10, 10)]), "bytes=0-0,10-19");
    }

    #[test]
    fn a_local_file_reads_ranges_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut f = FileRanges::open(&path).unwrap();
        assert_eq!(f.len(), 3_000_000);
        let ranges = [span(5, 10), span(100, 2_500_000), span(2_999_999, 1)];
        let mut got = vec![Vec::new(); 3];
        let mut calls = 0;
        f.read_ranges(&ranges, &mut |i, b| {
            got[i].extend_from_slice(b);
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert!(calls > 3, "streamed in pieces");
        for (g, r) in got.iter().zip(&ranges) {
            assert_eq!(&g[..], &data[r.offset as usize..r.end() as usize]);
        }
        assert_eq!(f.wire_bytes(), 0);
        let err = f
            .read_ranges(&[span(0, 3_000_001)], &mut |_, _| Ok(()))
            .unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let err = FileRanges::open(&dir.path().join("missing")).err().unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    /// An implementation may spell the sink's type out, as the trait's documentation says.
    struct Spelled;

    impl RangeSource for Spelled {
        fn len(&self) -> u64 {
            1
        }

        #[allow(clippy::type_complexity)]
        fn read_ranges(
            &mut self,
            ranges: &[Span],
            sink: &mut dyn FnMut(usize, &[u8]) -> Result<(), SourceError>,
        ) -> Result<(), SourceError> {
            ranges
                .iter()
                .enumerate()
                .try_for_each(|(i, _)| sink(i, b"x"))
        }

        fn wire_bytes(&self) -> u64 {
            0
        }
    }

    #[test]
    fn the_sink_may_be_spelled_out() {
        let mut source: Box<dyn RangeSource> = Box::new(Spelled);
        let mut got = Vec::new();
        source
            .read_ranges(&[span(0, 1)], &mut |i, b| {
                got.push((i, b.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(got, [(0, b"x".to_vec())]);
    }

    proptest! {
        /// Delivering requests one after the other (each answered in full or in part) asks for every byte
        /// exactly once, at most 64 ranges per request, in ascending order.
        #[test]
        fn requests_cover_every_byte_once(
            lens in proptest::collection::vec(0u64..50, 0..300),
            cuts in proptest::collection::vec(0u64..200, 1..50),
        ) {
            let mut offset = 0;
            let ranges: Vec<Span> = lens.iter().map(|l| { let s = span(offset + 3, *l); offset += 3 + l; s }).collect();
            prop_assert!(check_ranges(&ranges, offset).is_ok());
            let mut done = vec![0u64; ranges.len()];
            let mut delivered = vec![Vec::new(); ranges.len()];
            let mut round = 0;
            loop {
                let asked = next_request(&ranges, &done);
                if asked.is_empty() { break; }
                prop_assert!(asked.len() <= MAX_RANGES_PER_REQUEST);
                prop_assert!(asked.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1.end() <= w[1].1.offset));
                // The connection drops after `budget` bytes of this request.
                let mut budget = cuts[round % cuts.len()] + 1;
                round += 1;
                for (i, s) in &asked {
                    prop_assert_eq!(s.offset, ranges[*i].offset + done[*i]);
                    let n = s.len.min(budget);
                    delivered[*i].extend(s.offset..s.offset + n);
                    done[*i] += n;
                    budget -= n;
                    if budget == 0 { break; }
                }
            }
            for (d, r) in delivered.iter().zip(&ranges) {
                prop_assert_eq!(d.clone(), (r.offset..r.end()).collect::<Vec<_>>());
            }
        }
    }
}
