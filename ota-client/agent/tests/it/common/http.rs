//! A tiny HTTP/1.1 file server on 127.0.0.1 (port 0) for download tests: serves one bundle at
//! `/bundle.otab` with an ETag and Range support, and can misbehave on purpose (drop the
//! connection mid-body, stall, change the file between requests, answer an error status
//! forever, send a body that never ends, ignore or lie about ranges). With an `offer` it also
//! answers the device protocol (enroll, poll, report) so a daemon can be pointed at it.
//!
//! One thread per connection; every thread ends by itself (a stalled response ends as soon
//! as the client disconnects, an endless body as soon as a write fails), and the server
//! records when and how each connection ended.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ota_protocol::device::{
    EnrollResponse, PollResponse, ReportRequest, ReportResponse, UpdateOffer,
};

/// How a body that never ends is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`, chunks forever.
    Chunked,
    /// No length at all: the body would end when the connection closes.
    CloseDelimited,
    /// A `Content-Length` of this many bytes (far more than the bundle).
    ContentLength(u64),
}

/// A 200 answer whose body never ends: `body[..prefix]`, then `filler` bytes forever (or until
/// a declared `Content-Length` is reached).
#[derive(Debug, Clone, Copy)]
pub struct Endless {
    /// How the body is delimited.
    pub framing: Framing,
    /// Bytes of the real bundle sent first.
    pub prefix: usize,
    /// The byte repeated after them.
    pub filler: u8,
}

/// How the server behaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// The file.
    pub body: Vec<u8>,
    /// Its ETag.
    pub etag: String,
    /// On the first request, close the connection after this many body bytes.
    pub drop_first_after: Option<usize>,
    /// On the first request, pause this long after `drop_first_after`'s offset instead of dropping.
    pub stall_first: Option<Duration>,
    /// Served (with a new ETag) for every request after the first.
    pub replaced_by: Option<Vec<u8>>,
    /// Answer 401 unless the request carries exactly this `Authorization` value.
    pub require_authorization: Option<String>,
    /// Answer every request for the bundle with this status (500, 503, 404, ...).
    pub status_forever: Option<u16>,
    /// With `status_forever`: send this `Retry-After` (seconds).
    pub retry_after_secs: Option<u64>,
    /// Answer every request for the bundle with a body that never ends.
    pub endless: Option<Endless>,
    /// Every response stalls (for at most this long, or until the client disconnects) and
    /// then closes: the first after `drop_first_after` body bytes (0 if unset), every later
    /// one right after its headers, so no retry ever makes progress.
    pub stall_every: Option<Duration>,
    /// Answer a Range request with `200` and the whole file.
    pub ignore_range: bool,
    /// Answer a Range request with a `206` whose Content-Range (and body) starts this many
    /// bytes away from the requested start.
    pub range_start_off_by: Option<i64>,
    /// Served with the SAME ETag for every request after the first (a file modified in
    /// place, or a tampering proxy): the HTTP layer cannot tell.
    pub tampered_after_first: Option<Vec<u8>>,
    /// Answer the device protocol: enroll, report, and a poll that offers this (always).
    pub offer: Option<UpdateOffer>,
    /// Every response sends its body one byte at a time with this pause after each byte (a
    /// slow-loris server: never silent long enough for a read timeout).
    pub trickle: Option<Duration>,
}

/// One request as seen by the server.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub authorization: Option<String>,
    /// When its request line and headers had arrived.
    pub at: Instant,
}

/// How a connection ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Body bytes written.
    pub body_bytes: u64,
    /// Why it ended: `None` when the server finished its answer, else the write error or
    /// "client disconnected".
    pub error: Option<String>,
    /// When.
    pub at: Instant,
}

pub struct Server {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub ended: Arc<Mutex<Vec<Ended>>>,
    pub reports: Arc<Mutex<Vec<ReportRequest>>>,
}

