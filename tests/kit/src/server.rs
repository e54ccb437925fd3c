//! An `ota-server` running in this process on a loopback port, for the demo and the tests: its own thread and
//! async runtime, so blocking callers (the demo, the robots' daemons, sync tests) need no runtime of their own.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::Context;
use ota_keys::TrustRoot;
use ota_protocol::client::{ApiClient, ClientOptions};
use ota_server::admission::AdmissionMode;
use ota_server::server::{self, Settings};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Data directory (SQLite database, bundle store, generated secrets).
    pub data_dir: PathBuf,
    /// Trust root uploads are checked against.
    pub trust: TrustRoot,
    /// Address to listen on first.
    pub listen: SocketAddr,
    /// Listen on a free port of 127.0.0.1 when `listen` is taken.
    pub fallback_to_free_port: bool,
    /// Admin token; `None`: the data directory's (generated on first start).
    pub admin_token: Option<String>,
    /// Enrollment secret; `None`: the data directory's (generated on first start).
    pub enrollment_secret: Option<String>,
    /// Poll interval suggested to robots.
    pub poll_interval_secs: u32,
    /// Poll jitter suggested to robots.
    pub poll_jitter_secs: u32,
    /// How robots unknown to the server are admitted: `Auto` for the demo and most tests (the fleet secret
    /// admits them); `Manual` for the tests of admission.
    pub admission: AdmissionMode,
}

impl ServerOptions {
    /// Defaults for tests and the demo: 127.0.0.1 on a free port, 1 s polls, no jitter.
    pub fn new(data_dir: &Path, trust: TrustRoot) -> ServerOptions {
        ServerOptions {
            data_dir: data_dir.to_path_buf(),
            trust,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fallback_to_free_port: false,
            admin_token: None,
            enrollment_secret: None,
            poll_interval_secs: 1,
            poll_jitter_secs: 0,
            admission: AdmissionMode::Auto,
        }
    }
}

/// An OTA server running in this process until stopped or dropped.
pub struct ServerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its admin token.
    pub admin_token: String,
    /// Its enrollment secret.
    pub enrollment_secret: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

fn read_secret(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_string())
}

fn bind(options: &ServerOptions) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(options.listen) {
        Ok(l) => Ok(l),
        Err(e) if options.fallback_to_free_port => {
            let l = TcpListener::bind(("127.0.0.1", 0))
                .context("cannot listen on a free port of 127.0.0.1")?;
            eprintln!(
                "{} is not available ({e}); using {} instead",
                options.listen,
                l.local_addr()?
            );
            Ok(l)
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {}", options.listen)),
    }
}

impl ServerHandle {
    /// Opens the data directory and serves it.
    pub fn start(options: &ServerOptions) -> anyhow::Result<ServerHandle> {
        ServerHandle::start_with(options, |_| {})
    }

    /// Like [`start`](Self::start), with `configure` changing the server's settings first (upload limits,
    /// allowed products, poll pacing...).
    pub fn start_with(
        options: &ServerOptions,
        configure: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<ServerHandle> {
        let mut settings = Settings::new(options.data_dir.clone(), options.trust.clone());
        settings.admin_token = options.admin_token.clone();
        settings.enrollment_secret = options.enrollment_secret.clone();
        settings.config.poll_interval_secs = options.poll_interval_secs;
        settings.config.poll_jitter_secs = options.poll_jitter_secs;
        settings.config.admission = options.admission;
        configure(&mut settings);
        let data_dir = settings.config.data_dir.clone();
        let (admin_token, enrollment_secret) = (
            settings.admin_token.clone(),
            settings.enrollment_secret.clone(),
        );
        let opened = server::open(settings).context("cannot open the server's data directory")?;
        // `None`: generated on the data directory's first start, read back as the server does.
        let admin_token = match admin_token {
            Some(t) => t,
            None => read_secret(&data_dir, "admin-token")?,
        };
        let enrollment_secret = match enrollment_secret {
            Some(s) => s,
            None => read_secret(&data_dir, "enrollment-secret")?,
        };
        let listener = bind(options)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = opened.state;
        let thread = std::thread::Builder::new()
            .name("ota-server".into())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    server::serve(state, listener, None, async move {
                        let _ = rx.await;
                    })
                    .await
                })
            })?;
        Ok(ServerHandle {
            addr,
            base: format!("http://{addr}"),
            data_dir,
            admin_token,
            enrollment_secret,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// A client of this server's API without a token (enrollment, or to check that a route wants one).
    pub fn anonymous(&self) -> ApiClient {
        ApiClient::new(&ClientOptions::new(&self.base)).expect("a client for a loopback URL")
    }

    /// A client of this server's API with the admin token.
    pub fn admin(&self) -> ApiClient {
        self.anonymous().with_token(&self.admin_token)
    }

    /// Stops gracefully (drains connections, flushes device state) and waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
