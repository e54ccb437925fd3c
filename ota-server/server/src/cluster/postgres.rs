//! The PostgreSQL feed and lease, each on its own connection and thread (the sync `postgres` client; the
//! server's runtime never waits on them):
//!
//! - the notifier sends queued notices with `pg_notify` right after the commits they announce;
//! - the listener `LISTEN`s, hands the others' notices to the server, and after a lost connection reconnects and
//!   says [`Heard::Resync`] (what was announced in between is lost, so the server reloads everything);
//! - the lease holder takes a session-level advisory lock with `pg_try_advisory_lock` and confirms its session
//!   every [`LEASE_CHECK`]; a replica that dies loses its session and with it the lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use rand_core::{OsRng, RngCore};

use super::lease::{Check, Holding};
use super::notice::{Notice, CHANNEL};
use super::{Cluster, Feed, Heard, Lease};

/// The advisory lock key of the once-only periodic jobs ("ota" + 1).
pub const LEASE_KEY: i64 = 0x6f74_6101;

/// How often the lease holder confirms its session (and a waiting replica tries the lock).
pub const LEASE_CHECK: Duration = Duration::from_millis(500);

/// How long a confirmation lets the holder act ([`Holding::may_act`]).
pub const LEASE_TTL: Duration = Duration::from_millis(1500);

/// How long a thread waits before connecting again after losing its connection.
const RECONNECT: Duration = Duration::from_millis(500);

/// How a replica on PostgreSQL failed to join the others.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The database refused or could not be reached.
    #[error("cannot connect to PostgreSQL for the replicas' change feed: {0}")]
    Connect(#[from] postgres::Error),
    /// The connecting thread panicked.
    #[error("connecting to PostgreSQL for the replicas' change feed failed unexpectedly")]
    Panicked,
}

/// Connects the feed and the lease; `heard` receives the other replicas' notices. The threads end when the
/// returned [`Cluster`] is dropped and `heard`'s receiver is gone.
pub fn start(
    url: &str,
    heard: tokio::sync::mpsc::UnboundedSender<Heard>,
) -> Result<Cluster, JoinError> {
    let origin = OsRng.next_u64();
    // Fail at start on a wrong URL rather than retrying forever in the background. (On a thread of its own: the
    // sync client runs its own runtime, which may not start inside the server's.)
    let first = url.to_string();
    let (listener, notifier) = std::thread::spawn(move || {
        Ok::<_, postgres::Error>((listen(&first)?, Client::connect(&first, NoTls)?))
    })
    .join()
    .map_err(|_| JoinError::Panicked)??;
    let (queue, outbox) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(Mutex::new(Holding::default()));
    let epoch = Instant::now();
    {
        let url = url.to_string();
        std::thread::Builder::new()
            .name("ota-notify".into())
            .spawn(move || notify_loop(&url, notifier, outbox))
            .map_err(|e| tracing::error!("cannot start the notifier thread: {e}"))
            .ok();
    }
    {
        let url = url.to_string();
        std::thread::Builder::new()
            .name("ota-listen".into())
            .spawn(move || listen_loop(&url, listener, origin, &heard))
            .map_err(|e| tracing::error!("cannot start the listener thread: {e}"))
            .ok();
    }
    {
        let (url, stop, holding) = (url.to_string(), stop.clone(), holding.clone());
        std::thread::Builder::new()
            .name("ota-lease".into())
            .spawn(move || lease_loop(&url, &stop, &holding, epoch))
            .map_err(|e| tracing::error!("cannot start the lease thread: {e}"))
            .ok();
    }
    Ok(Cluster {
        origin,
        feed: Box::new(PgFeed(Mutex::new(queue))),
        lease: Box::new(PgLease {
            holding,
            epoch,
            stop,
        }),
        replicated: true,
    })
}

struct PgFeed(Mutex<Sender<Notice>>);

impl Feed for PgFeed {
    fn announce(&self, notice: Notice) {
        let _ = crate::fleet::lock(&self.0).send(notice);
    }
}

struct PgLease {
    holding: Arc<Mutex<Holding>>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
}

