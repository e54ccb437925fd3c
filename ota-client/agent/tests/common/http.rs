//! A tiny HTTP/1.1 file server on 127.0.0.1 (port 0) for download tests: serves one bundle at
//! `/bundle.otab` with an ETag and Range support, and can misbehave on purpose (drop the
//! connection mid-body, stall, change the file between requests).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

/// One request as seen by the server.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub authorization: Option<String>,
}

pub struct Server {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn start(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = log.lock().unwrap().len();
                let b = behaviour.clone();
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    let _ = serve(stream, &b, n, &log);
                });
            }
        });
        Server { base, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    b: &Behaviour,
    index: usize,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (mut range, mut if_range, mut authorization) = (None, None, None);
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
            _ => {}
        }
    }
    let first = {
        let mut l = log.lock().unwrap();
        l.push(Seen {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            authorization: authorization.clone(),
        });
        index == 0 && l.len() == 1
    };
    let mut out = stream;
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
    let (body, etag) = match (&b.replaced_by, first) {
        (Some(new), false) => (new.clone(), format!("{}-new", b.etag)),
        _ => (b.body.clone(), b.etag.clone()),
    };
    let quoted = format!("\"{etag}\"");
    let start = match (&range, &if_range) {
        (Some(r), ir) if ir.as_deref().is_none_or(|v| v == quoted) => r
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse::<usize>()
            .ok(),
        _ => None,
    };
    match start {
        Some(s) if s < body.len() => {
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nETag: {quoted}\r\nConnection: close\r\n\r\n",
                body.len() - s,
                s,
                body.len() - 1,
                body.len()
            )?;
            out.write_all(&body[s..])?;
        }
        _ => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nETag: {quoted}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            match (first, b.drop_first_after) {
                (true, Some(n)) => {
                    out.write_all(&body[..n])?;
                    out.flush()?;
                    if let Some(pause) = b.stall_first {
                        std::thread::sleep(pause);
                        out.write_all(&body[n..])?;
                    }
                    // Dropping the stream closes the connection mid-body.
                }
                _ => out.write_all(&body)?,
            }
        }
    }
    out.flush()
}
