//! A minimal HTTP forward proxy on 127.0.0.1, as robots and operators meet on site networks: `CONNECT host:port`
//! tunnels (HTTPS through `HTTPS_PROXY`) and absolute-form requests (`GET http://host/...` through
//! `HTTP_PROXY`) relayed byte for byte. It counts the connections it carried, so a test can tell whether a
//! client used it (and that `NO_PROXY` kept one away).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The proxy; stops accepting when dropped.
pub struct ForwardProxy {
    /// `http://127.0.0.1:PORT`, the value for `HTTP_PROXY` / `HTTPS_PROXY`.
    pub url: String,
    carried: Arc<AtomicUsize>,
    first_lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ForwardProxy {
    /// Starts it on a free loopback port.
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let carried = Arc::new(AtomicUsize::new(0));
        let first_lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, f, s) = (carried.clone(), first_lines.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (c, f) = (c.clone(), f.clone());
                std::thread::spawn(move || {
                    let _ = carry(stream, &c, &f);
                });
            }
        });
        ForwardProxy {
            url,
            carried,
            first_lines,
            stop,
        }
    }

    /// Connections carried so far.
    pub fn carried(&self) -> usize {
        self.carried.load(Ordering::SeqCst)
    }

    /// The first request line of each (`CONNECT host:port HTTP/1.1`, `GET http://... HTTP/1.1`).
    pub fn first_lines(&self) -> Vec<String> {
        self.first_lines.lock().unwrap().clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &self.url["http://".len()..].parse().unwrap(),
            Duration::from_millis(200),
        );
    }
}

fn carry(
    client: TcpStream,
    carried: &AtomicUsize,
    first_lines: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n" || line == "\n";
        head.push(line);
        if end {
            break;
        }
    }
    let first = head[0].trim_end().to_string();
    let mut parts = first.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let authority = if method == "CONNECT" {
        target
    } else {
        let rest = target.strip_prefix("http://").unwrap_or(&target);
        rest.split('/').next().unwrap_or("").to_string()
    };
    let mut upstream = TcpStream::connect(&authority)?;
    carried.fetch_add(1, Ordering::SeqCst);
    first_lines.lock().unwrap().push(first);
    let mut client_w = client.try_clone()?;
    if method == "CONNECT" {
        client_w.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    } else {
        // Servers accept absolute-form targets: relay the head as it came.
        upstream.write_all(head.concat().as_bytes())?;
    }
    // Whatever the reader buffered past the head goes first.
    let buffered = reader.buffer().to_vec();
    upstream.write_all(&buffered)?;
    let mut up_r = upstream.try_clone()?;
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut client_r = reader.into_inner();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match client_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if upstream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = down.join();
    Ok(())
}
