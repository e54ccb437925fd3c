//! Opening a data directory into an [`AppState`] and serving it over HTTP or HTTPS until told to stop.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ota_keys::TrustRoot;
use tokio::net::TcpListener;

use rand_core::{OsRng, RngCore};

use crate::config::{Config, Secrets};
use crate::state::AppState;
use crate::store::Store;
use crate::tokens;

/// Everything needed to open a server.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Runtime settings.
    pub config: Config,
    /// Admin token to accept; `None`: use `<data-dir>/admin-token`, generating it on first start.
    pub admin_token: Option<String>,
    /// Enrollment secret; `None`: use `<data-dir>/enrollment-secret`, generating it on first start.
    pub enrollment_secret: Option<String>,
}

impl Settings {
    /// Defaults for a data directory and trust root (what `ota-server serve` uses without flags).
    pub fn new(data_dir: PathBuf, trust: TrustRoot) -> Self {
        Settings {
            config: Config {
                data_dir: data_dir.clone(),
                trust,
                max_upload_bytes: 8 << 30,
                allowed_compatible: Vec::new(),
                poll_interval_secs: 60,
                poll_jitter_secs: 15,
                min_poll_interval: Duration::ZERO,
                max_inflight_device_requests: 4096,
                max_json_bytes: 256 * 1024,
                history_retention_secs: 30 * 86_400,
                guard_interval: Duration::from_secs(2),
                metrics_token_hash: None,
                database: None,
                bundle_store: crate::bundle_store::BundleStoreRef(Arc::new(
                    crate::bundle_store::local::LocalDir::new(data_dir.join("blobs")),
                )),
                presign_downloads: None,
                admission: Default::default(),
                device_token_ttl_secs: 86_400,
                connections: crate::listener::ConnectionLimits::default(),
                alerts: crate::alerts::AlertSettings::default(),
                accounts: crate::accounts::AccountSettings::default(),
            },
            admin_token: None,
            enrollment_secret: None,
        }
    }
}

