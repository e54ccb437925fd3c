//! A fault-injecting HTTP proxy on 127.0.0.1 between robots and a server: cut a download mid-body, play
//! dead, answer 503 with `Retry-After`, fail downloads with a status, follow a restarted server to its new
//! port, slow downloads down. It records every request it saw, with what it did to it, and counts the bytes it relayed
//! from the server for downloads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the proxy treats the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Forward,
    /// Accept and close at once (a dead server).
    Down,
    /// Answer `503` with `Retry-After: N`.
    Busy(u64),
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// `Range` header.
    pub range: Option<String>,
    /// How the proxy answered (`forward`, `cut`, `down`, `busy`).
    pub fate: &'static str,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    mode: Mutex<Mode>,
    /// Cut the next download response after this many bytes (then disarm).
    cut_next_download: Mutex<Option<usize>>,
    /// Answer every download with this status.
    fail_downloads: Mutex<Option<u16>>,
    seen: Mutex<Vec<Seen>>,
    /// Relay download responses at most this many bytes per second (`None`: as fast as they come).
    download_rate: Mutex<Option<u64>>,
    /// Response bytes (head and body) relayed from the server for downloads.
    download_bytes: AtomicU64,
    /// A header line added to every forwarded request.
    add_header: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// The proxy; stops when dropped.
pub struct Proxy {
    /// Where robots connect.
    pub base: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            mode: Mutex::new(Mode::Forward),
            cut_next_download: Mutex::new(None),
            fail_downloads: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            download_rate: Mutex::new(None),
            download_bytes: AtomicU64::new(0),
            add_header: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = handle(stream, &s);
                });
            }
        });
        Proxy {
            base: format!("http://{addr}"),
            addr,
            shared,
        }
    }

    /// Sets the mode for new connections.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Forwards new connections to `upstream` (a restarted server).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    /// Cuts the next bundle download after `bytes` bytes of the response.
    pub fn cut_next_download(&self, bytes: usize) {
        *self.shared.cut_next_download.lock().unwrap() = Some(bytes);
    }

    /// Answers every bundle download with `status` (`None`: forward again).
    pub fn fail_downloads(&self, status: Option<u16>) {
        *self.shared.fail_downloads.lock().unwrap() = status;
    }

    /// Relays download responses at most `bytes_per_sec` (`None`: at full speed), for a slow link.
    pub fn set_download_rate(&self, bytes_per_sec: Option<u64>) {
        *self.shared.download_rate.lock().unwrap() = bytes_per_sec;
    }

    /// Adds `line` (`Name: value`) to every request it forwards (`None`: none), e.g. the `Authorization` a robot's
    /// daemon would send, for a client run without one.
    pub fn add_header(&self, line: Option<String>) {
        *self.shared.add_header.lock().unwrap() = line;
    }

    /// Response bytes (head and body) relayed from the server for downloads so far: what the robots' link carried.
    pub fn download_bytes(&self) -> u64 {
        self.shared.download_bytes.load(Ordering::SeqCst)
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn handle(client: TcpStream, s: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    head.extend_from_slice(line.as_bytes());
    let (mut range, mut length) = (None, 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(());
        }
        if h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "range" => range = Some(v.trim().to_string()),
            "content-length" => length = v.trim().parse().unwrap_or(0),
            // One request per connection, so each can be treated on its own.
            "connection" => continue,
            _ => {}
        }
        head.extend_from_slice(h.as_bytes());
    }
    if let Some(line) = s.add_header.lock().unwrap().as_deref() {
        head.extend_from_slice(format!("{line}\r\n").as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let mode = *s.mode.lock().unwrap();
    let is_download = path.ends_with("/download");
    let cut = if is_download && mode == Mode::Forward {
        s.cut_next_download.lock().unwrap().take()
    } else {
        None
    };
    let fail = if is_download && mode == Mode::Forward {
        *s.fail_downloads.lock().unwrap()
    } else {
        None
    };
    let fate = match (mode, cut) {
        _ if fail.is_some() => "failed",
        (Mode::Down, _) => "down",
        (Mode::Busy(_), _) => "busy",
        (Mode::Forward, Some(_)) => "cut",
        (Mode::Forward, None) => "forward",
    };
    s.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        method,
        path,
        range,
        fate,
    });
    let mut client = client;
    match mode {
        Mode::Down => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
        Mode::Busy(secs) => {
            let msg = r#"{"error":"overloaded; retry later"}"#;
            write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {secs}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            )?;
            return client.flush();
        }
        Mode::Forward => {}
    }
    if let Some(status) = fail {
        let msg = r#"{"error":"injected failure"}"#;
        write!(
            client,
            "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )?;
        return client.flush();
    }
    let upstream_addr = *s.upstream.lock().unwrap();
    let mut upstream = match TcpStream::connect_timeout(&upstream_addr, Duration::from_secs(2)) {
        Ok(u) => u,
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    upstream.write_all(&head)?;
    upstream.write_all(&body)?;
    upstream.flush()?;
    let mut sent = 0usize;
    let mut buf = [0u8; 8192];
    let started = Instant::now();
    loop {
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if is_download {
            s.download_bytes.fetch_add(n as u64, Ordering::SeqCst);
            pace(*s.download_rate.lock().unwrap(), started, sent + n);
        }
        let n = match cut {
            Some(limit) if sent + n >= limit => {
                client.write_all(&buf[..limit - sent])?;
                client.flush()?;
                // Mid-body: drop both connections.
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => n,
        };
        client.write_all(&buf[..n])?;
        sent += n;
    }
    client.flush()
}

/// Sleeps until `bytes` are due at `rate` bytes per second since `started`.
fn pace(rate: Option<u64>, started: Instant, bytes: usize) {
    let Some(rate) = rate.filter(|r| *r > 0) else {
        return;
    };
    let due = started + Duration::from_secs_f64(bytes as f64 / rate as f64);
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}
