//! A static HTTP server on 127.0.0.1 for download benchmarks: one file at one path, served by tower-http's
//! `ServeFile` (Range requests, `Last-Modified`, `Content-Length`) from a single-threaded tokio runtime on a
//! background thread, so it takes at most one core from the client it feeds.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use tokio::sync::oneshot;
use tower_http::services::ServeFile;

/// A running server; dropping it stops the server and waits for its thread.
pub struct StaticServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl StaticServer {
    /// Serves `file` at `http://127.0.0.1:PORT/NAME` on a free port.
    pub fn start(file: &Path, name: &str) -> Result<StaticServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new().route_service(&format!("/{name}"), ServeFile::new(file));
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-http".into())
            .spawn(move || -> io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async {
                            let _ = stop.await;
                        })
                        .await
                })
            })
            .context("cannot start the HTTP server thread")?;
        Ok(StaticServer {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The URL of the file.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }

    /// Stops the server; returns its error, if it failed.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the HTTP server thread panicked"))?
                .context("HTTP server"),
            None => Ok(()),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_file_with_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.otab");
        std::fs::write(&file, b"0123456789").unwrap();
        let server = StaticServer::start(&file, "b.otab").unwrap();
        assert!(server.url("b.otab").starts_with("http://127.0.0.1:"));
        let whole = get(
            server.addr,
            "GET /b.otab HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
        assert!(whole.ends_with("0123456789"), "{whole}");
        let part = get(
            server.addr,
            "GET /b.otab HTTP/1.1\r\nHost: x\r\nRange: bytes=4-\r\nConnection: close\r\n\r\n",
        );
        assert!(part.starts_with("HTTP/1.1 206"), "{part}");
        assert!(
            part.to_ascii_lowercase()
                .contains("content-range: bytes 4-9/10"),
            "{part}"
        );
        assert!(part.ends_with("456789"), "{part}");
        let missing = get(
            server.addr,
            "GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.stop().unwrap();
    }
}