impl Lease for PgLease {
    fn held(&self) -> bool {
        crate::fleet::lock(&self.holding).may_act(self.epoch.elapsed(), LEASE_TTL)
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A connection that listens on [`CHANNEL`].
fn listen(url: &str) -> Result<Client, postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

/// Connects again until it works or `give_up` says to stop.
fn reconnect<T>(
    what: &str,
    mut connect: impl FnMut() -> Result<T, postgres::Error>,
    give_up: impl Fn() -> bool,
) -> Option<T> {
    loop {
        if give_up() {
            return None;
        }
        match connect() {
            Ok(client) => return Some(client),
            Err(e) => {
                tracing::warn!("{what}: cannot reconnect to PostgreSQL (will retry): {e}");
                std::thread::sleep(RECONNECT);
            }
        }
    }
}

/// Sends queued notices, each batch in one round trip; a batch that fails is sent again on a new connection.
fn notify_loop(url: &str, mut client: Client, outbox: Receiver<Notice>) {
    while let Ok(first) = outbox.recv() {
        let mut batch = vec![first.encode()];
        batch.extend(outbox.try_iter().take(255).map(|n| n.encode()));
        loop {
            match send(&mut client, &batch) {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!("change feed: NOTIFY failed (will reconnect): {e}");
                    match reconnect("change feed", || Client::connect(url, NoTls), || false) {
                        Some(c) => client = c,
                        None => return,
                    }
                }
            }
        }
    }
}

fn send(client: &mut Client, batch: &[String]) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    for payload in batch {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, payload])?;
    }
    tx.commit()
}

/// Hands the others' notices to the server until it stops listening.
fn listen_loop(
    url: &str,
    mut client: Client,
    origin: u64,
    heard: &tokio::sync::mpsc::UnboundedSender<Heard>,
) {
    let mut last_check = Instant::now();
    loop {
        let mut lost = false;
        let mut notifications = client.notifications();
        let mut notices = notifications.timeout_iter(Duration::from_millis(250));
        loop {
            match notices.next() {
                Ok(None) => break,
                Ok(Some(n)) => match Notice::decode(n.payload()) {
                    Some(notice) if notice.origin == origin => {}
                    Some(notice) => {
                        if heard.send(Heard::Notice(notice)).is_err() {
                            return;
                        }
                    }
                    None => {
                        tracing::warn!("change feed: skipped a notice this build does not read")
                    }
                },
                Err(e) => {
                    tracing::warn!("change feed: LISTEN connection lost: {e}");
                    lost = true;
                    break;
                }
            }
        }
        drop(notices);
        drop(notifications);
        if heard.is_closed() {
            return;
        }
        if !lost && last_check.elapsed() >= LEASE_CHECK {
            last_check = Instant::now();
            lost = client.is_closed() || client.is_valid(LEASE_CHECK).is_err();
        }
        if lost {
            match reconnect("change feed", || listen(url), || heard.is_closed()) {
                Some(c) => client = c,
                None => return,
            }
            if heard.send(Heard::Resync).is_err() {
                return;
            }
        }
    }
}

/// Takes the lease when free, confirms it while held, and drops the connection (and so the lock) at stop.
fn lease_loop(url: &str, stop: &AtomicBool, holding: &Mutex<Holding>, epoch: Instant) {
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let held = crate::fleet::lock(holding).held();
        let c = match &mut client {
            Some(c) => c,
            None => match Client::connect(url, NoTls) {
                Ok(c) => client.insert(c),
                Err(e) => {
                    tracing::warn!("lease: cannot connect to PostgreSQL (will retry): {e}");
                    std::thread::sleep(RECONNECT);
                    continue;
                }
            },
        };
        let at = epoch.elapsed();
        let check = if held {
            // The session-level lock lives as long as the session: an answer confirms both.
            c.simple_query("SELECT 1").map(|_| Check::Held)
        } else {
            c.query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_KEY])
                .map(|row| {
                    if row.get(0) {
                        Check::Held
                    } else {
                        Check::Taken
                    }
                })
        };
        let check = check.unwrap_or_else(|e| {
            tracing::warn!("lease: PostgreSQL did not answer (lease dropped): {e}");
            client = None;
            Check::Failed
        });
        if check == Check::Held && !held {
            tracing::info!(
                "this replica now runs the once-only periodic jobs (guards, timed stages)"
            );
        }
        crate::fleet::lock(holding).observe(check, at);
        std::thread::sleep(LEASE_CHECK);
    }
}
