//! Serving a bundle file with HTTP ranges: the whole file, one range (206 + `Content-Range`) or several
//! (206 `multipart/byteranges`, parts in the order asked), so a robot fetches only the chunks it lacks in a
//! few requests. [`plan`] decides from the request headers alone (pure); [`respond`] streams the parts from
//! the bundle store (a local file in large `pread` chunks, a remote object one streamed GET per part) without
//! ever holding a whole part in memory, or, with `--presign-downloads` and a store that can, answers
//! 307 to a short-lived presigned URL of the object (robots verify every byte either way).
//!
//! Stricter than RFC 9110 allows, on purpose: overlapping ranges, more than [`MAX_RANGES`] ranges, a range
//! that starts past the end or a malformed `bytes=` header are answered 416 instead of being silently
//! merged, trimmed or ignored, so a client's mistake shows at once. `If-Range` compares strongly against the
//! ETag (`"<bundle id>"`; a bundle's bytes never change under its id); any other validator (a date, a weak
//! tag) does not match and the whole file is sent.

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use rand_core::{OsRng, RngCore};

use crate::api::error::ApiError;
use crate::bundle_store::{BlobSource, RangeSource};
use crate::services::bundles::DownloadGrant;

/// Most ranges one request may ask for (a client with more splits them over several requests).
pub use ota_bundle_format::chunked::RANGES_PER_REQUEST as MAX_RANGES;

/// Bytes read from disk per body chunk: large enough that a full download runs at loopback speed (two
/// chunks per download in memory: the one being sent and the one read ahead).
const CHUNK: usize = 512 * 1024;

/// Bytes `first..=last` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub first: u64,
    /// Last byte (inclusive).
    pub last: u64,
}

