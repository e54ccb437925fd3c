//! One keep-alive HTTP/1.1 connection, driven by hyper's low-level client so the load generator spends as
//! little CPU per request as possible (no pool, no per-request allocation of a client).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// `application/json`.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A connection to the server; reconnects on demand after a failure.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Conn {
    /// A connection to `addr` (opened lazily by the first request). Requests longer than `timeout` fail.
    pub fn new(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Conn> {
        let host = HeaderValue::from_str(&addr.to_string())
            .context("address is not a valid Host header")?;
        Ok(Conn {
            addr,
            host,
            sender: None,
            timeout,
        })
    }

    async fn connect(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                // Ends when the server closes the connection or the sender is dropped.
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected just above"))
    }

    /// Sends one request and reads the whole answer. On any failure the connection is dropped (the next request
    /// reconnects), so one broken connection cannot poison later measurements.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let timeout = self.timeout;
        let result = tokio::time::timeout(
            timeout,
            self.send_inner(method, path, auth, content_type, body),
        )
        .await;
        match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                anyhow::bail!("no answer within {timeout:?}")
            }
        }
    }

    async fn send_inner(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let host = self.host.clone();
        let sender = self.connect().await?;
        sender.ready().await.context("connection closed")?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host);
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let request = request.body(Full::new(body))?;
        let response = sender
            .send_request(request)
            .await
            .context("request failed")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the answer failed")?
            .to_bytes();
        Ok((status, body))
    }
}

/// `Bearer <token>` as a header value.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).context("token is not a valid header value")
}