impl Server {
    pub fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(Vec::new()));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let (log, ends, reps) = (Arc::clone(&seen), Arc::clone(&ended), Arc::clone(&reports));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let b = behaviour.clone();
                let (log, ends, reps) = (Arc::clone(&log), Arc::clone(&ends), Arc::clone(&reps));
                std::thread::spawn(move || {
                    let mut conn = Conn { body_bytes: 0 };
                    let result = serve(stream, &b, &log, &reps, &mut conn);
                    ends.lock().unwrap().push(Ended {
                        body_bytes: conn.body_bytes,
                        error: result.err().map(|e| e.to_string()),
                        at: Instant::now(),
                    });
                });
            }
        });
        Server {
            base,
            seen,
            ended,
            reports,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests for the bundle (not the device protocol's).
    pub fn bundle_requests(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.path == "/bundle.otab")
            .collect()
    }

    /// The connections that have ended so far.
    pub fn ended(&self) -> Vec<Ended> {
        self.ended.lock().unwrap().clone()
    }

    /// The reports received (device protocol).
    pub fn reports(&self) -> Vec<ReportRequest> {
        self.reports.lock().unwrap().clone()
    }
}

/// What a connection did, for [`Ended`].
struct Conn {
    body_bytes: u64,
}

impl Conn {
    fn body(&mut self, out: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
        out.write_all(bytes)?;
        self.body_bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Waits up to `limit` or until the client closes the connection (then an error).
fn stall(stream: &TcpStream, limit: Duration) -> std::io::Result<()> {
    let until = Instant::now() + limit;
    stream.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut probe = [0u8; 1];
    let gone = || std::io::Error::other("client disconnected");
    while Instant::now() < until {
        match stream.peek(&mut probe) {
            Ok(0) => return Err(gone()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(gone()),
            // A pipelined request or junk: keep stalling.
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn json_response(out: &mut TcpStream, value: &impl serde::Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).unwrap();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)
}

fn serve(
    stream: TcpStream,
    b: &Behaviour,
    log: &Mutex<Vec<Seen>>,
    reports: &Mutex<Vec<ReportRequest>>,
    conn: &mut Conn,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    // The method does not matter: every path has one answer.
    words.next();
    let target = words.next().unwrap_or("/");
    // A forward proxy relays the absolute form (`GET http://host/path`), which servers must accept.
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None => target.to_string(),
    };
    let (mut range, mut if_range, mut authorization) = (None, None, None);
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "range" => range = Some(v.trim().to_string()),
            "if-range" => if_range = Some(v.trim().to_string()),
            "authorization" => authorization = Some(v.trim().to_string()),
            "content-length" => content_length = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut request_body = vec![0u8; content_length];
    reader.read_exact(&mut request_body)?;
    let first = {
        let mut l = log.lock().unwrap();
        l.push(Seen {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            authorization: authorization.clone(),
            at: Instant::now(),
        });
        path == "/bundle.otab" && l.iter().filter(|s| s.path == path).count() == 1
    };
    let mut out = stream;
    if let Some(offer) = &b.offer {
        match path.as_str() {
            ota_protocol::paths::CHALLENGE => {
                return json_response(
                    &mut out,
                    &ota_protocol::device::ChallengeResponse {
                        challenge: "c1.hostile".into(),
                        expires_in_secs: 300,
                    },
                )
            }
            ota_protocol::paths::ENROLL => {
                return json_response(
                    &mut out,
                    &EnrollResponse {
                        device_id: "robot".into(),
                        token: "ota1.hostile".into(),
                        poll_interval_secs: 0,
                        poll_jitter_secs: 0,
                    },
                )
            }
            // A hostile server: poll again at once, and here is the same offer again.
            ota_protocol::paths::POLL => {
                return json_response(
                    &mut out,
                    &PollResponse {
                        poll_interval_secs: 0,
                        poll_jitter_secs: 0,
                        update: Some(offer.clone()),
                        trust_version: None,
                        timestamp: None,
                    },
                )
            }
            ota_protocol::paths::REPORT => {
                if let Ok(r) = serde_json::from_slice::<ReportRequest>(&request_body) {
                    reports.lock().unwrap().push(r);
                }
                return json_response(
                    &mut out,
                    &ReportResponse {
                        accepted: true,
                        duplicate: false,
                    },
                );
            }
            _ => {}
        }
    }
    if b.require_authorization.is_some() && b.require_authorization != authorization {
        write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\nunauthorized"
        )?;
        return Ok(());
    }
    if path != "/bundle.otab" {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
        )?;
        return Ok(());
    }
    if let Some(status) = b.status_forever {
        let retry_after = b
            .retry_after_secs
            .map(|s| format!("Retry-After: {s}\r\n"))
            .unwrap_or_default();
        write!(
            out,
            "HTTP/1.1 {status} Hostile\r\n{retry_after}Content-Length: 7\r\nConnection: close\r\n\r\nhostile"
        )?;
        return out.flush();
    }
    let (body, etag) = match (&b.replaced_by, &b.tampered_after_first, first) {
        (Some(new), _, false) => (new.clone(), format!("{}-new", b.etag)),
        (_, Some(tampered), false) => (tampered.clone(), b.etag.clone()),
        _ => (b.body.clone(), b.etag.clone()),
    };
    let quoted = format!("\"{etag}\"");
    if let Some(e) = b.endless {
        let length = match e.framing {
            Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
            Framing::CloseDelimited => String::new(),
            Framing::ContentLength(n) => format!("Content-Length: {n}\r\n"),
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\n{length}ETag: {quoted}\r\nConnection: close\r\n\r\n"
        )?;
        let filler = vec![e.filler; 64 * 1024];
        let limit = match e.framing {
            Framing::ContentLength(n) => n,
            _ => u64::MAX,
        };
        let mut pieces = std::iter::once(&body[..e.prefix]).chain(std::iter::repeat(&filler[..]));
        while conn.body_bytes < limit {
            let piece = pieces.next().expect("endless");
            let piece = &piece[..piece.len().min((limit - conn.body_bytes) as usize)];
            if piece.is_empty() {
                continue;
            }
            if e.framing == Framing::Chunked {
                write!(out, "{:x}\r\n", piece.len())?;
                conn.body(&mut out, piece)?;
                out.write_all(b"\r\n")?;
            } else {
                conn.body(&mut out, piece)?;
            }
        }
        return out.flush();
    }
    let requested = range.as_deref().and_then(|r| {
        r.trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse::<usize>()
            .ok()
    });
    let start = match (requested, &if_range) {
        (Some(s), ir) if ir.as_deref().is_none_or(|v| v == quoted) && !b.ignore_range => {
            Some(s.saturating_add_signed(b.range_start_off_by.unwrap_or(0) as isize))
        }
        _ => None,
    };
    let stall_after =
        |already: usize| -> Option<(usize, Duration)> { b.stall_every.map(|d| (already, d)) };
    let (status_line, extra, from, stall_at) = match start {
        Some(s) if s < body.len() => (
            "206 Partial Content",
            format!(
                "Content-Range: bytes {}-{}/{}\r\n",
                s,
                body.len() - 1,
                body.len()
            ),
            s,
            stall_after(0),
        ),
        _ => {
            let stall_at = match (first, b.stall_every, b.drop_first_after) {
                (true, Some(_), n) => stall_after(n.unwrap_or(0)),
                (false, Some(_), _) => stall_after(0),
                (true, None, Some(n)) => Some((n, b.stall_first.unwrap_or(Duration::ZERO))),
                _ => None,
            };
            (
                "200 OK",
                "Accept-Ranges: bytes\r\n".to_string(),
                0,
                stall_at,
            )
        }
    };
    write!(
        out,
        "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n{extra}ETag: {quoted}\r\nConnection: close\r\n\r\n",
        body.len() - from
    )?;
    let rest = &body[from..];
    if let Some(pause) = b.trickle {
        for i in 0..rest.len() {
            conn.body(&mut out, &rest[i..i + 1])?;
            out.flush()?;
            std::thread::sleep(pause);
        }
        return out.flush();
    }
    match stall_at {
        None => conn.body(&mut out, rest)?,
        Some((n, pause)) => {
            conn.body(&mut out, &rest[..n.min(rest.len())])?;
            out.flush()?;
            if b.stall_every.is_some() {
                // Stall until the client gives up, then close without the rest.
                stall(&out, pause)?;
            } else if b.stall_first.is_some() {
                std::thread::sleep(pause);
                conn.body(&mut out, &rest[n.min(rest.len())..])?;
            }
            // Otherwise dropping the stream closes the connection mid-body.
        }
    }
    out.flush()
}