impl ByteRange {
    fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{total}", self.first, self.last)
    }
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole file.
    Whole,
    /// 206 with one range.
    Single(ByteRange),
    /// 206 `multipart/byteranges`, parts in this order.
    Multi(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */<len>`; the reason goes into the error body.
    Unsatisfiable(String),
}

/// Whether an `If-Range` value lets the ranges through: absent, or exactly the (strong) ETag.
pub fn if_range_matches(if_range: Option<&str>, etag: &str) -> bool {
    match if_range {
        None => true,
        Some(v) => !etag.starts_with("W/") && v.trim() == etag,
    }
}

/// Parses one `first-last`, `first-` or `-suffix` spec against a file of `len` bytes.
fn parse_spec(spec: &str, len: u64) -> Result<ByteRange, String> {
    let spec = spec.trim();
    let bad = || format!("malformed range {spec:?}");
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let number = |s: &str| -> Result<u64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Err(format!(
                "range {spec:?} selects no byte of the {len}-byte file"
            ));
        }
        return Ok(ByteRange {
            first: len - suffix.min(len),
            last: len - 1,
        });
    }
    let first = number(first)?;
    let last = if last.is_empty() {
        u64::MAX
    } else {
        number(last)?
    };
    if last < first {
        return Err(bad());
    }
    if first >= len {
        return Err(format!(
            "range {spec:?} starts past the end of the {len}-byte file"
        ));
    }
    Ok(ByteRange {
        first,
        last: last.min(len - 1),
    })
}

/// Parses a `Range` header value against a file of `len` bytes: `None` for a unit other than `bytes`
/// (ignored: the whole file is sent), else the ranges in the order asked, or why they cannot be served.
pub fn parse_ranges(value: &str, len: u64) -> Option<Result<Vec<ByteRange>, String>> {
    let (unit, specs) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let specs: Vec<&str> = specs.split(',').filter(|s| !s.trim().is_empty()).collect();
    if specs.is_empty() {
        return Some(Err("empty Range header".into()));
    }
    if specs.len() > MAX_RANGES {
        return Some(Err(format!(
            "{} ranges asked, at most {MAX_RANGES} per request",
            specs.len()
        )));
    }
    let ranges = match specs.iter().map(|s| parse_spec(s, len)).collect() {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    Some(check_overlap(ranges))
}

fn check_overlap(ranges: Vec<ByteRange>) -> Result<Vec<ByteRange>, String> {
    let mut sorted = ranges.clone();
    sorted.sort_by_key(|r| r.first);
    for pair in sorted.windows(2) {
        if pair[1].first <= pair[0].last {
            return Err(format!(
                "ranges {}-{} and {}-{} overlap",
                pair[0].first, pair[0].last, pair[1].first, pair[1].last
            ));
        }
    }
    Ok(ranges)
}

/// What to answer for a file of `len` bytes with ETag `etag`, given the request's `Range` and `If-Range`.
pub fn plan(range: Option<&str>, if_range: Option<&str>, len: u64, etag: &str) -> Plan {
    let Some(range) = range else {
        return Plan::Whole;
    };
    if !if_range_matches(if_range, etag) {
        return Plan::Whole;
    }
    match parse_ranges(range, len) {
        None => Plan::Whole,
        Some(Err(why)) => Plan::Unsatisfiable(why),
        Some(Ok(mut ranges)) if ranges.len() == 1 => Plan::Single(ranges.remove(0)),
        Some(Ok(ranges)) => Plan::Multi(ranges),
    }
}

/// One piece of a response body: literal bytes (multipart framing) or a range of the file.
enum Piece {
    Literal(Bytes),
    File(ByteRange),
}

/// The multipart body's pieces and its exact length.
fn multipart(ranges: &[ByteRange], total: u64, boundary: &str) -> (Vec<Piece>, u64) {
    let mut pieces = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut length = 0u64;
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: {}\r\n\r\n",
            r.content_range(total)
        );
        length += head.len() as u64 + r.len();
        pieces.push(Piece::Literal(Bytes::from(head)));
        pieces.push(Piece::File(*r));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    length += tail.len() as u64;
    pieces.push(Piece::Literal(Bytes::from(tail)));
    (pieces, length)
}

/// Fills the next body chunk of about [`CHUNK`] bytes from the front of `pieces` (framing and file bytes
/// together: few large writes, whatever the size of the parts), consuming what it took. File bytes are read
/// straight into the chunk's spare capacity (no zeroing first). `file` is this response's own handle, read by
/// one task at a time, so seeking it is safe.
fn fill(mut file: &std::fs::File, pieces: &mut VecDeque<Piece>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(CHUNK);
    while buf.len() < CHUNK {
        let Some(piece) = pieces.front_mut() else {
            break;
        };
        match piece {
            Piece::Literal(bytes) => {
                buf.extend_from_slice(bytes);
                pieces.pop_front();
            }
            Piece::File(range) => {
                let want = range.len().min((CHUNK - buf.len()) as u64);
                file.seek(SeekFrom::Start(range.first))?;
                let got = file.take(want).read_to_end(&mut buf)?;
                if (got as u64) < want {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the bundle file is shorter than it was",
                    ));
                }
                if want == range.len() {
                    pieces.pop_front();
                } else {
                    range.first += want;
                }
            }
        }
    }
    Ok(buf)
}

/// The read of the next chunk, running on the blocking pool.
type NextChunk = tokio::task::JoinHandle<std::io::Result<(Vec<u8>, VecDeque<Piece>)>>;

/// Starts reading the next chunk of `pieces`, if any is left.
fn read_ahead(file: &Arc<std::fs::File>, mut pieces: VecDeque<Piece>) -> Option<NextChunk> {
    if pieces.is_empty() {
        return None;
    }
    let file = file.clone();
    Some(tokio::task::spawn_blocking(move || {
        fill(&file, &mut pieces).map(|chunk| (chunk, pieces))
    }))
}

/// Streams `pieces` of a local file: one short blocking task per chunk, the next chunk read while the
/// current one is being sent (the disk and the socket work at the same time; no thread is held for the
/// length of a download).
fn body_stream(
    file: std::fs::File,
    pieces: Vec<Piece>,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    let file = Arc::new(file);
    let first = read_ahead(&file, VecDeque::from(pieces));
    stream::try_unfold((file, first), |(file, next)| async move {
        let Some(next) = next else {
            return Ok(None);
        };
        let (chunk, pieces) = next.await.map_err(std::io::Error::other)??;
        let after = read_ahead(&file, pieces);
        Ok(Some((Bytes::from(chunk), (file, after))))
    })
}

fn boundary() -> String {
    format!("OTA-{:016x}{:016x}", OsRng.next_u64(), OsRng.next_u64())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Streams `pieces` of a remote object: framing as is, each file part one streamed range request.
fn remote_stream(
    source: Arc<dyn RangeSource>,
    pieces: Vec<Piece>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    stream::iter(pieces)
        .flat_map(move |piece| match piece {
            Piece::Literal(bytes) => stream::once(async move { Ok(bytes) }).boxed(),
            Piece::File(r) => source.stream(r.first, r.last + 1),
        })
        .boxed()
}

/// Whether a request may be redirected to the store. A download keeps to one path, since the store's ETag is
/// not the server's (`etag`): a request with no range goes to the store (a full-stream install), and so does a
/// single range validated by the store's ETag (that install's resume). A request validated by the server's own
/// ETag, or unvalidated, and every request for several ranges (object stores answer one range at most: the
/// chunked engine's lists) are served here.
pub fn presignable(range: Option<&str>, if_range: Option<&str>, etag: &str) -> bool {
    match (range, if_range) {
        (None, _) => true,
        (Some(r), Some(v)) => !r.contains(',') && v.trim() != etag,
        (Some(_), None) => false,
    }
}

/// A 307 to `url` (the presigned object; not cached: it expires).
fn redirect(url: &str) -> Result<Response, ApiError> {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(header::LOCATION, url)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .map_err(|e| ApiError::internal("building the download redirect", e))
}

/// Answers `method` (GET or HEAD) for bundle `id` as `grant` says.
pub async fn respond(
    method: &Method,
    headers: &HeaderMap,
    grant: DownloadGrant,
    id: &str,
) -> Result<Response, ApiError> {
    let etag = format!("\"{id}\"");
    let presign = presignable(
        header_str(headers, header::RANGE),
        header_str(headers, header::IF_RANGE),
        &etag,
    );
    if let Some(ttl) = grant.presign.filter(|_| presign) {
        let url = grant
            .store
            .presign(id, ttl)
            .await
            .map_err(|e| ApiError::internal("presigning the download", e))?;
        if let Some(url) = url {
            return redirect(&url);
        }
    }
    let blob = grant
        .store
        .open(id)
        .await
        .map_err(|e| ApiError::internal("opening the bundle", e))?;
    let (source, len) = (blob.source, blob.len);
    let plan = plan(
        header_str(headers, header::RANGE),
        header_str(headers, header::IF_RANGE),
        len,
        &etag,
    );
    let (status, content_type, pieces, length, content_range) = match plan {
        Plan::Unsatisfiable(why) => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("cannot serve the requested ranges: {why}"),
            )
            .into_response();
            with_download_headers(&mut response, &etag);
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            return Ok(response);
        }
        Plan::Whole => (
            StatusCode::OK,
            "application/octet-stream".to_string(),
            // An empty file has no byte to send.
            (len > 0)
                .then(|| {
                    Piece::File(ByteRange {
                        first: 0,
                        last: len - 1,
                    })
                })
                .into_iter()
                .collect(),
            len,
            None,
        ),
        Plan::Single(r) => (
            StatusCode::PARTIAL_CONTENT,
            "application/octet-stream".to_string(),
            vec![Piece::File(r)],
            r.len(),
            Some(r.content_range(len)),
        ),
        Plan::Multi(ranges) => {
            let boundary = boundary();
            let (pieces, length) = multipart(&ranges, len, &boundary);
            (
                StatusCode::PARTIAL_CONTENT,
                format!("multipart/byteranges; boundary={boundary}"),
                pieces,
                length,
                None,
            )
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag);
    if let Some(cr) = content_range {
        builder = builder.header(header::CONTENT_RANGE, cr);
    }
    let body = if *method == Method::HEAD {
        Body::empty()
    } else {
        match source {
            BlobSource::File(file) => Body::from_stream(body_stream(file, pieces)),
            BlobSource::Remote(remote) => Body::from_stream(remote_stream(remote, pieces)),
        }
    };
    builder
        .body(body)
        .map_err(|e| ApiError::internal("building the download response", e))
}

/// Adds the download's `ETag` and `Accept-Ranges` to an error answer (every download answer has them).
fn with_download_headers(response: &mut Response, etag: &str) {
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ETAG: &str = "\"abc\"";

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    #[test]
    fn only_requests_an_object_store_can_answer_are_redirected() {
        let ours = "\"abc\"";
        let store = Some("\"d41d8cd98f00b204e9800998ecf8427e\"");
        // A full-stream install and its resume go to the store.
        assert!(presignable(None, None, ours));
        assert!(presignable(Some("bytes=100-"), store, ours));
        // The chunked engine's probe and lists, and a resume pinned to the server's ETag, stay here.
        assert!(!presignable(Some("bytes=0-0"), None, ours));
        assert!(!presignable(Some("bytes=0-9,20-29"), None, ours));
        assert!(!presignable(Some("bytes=0-9, 20-29"), store, ours));
        assert!(!presignable(Some("bytes=100-"), Some(ours), ours));
    }

    #[test]
    fn plans() {
        assert_eq!(plan(None, None, 100, ETAG), Plan::Whole);
        assert_eq!(
            plan(Some("bytes=0-9"), None, 100, ETAG),
            Plan::Single(r(0, 9))
        );
        assert_eq!(
            plan(Some("bytes=90-"), None, 100, ETAG),
            Plan::Single(r(90, 99))
        );
        assert_eq!(
            plan(Some("bytes=90-500"), None, 100, ETAG),
            Plan::Single(r(90, 99))
        );
        assert_eq!(
            plan(Some("bytes=-10"), None, 100, ETAG),
            Plan::Single(r(90, 99))
        );
        assert_eq!(
            plan(Some("bytes=-1000"), None, 100, ETAG),
            Plan::Single(r(0, 99))
        );
        assert_eq!(
            plan(Some("bytes=50-59, 0-9,10-19"), Some(ETAG), 100, ETAG),
            Plan::Multi(vec![r(50, 59), r(0, 9), r(10, 19)])
        );
        // Another validator: the whole file.
        assert_eq!(
            plan(Some("bytes=0-9"), Some("\"other\""), 100, ETAG),
            Plan::Whole
        );
        assert_eq!(
            plan(Some("bytes=0-9"), Some("W/\"abc\""), 100, ETAG),
            Plan::Whole
        );
        assert_eq!(
            plan(
                Some("bytes=0-9"),
                Some("Sat, 05 Dec 2026 22:00:50 GMT"),
                100,
                ETAG
            ),
            Plan::Whole
        );
        // Another unit is ignored.
        assert_eq!(plan(Some("items=0-9"), None, 100, ETAG), Plan::Whole);
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=-0",
            "bytes=",
            "bytes=a-b",
            "bytes=0-9,5-20",
            "bytes=0-9,9-9",
            "bytes=1",
            "bytes=+1-2",
            "bytes=0-9,200-300",
        ] {
            assert!(
                matches!(plan(Some(bad), None, 100, ETAG), Plan::Unsatisfiable(_)),
                "{bad}"
            );
        }
        let many: Vec<String> = (0..65).map(|i| format!("{i}-{i}")).collect();
        let many = format!("bytes={}", many.join(","));
        assert!(
            matches!(plan(Some(&many), None, 100, ETAG), Plan::Unsatisfiable(w) if w.contains("at most 64"))
        );
        assert!(matches!(
            plan(Some("bytes=0-0"), None, 0, ETAG),
            Plan::Unsatisfiable(_)
        ));
    }

    #[test]
    fn multipart_length_is_exact() {
        let ranges = [r(5, 9), r(0, 0)];
        let (pieces, length) = multipart(&ranges, 10, "B");
        let literal: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(b) => b.len() as u64,
                Piece::File(r) => r.len(),
            })
            .sum();
        assert_eq!(literal, length);
        let Piece::Literal(first) = &pieces[0] else {
            panic!()
        };
        assert!(first.starts_with(b"--B\r\n"));
    }

    #[test]
    fn chunks_cross_part_boundaries_and_add_up_to_the_body() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let ranges = [r(900_000, 999_999), r(3, 3), r(10, 600_009)];
        let (pieces, length) = multipart(&ranges, 1_000_000, "B");
        let mut expected = Vec::new();
        for p in &pieces {
            match p {
                Piece::Literal(b) => expected.extend_from_slice(b),
                Piece::File(x) => {
                    expected.extend_from_slice(&data[x.first as usize..=x.last as usize])
                }
            }
        }
        let mut pieces = VecDeque::from(pieces);
        let mut body = Vec::new();
        let mut chunks = 0;
        while !pieces.is_empty() {
            let chunk = fill(&file, &mut pieces).unwrap();
            assert!(chunk.len() <= CHUNK + 200, "{}", chunk.len());
            body.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert_eq!(body.len() as u64, length);
        assert!(body == expected);
        assert_eq!(chunks, (length as usize).div_ceil(CHUNK));
        // A file that shrank under the server is an error, not a short body.
        let mut past = VecDeque::from([Piece::File(r(999_990, 1_000_009))]);
        let err = fill(&file, &mut past).unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
    }

    proptest! {
        /// Any list of disjoint in-bounds ranges is served as asked, in the order asked.
        #[test]
        fn disjoint_ranges_are_served_in_the_order_asked(
            len in 1u64..10_000,
            cuts in proptest::collection::btree_set(0u64..10_000, 2..40),
            order in proptest::collection::vec(any::<u32>(), 40),
        ) {
            let cuts: Vec<u64> = cuts.into_iter().filter(|c| *c < len).collect();
            let mut ranges: Vec<ByteRange> = cuts.chunks(2).filter(|c| c.len() == 2).map(|c| r(c[0], c[1] - 1)).filter(|x| x.first <= x.last).collect();
            prop_assume!(!ranges.is_empty());
            ranges.sort_by_key(|x| order[x.first as usize % order.len()]);
            let header = format!("bytes={}", ranges.iter().map(|x| format!("{}-{}", x.first, x.last)).collect::<Vec<_>>().join(","));
            let expected = if ranges.len() == 1 { Plan::Single(ranges[0]) } else { Plan::Multi(ranges.clone()) };
            prop_assert_eq!(plan(Some(&header), Some(ETAG), len, ETAG), expected);
        }

        /// Every served range lies inside the file, never overlaps another, and a 416 has a reason.
        #[test]
        fn served_ranges_are_in_bounds_and_disjoint(len in 0u64..1000, specs in proptest::collection::vec((proptest::option::of(0u64..1200), proptest::option::of(0u64..1200)), 1..70)) {
            let header = format!("bytes={}", specs.iter().map(|(a, b)| format!("{}-{}", a.map(|v| v.to_string()).unwrap_or_default(), b.map(|v| v.to_string()).unwrap_or_default())).collect::<Vec<_>>().join(","));
            match plan(Some(&header), None, len, ETAG) {
                Plan::Whole => prop_assert!(false, "a bytes range is never ignored"),
                Plan::Unsatisfiable(why) => prop_assert!(!why.is_empty()),
                Plan::Single(x) => prop_assert!(specs.len() == 1 && x.first <= x.last && x.last < len),
                Plan::Multi(v) => {
                    prop_assert!(v.len() == specs.len() && v.len() <= MAX_RANGES);
                    let mut s = v.clone();
                    s.sort_by_key(|x| x.first);
                    for x in &s { prop_assert!(x.first <= x.last && x.last < len); }
                    for w in s.windows(2) { prop_assert!(w[0].last < w[1].first); }
                }
            }
        }
    }
}