/// An opened server state and what was generated on this start.
pub struct Opened {
    /// The state.
    pub state: Arc<AppState>,
    /// Secrets generated on this start, with the file each was saved to (print them once).
    pub generated: Vec<(&'static str, String, PathBuf)>,
}

/// 32 random bytes as 64 hex digits (generated secrets and the token key).
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Minimum length of operator-chosen secrets.
const MIN_SECRET_LEN: usize = 16;

fn secret(
    given: Option<String>,
    path: &Path,
    what: &'static str,
    flag: &str,
    generated: &mut Vec<(&'static str, String, PathBuf)>,
) -> anyhow::Result<String> {
    if let Some(value) = given {
        if value.len() < MIN_SECRET_LEN {
            bail!("{flag} must be at least {MIN_SECRET_LEN} characters long");
        }
        return Ok(value);
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let value = text.trim().to_string();
            if value.len() < MIN_SECRET_LEN {
                bail!("{} holds a {what} shorter than {MIN_SECRET_LEN} characters; delete it to generate a new one", path.display());
            }
            Ok(value)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = random_hex();
            crate::bundle_store::write_secret_file(path, &value)
                .with_context(|| format!("cannot write {}", path.display()))?;
            generated.push((what, value.clone(), path.to_path_buf()));
            Ok(value)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Opens (creating if needed) the data directory: database, blob store, secrets; loads the working set.
pub fn open(settings: Settings) -> anyhow::Result<Opened> {
    let dir = settings.config.data_dir.clone();
    let database = settings.config.database.as_deref();
    let sqlite = match crate::store::Backend::from_url(database, &dir) {
        Ok(crate::store::Backend::Sqlite(path)) => Some(path),
        _ => None,
    };
    crate::data_dir::make_private(&dir, sqlite.as_deref())?;
    let store: Arc<dyn Store> = crate::store::open(database, &dir).with_context(|| {
        let backend = crate::store::Backend::from_url(database, &dir);
        format!(
            "cannot open the {}",
            backend.map_or_else(|_| "database".to_string(), |b| b.describe())
        )
    })?;
    let bundles = settings.config.bundle_store.clone();
    for removed in crate::bundle_store::sweep(&dir, &*bundles, store.as_ref())? {
        tracing::info!("removed leftover {}", removed.display());
    }
    let mut generated = Vec::new();
    let admin = secret(
        settings.admin_token,
        &dir.join("admin-token"),
        "admin token",
        "--admin-token",
        &mut generated,
    )?;
    let enrollment = secret(
        settings.enrollment_secret,
        &dir.join("enrollment-secret"),
        "enrollment secret",
        "--enrollment-secret",
        &mut generated,
    )?;
    let token_key = match store.setting("token_key")? {
        Some(hex_key) => {
            hex::decode(hex_key.trim()).context("database setting token_key is not hex")?
        }
        None => {
            let key = random_hex();
            store.set_setting("token_key", &key)?;
            hex::decode(key)?
        }
    };
    let secrets = Secrets {
        admin_token_hashes: vec![tokens::hash_token(&admin)],
        enrollment_secret: enrollment,
        token_key,
    };
    let state =
        AppState::new(settings.config, secrets, store).context("cannot load the database")?;
    Ok(Opened { state, generated })
}

/// Also feeds systemd's watchdog: a server whose flusher stops ticking (a wedged runtime or store) is restarted.
async fn flush_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dog = ota_packaging::Notifier::from_env();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                dog.alive();
                if let Err(e) = state.flush().await {
                    tracing::error!("write-behind flush failed (will retry): {e}");
                }
                if let Err(e) = state.rollouts.tick().await {
                    tracing::error!("rollout tick (late joiners, deadlines, soak) failed: {e}");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Removes a shared store's old blobs without a database row (a local store was swept by [`open`]).
async fn sweep_remote(state: Arc<AppState>) {
    match state.bundles.sweep_store().await {
        Ok(removed) => removed
            .iter()
            .for_each(|id| tracing::info!("removed orphaned blob {id} from the bundle store")),
        Err(e) => tracing::warn!(
            "cannot sweep the bundle store for orphaned blobs (will retry at the next start): {e}"
        ),
    }
}

/// On PostgreSQL, joins the other replicas of the same database ([`crate::cluster`]): announces this one's
/// commits, applies theirs, and takes part in the lease of the once-only jobs. Alone on SQLite, does nothing.
fn join_replicas(state: &Arc<AppState>) -> anyhow::Result<()> {
    let config = state.config();
    let backend = crate::store::Backend::from_url(config.database.as_deref(), &config.data_dir)?;
    let crate::store::Backend::Postgres(url) = backend else {
        return Ok(());
    };
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    // Whatever changed between loading the working set and listening is reloaded first.
    let _ = heard.send(crate::cluster::Heard::Resync);
    let cluster = crate::cluster::postgres::start(&url, heard)?;
    let shared = state.rollouts.0.clone();
    if shared.join(cluster).is_err() {
        bail!("this server already runs alone; join the other replicas before serving");
    }
    let replicas = crate::services::replicas::ReplicaService(shared);
    let mut stop = state.shutdown_signal();
    tokio::spawn(async move {
        loop {
            let heard = tokio::select! {
                heard = hearing.recv() => heard,
                _ = stop.changed() => None,
            };
            let Some(heard) = heard else { return };
            if let Err(e) = replicas.hear(heard).await {
                tracing::error!(
                    "applying another replica's change failed; reloading everything: {e}"
                );
                if let Err(e) = replicas.resync().await {
                    tracing::error!(
                        "reloading the working set failed (will retry at the next change): {e}"
                    );
                }
            }
        }
    });
    Ok(())
}

/// How often the stored telemetry history is downsampled and pruned.
const COMPACT_EVERY: Duration = Duration::from_secs(3600);

/// The health guards' tick ([`crate::services::watch`]), and the history's hourly compaction.
async fn watch_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(state.config().guard_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compact = tokio::time::interval(COMPACT_EVERY);
    compact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = state.watch.tick(crate::fleet::unix_now()).await {
                    tracing::error!("health guard evaluation failed (will retry): {e}");
                }
            }
            // One replica compacts at a time (the lease holder; always a replica alone).
            _ = compact.tick(), if state.rollouts.0.leads() => {
                match state.history.compact(crate::fleet::unix_now()).await {
                    Ok(removed) => tracing::debug!("telemetry history compacted ({removed} rows folded or expired)"),
                    Err(e) => tracing::error!("telemetry history compaction failed (will retry): {e}"),
                }
                match state.retention.prune_reports(crate::fleet::unix_now()).await {
                    Ok(removed) => tracing::debug!("{removed} reports and cleared alerts past their retention deleted"),
                    Err(e) => tracing::error!("deleting old reports failed (will retry): {e}"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The alerts' and maintenance scores' tick ([`crate::services::alerts`]); starts the webhook if configured.
async fn alerts_loop(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let settings = &state.config().alerts;
    if let Some((url, secret)) = settings.webhook.clone() {
        match crate::alerts::webhook::HttpSender::new() {
            Ok(sender) => state.alerts.start_webhook(url, secret, Arc::new(sender)),
            Err(e) => tracing::error!("alert webhook disabled: {e}"),
        }
    }
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = state.alerts.tick(crate::fleet::unix_now()).await {
                    tracing::error!("alert evaluation failed (will retry): {e}");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Serves until `shutdown` completes, then drains connections, ends event streams and flushes pending device
/// state. `tls`: serve HTTPS with this config instead of plain HTTP.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    join_replicas(&state)?;
    let flusher = tokio::spawn(flush_loop(state.clone(), state.shutdown_signal()));
    tokio::spawn(sweep_remote(state.clone()));
    let watcher = tokio::spawn(watch_loop(state.clone(), state.shutdown_signal()));
    tokio::spawn(alerts_loop(state.clone(), state.shutdown_signal()));
    let app = crate::api::routes::app(state.clone());
    let st = state.clone();
    let notifier = ota_packaging::Notifier::from_env();
    if let Err(e) = notifier.ready() {
        tracing::warn!("cannot tell systemd the server is ready ($NOTIFY_SOCKET): {e}");
    }
    let signal = async move {
        shutdown.await;
        notifier.stopping();
        st.begin_shutdown();
    };
    let limits = state.config().connections.clone();
    let cap = crate::listener::connection_cap(
        limits.max_connections,
        crate::connections::raise_fd_limit(),
    );
    tracing::debug!("serving at most {cap} connections at once");
    crate::connections::serve(listener, app, tls, limits, cap, signal).await;
    state.begin_shutdown();
    let _ = flusher.await;
    let _ = watcher.await;
    state
        .flush()
        .await
        .map_err(|e| anyhow::anyhow!("final flush of device state failed: {e}"))?;
    state
        .history
        .flush(crate::fleet::unix_now(), true)
        .await
        .map_err(|e| anyhow::anyhow!("final flush of the telemetry history failed: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_is_64_fresh_digits() {
        assert_eq!(super::random_hex().len(), 64);
        assert_ne!(super::random_hex(), super::random_hex());
    }
}
