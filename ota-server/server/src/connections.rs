//! The routes served over accepted TCP connections, with the limits of [`crate::listener`]: at most `cap` open
//! at once (at the cap the longest-idle one makes room, else new ones wait in the listen backlog), so a flood of
//! connections can neither exhaust the descriptors the server needs for its own files nor lock robots out.
//! HTTP/1.1 only: hyper's header-read timeout closes new and idle kept-alive connections, and h2c would get
//! round it. Request bodies that stop sending and clients that stop reading are cut off. TLS handshakes run
//! in each connection's own task, under the same cap.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::listener::{pick_victim, ConnectionLimits, ConnectionView};

/// How often a new connection waiting at the cap looks again for an idle one to replace.
const RECHECK: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` (HTTPS when `tls` is given) until `shutdown` completes, then lets each open
/// connection finish its request and waits for all of them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    cap: usize,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::new(cap));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(RECHECK).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = tokio::select! {
            permit = registry.admit() => permit,
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let io = SendDeadline::new(tcp, limits.send_timeout);
        let task = Connection {
            app: app.clone(),
            peer,
            limits: limits.clone(),
            stopping: stopping.clone(),
            entry: registry.register(),
            _permit: permit,
            _alive: alive.clone(),
        };
        let acceptor = acceptor.clone();
        let conn = task.entry.conn.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return task.run(io).await;
            };
            let handshake =
                tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(io));
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => task.run(stream).await,
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                () = conn.evict.notified() => {}
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(alive);
    let _ = all_done.recv().await;
}

/// One accepted connection and what it holds until it ends (its place under the cap, its registry entry).
struct Connection {
    app: Router,
    peer: SocketAddr,
    limits: ConnectionLimits,
    stopping: tokio::sync::watch::Receiver<bool>,
    entry: Entry,
    _permit: OwnedSemaphorePermit,
    _alive: tokio::sync::mpsc::Sender<()>,
}

impl Connection {
    async fn run<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, peer, body_timeout) = (self.app, self.peer, self.limits.body_read_timeout);
        let (conn, epoch) = (self.entry.conn.clone(), self.entry.registry.epoch);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = Busy::new(conn.clone(), epoch);
            let mut request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
            request.extensions_mut().insert(ConnectInfo(peer));
            let call = app.clone().oneshot(request);
            async move {
                let response = call.await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Answering { body, _busy: busy })))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    return;
                }
                () = self.entry.conn.evict.notified() => {
                    tracing::debug!(%peer, "closed an idle connection to make room at the connection cap");
                    return;
                }
                _ = self.stopping.changed(), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The open connections, so that one at the cap can make room.
struct Registry {
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    epoch: Instant,
    permits: Arc<Semaphore>,
}

/// One open connection as the registry sees it.
struct Conn {
    id: u64,
    busy: AtomicUsize,
    idle_since_ms: AtomicU64,
    evict: Notify,
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Registry {
    fn new(cap: usize) -> Registry {
        Registry {
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
            permits: Arc::new(Semaphore::new(cap)),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>) -> Entry {
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(millis_since(self.epoch)),
            evict: Notify::new(),
        });
        self.open().insert(conn.id, conn.clone());
        Entry {
            registry: self.clone(),
            conn,
        }
    }

    /// A place under the cap for a connection just accepted: a free one, or the longest-idle connection's.
    async fn admit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return permit;
            }
            self.make_room();
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    return permit.expect("the connection semaphore is never closed");
                }
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Tells the longest-idle connection to close (it gives its place back when its task ends).
    fn make_room(&self) {
        let mut open = self.open();
        let victim = pick_victim(open.values().map(|c| ConnectionView {
            id: c.id,
            busy: c.busy.load(Ordering::Acquire),
            idle_since_ms: c.idle_since_ms.load(Ordering::Acquire),
        }));
        if let Some(conn) = victim.and_then(|id| open.remove(&id)) {
            conn.evict.notify_one();
        }
    }
}

/// A connection's registry entry, removed when the connection ends.
struct Entry {
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.open().remove(&self.conn.id);
    }
}

/// A request being answered: its connection is busy until the response body is sent or dropped.
struct Busy {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Busy {
    fn new(conn: Arc<Conn>, epoch: Instant) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy { conn, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since_ms
            .store(millis_since(self.epoch), Ordering::Release);
        self.conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection [`Busy`] while it is sent.
struct Answering {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A stream whose writes fail with `TimedOut` once the peer has accepted nothing for `limit` (a client that
/// stopped reading would otherwise hold its connection and the response's resources forever).
struct SendDeadline<T> {
    io: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> SendDeadline<T> {
    fn new(io: T, limit: Duration) -> Self {
        SendDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client accepted no data within the send timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, result)
    }
}

/// Raises this process's soft limit of open files to its hard limit (systemd's soft default of 1024 would cap
/// a fleet's connections low) and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}
