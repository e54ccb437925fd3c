//! `ota-server`: run the fleet server (`serve`) or administer a running one (`rollout ...`, `devices ...`).

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use ota_protocol::admin::CreateRolloutRequest;
use ota_protocol::client::ApiClient;
use ota_protocol::defaults;
use ota_protocol::fleet::{DeviceLabels, GroupSettings};
use ota_server::cli::commands::{DevicesCommand, GroupsCommand, RolloutCommand, TrustCommand};
use ota_server::cli::{self, RemoteArgs};
use ota_server::server::{self, Settings};
use ota_server::settings;

/// Polls are small allocations on many threads; glibc malloc took 14 % of the server's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// OTA fleet server and its admin client.
#[derive(Parser)]
#[command(name = "ota-server", version, about, long_about = None)]
struct Program {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start: `serve`'s many flags cost nothing worth a Box
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create, list and control staged rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Look at the device inventory; label devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Device groups and their maintenance windows.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Published bundles: delete those no rollout uses.
    #[command(subcommand)]
    Bundles(ota_server::cli::bundles::BundlesCommand),
    /// Rotated trust roots: publish the next one to the fleet, list the chain.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Operator accounts (viewer, operator, admin) and your own API tokens.
    #[command(subcommand)]
    Users(ota_server::cli::users::UsersCommand),
    /// Print the timestamp key's public half and the trust root `timestamp` role naming it (generating the
    /// key in the data directory if there is none yet).
    TimestampKey {
        /// The server's data directory.
        #[arg(long, default_value = "./ota-data")]
        data_dir: PathBuf,
        /// The key file, when `serve` is given --timestamp-key.
        #[arg(long, value_name = "FILE")]
        timestamp_key: Option<PathBuf>,
    },
}

/// `serve`'s flags. Each is also a key of the config file (`settings::file`), so a new flag needs nothing more
/// than its line here and in docs/server-config.md (a test compares the two).
#[derive(Args)]
struct ServeArgs {
    /// TOML config file; its keys are these flags without the `--` (default: /etc/ota-server/config.toml if it
    /// exists). Command line > environment > file > default.
    #[arg(long, env = "OTA_SERVER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = defaults::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory for the database, bundle store, trust root and generated secrets.
    #[arg(long, default_value = "./ota-data")]
    data_dir: PathBuf,
    /// Trust root uploads are checked against (trust JSON or a single release .pub). Kept in the data directory
    /// on first start; later only the same root or a successor signed by the kept one replaces it.
    #[arg(long, alias = "trust", value_name = "FILE")]
    trust_root: Option<PathBuf>,
    /// Admin token (default: DATA_DIR/admin-token, generated on first start).
    #[arg(long, env = defaults::ADMIN_TOKEN_ENV, hide_env_values = true)]
    admin_token: Option<String>,
    /// File holding the admin token (instead of --admin-token, so no config file needs to hold it).
    #[arg(long, conflicts_with = "admin_token", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Fleet enrollment secret (default: DATA_DIR/enrollment-secret, generated on first start).
    #[arg(long, env = defaults::ENROLLMENT_SECRET_ENV, hide_env_values = true)]
    enrollment_secret: Option<String>,
    /// File holding the fleet enrollment secret (instead of --enrollment-secret).
    #[arg(long, conflicts_with = "enrollment_secret", value_name = "FILE")]
    enrollment_secret_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); serve HTTPS. Needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest bundle accepted, in bytes.
    #[arg(long, default_value_t = 8 << 30)]
    max_upload_bytes: u64,
    /// Accept only bundles with this `compatible` (repeatable; default: any).
    #[arg(long = "allowed-compatible")]
    allowed_compatible: Vec<String>,
    /// Poll interval suggested to devices, in seconds.
    #[arg(long, default_value_t = 60)]
    poll_interval_secs: u32,
    /// Random extra delay suggested to devices, up to this many seconds.
    #[arg(long, default_value_t = 15)]
    poll_jitter_secs: u32,
    /// Answer 429 to a device polling more often than this (0: no limit).
    #[arg(long, default_value_t = 0)]
    min_poll_interval_ms: u64,
    /// Answer 503 when more device requests than this are in flight.
    #[arg(long, default_value_t = 4096)]
    max_inflight_device_requests: usize,
    /// Delete telemetry history older than this many days.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    history_retention_days: u64,
    /// Evaluate the rollouts' health guards this often, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..))]
    guard_interval_ms: u64,
    /// Read-only scrape token: accepted on GET /metrics only (the admin token works there too). At least 16
    /// characters.
    #[arg(long, env = "OTA_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// File holding the scrape token (instead of --metrics-token).
    #[arg(long, conflicts_with = "metrics_token", value_name = "FILE")]
    metrics_token_file: Option<PathBuf>,
    /// Database URL: postgres://USER@HOST:PORT/DATABASE (password in the URL or PGPASSWORD) to share one
    /// PostgreSQL between replicas, or sqlite:PATH (default: the SQLite file DATA_DIR/ota.sqlite).
    #[arg(long, env = "OTA_DATABASE", value_name = "URL")]
    database: Option<String>,
    /// Where bundles live: `local` (DATA_DIR/blobs) or s3://BUCKET[/PREFIX][?endpoint=URL&region=REGION] for an
    /// S3-compatible store (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); see
    /// docs/bundle-store.md.
    #[arg(
        long,
        env = "OTA_BUNDLE_STORE",
        value_name = "URL",
        default_value = "local"
    )]
    bundle_store: String,
    /// How robots unknown to the server are admitted: `manual` (they wait, pending, until
    /// `ota-server devices admit ID`) or `auto` (the enrollment secret alone admits them: labs and demos).
    #[arg(long, value_enum, default_value_t = ota_server::admission::AdmissionMode::Manual)]
    admission: ota_server::admission::AdmissionMode,
    /// Lifetime of a device token, in seconds; a robot renews it by proving its key again.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..))]
    device_token_ttl_secs: u64,
    /// Answer bundle downloads with a 307 to a short-lived presigned URL of the store's object instead of
    /// streaming them through the server (needs an s3:// --bundle-store; robots verify every byte either way).
    #[arg(long)]
    presign_downloads: bool,
    /// Online key signing the freshness timestamp every poll answer carries (ed25519 PKCS#8 PEM; default:
    /// DATA_DIR/timestamp.key, generated on first start). Robots whose trust root names a timestamp role check
    /// it: `ota-server timestamp-key` prints the role to put there.
    #[arg(long, value_name = "FILE")]
    timestamp_key: Option<PathBuf>,
    /// Re-sign the timestamp this often, in seconds; each is valid for three periods.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    timestamp_period_secs: u64,
    #[command(flatten)]
    connections: ota_server::listener::ConnectionArgs,
    #[command(flatten)]
    accounts: ota_server::accounts::AccountArgs,
    #[command(flatten)]
    alerts: Box<ota_server::alerts::AlertArgs>,
}

fn remote(args: &RemoteArgs) -> anyhow::Result<ApiClient> {
    cli::connect(&args.server, &args.token, args.ca_file.as_deref())
}

/// A secret given directly or as a file (its content without the final newline); `None`: neither.
fn secret(
    value: Option<String>,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(v), _) => Ok(Some(v)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// The program with the config file's keys put in front of `serve`'s command-line arguments; unchanged when
/// there is no config file (none given and none at the default path).
fn with_config_file(program: Program) -> anyhow::Result<Program> {
    let Command::Serve(args) = &program.command else {
        return Ok(program);
    };
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(settings::file::DEFAULT_CONFIG_PATH), false),
    };
    let Some(text) = settings::file::read(&path, required)? else {
        return Ok(program);
    };
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut definition = Program::command();
    definition.build();
    let matches = definition.clone().try_get_matches_from(&argv)?;
    let (serve_definition, serve_matches) = definition
        .find_subcommand("serve")
        .zip(matches.subcommand_matches("serve"))
        .context("`serve` expected")?;
    let extra = settings::file::file_args(serve_definition, &text, &path, |id| {
        settings::file::set_by_user(serve_matches, id)
    })?;
    let at = argv
        .iter()
        .position(|a| a == "serve")
        .context("`serve` expected")?
        + 1;
    let full = argv[..at].iter().chain(&extra).chain(&argv[at..]).cloned();
    Ok(Program::try_parse_from(full)?)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down");
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    ota_server::data_dir::make_private(&args.data_dir, None)?;
    let (trust, changed) = settings::trust::keep(&args.data_dir, args.trust_root.as_deref())?;
    if let Some(line) = changed {
        tracing::info!("{line}");
    }
    let mut settings = Settings::new(args.data_dir.clone(), trust);
    settings.admin_token = secret(
        args.admin_token.clone(),
        args.admin_token_file.as_deref(),
        "admin token",
    )?;
    settings.enrollment_secret = secret(
        args.enrollment_secret.clone(),
        args.enrollment_secret_file.as_deref(),
        "enrollment secret",
    )?;
    let c = &mut settings.config;
    c.max_upload_bytes = args.max_upload_bytes;
    c.allowed_compatible = args.allowed_compatible.clone();
    c.poll_interval_secs = args.poll_interval_secs;
    c.poll_jitter_secs = args.poll_jitter_secs;
    c.min_poll_interval = Duration::from_millis(args.min_poll_interval_ms);
    c.max_inflight_device_requests = args.max_inflight_device_requests;
    c.history_retention_secs = args.history_retention_days * 86_400;
    c.guard_interval = Duration::from_millis(args.guard_interval_ms);
    c.metrics_token_hash = ota_server::metrics::scrape_token_hash(secret(
        args.metrics_token.clone(),
        args.metrics_token_file.as_deref(),
        "metrics token",
    )?)?;
    c.database = args.database.clone();
    c.admission = args.admission;
    c.device_token_ttl_secs = args.device_token_ttl_secs;
    let (store, presign) =
        ota_server::bundle_store::spec::choose(&args.bundle_store, args.presign_downloads)
            .map_err(anyhow::Error::msg)?;
    c.bundle_store = ota_server::bundle_store::BundleStoreRef::open(&store, &args.data_dir)?;
    c.presign_downloads = presign;
    c.connections = args.connections.limits();
    c.alerts = args.alerts.settings(secret(
        args.alerts.alert_webhook_secret.clone(),
        args.alerts.alert_webhook_secret_file.as_deref(),
        "alert webhook secret",
    )?)?;
    c.accounts = args.accounts.settings();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ota_server::tls::load_server_config(cert, key)?),
        _ => None,
    };
    let opened = server::open(settings)?;
    for (what, value, path) in &opened.generated {
        println!("generated {what} (saved to {}): {value}", path.display());
    }
    let (key, generated) =
        ota_server::timestamp::load_or_generate(&args.data_dir, args.timestamp_key.as_deref())?;
    if let Some(public) = generated {
        println!("generated the timestamp key ({}): name it in the trust root, see `ota-server timestamp-key`", public.display());
    }
    let period = Duration::from_secs(args.timestamp_period_secs);
    let _ = opened
        .state
        .set_timestamper(ota_server::timestamp::Timestamper::new(key, period));
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{}", listener.local_addr()?);
        println!(
            "ota-server listening on {scheme}://{}",
            listener.local_addr()?
        );
        server::serve(opened.state, listener, tls, shutdown_signal()).await
    })
}

/// `value` as the API's JSON with `--json`, else as text lines.
fn print_json_or<T: serde::Serialize>(json: bool, value: &T, lines: impl FnOnce(&T)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        lines(value);
    }
}

/// A list as JSON, or one formatted line per item (`none` when it is empty).
fn print_list<T: serde::Serialize>(
    json: bool,
    items: &[T],
    none: &str,
    line: impl Fn(&T) -> String,
) {
    print_json_or(json, &items, |items| {
        if items.is_empty() {
            println!("{none}");
        }
        for item in *items {
            println!("{}", line(item));
        }
    });
}

/// `rollout create` and `rollout revert`: the aim applied to the request, the rollout created and printed.
fn create(
    r: &RemoteArgs,
    mut request: CreateRolloutRequest,
    aim: &cli::AimArgs,
    what: &str,
) -> anyhow::Result<()> {
    aim.apply(&mut request)?;
    let info = remote(r)?.create_rollout(&request)?;
    print_json_or(r.json, &info, |i| {
        println!("{what}\n{}", cli::format_rollout(i))
    });
    Ok(())
}

fn run(program: Program) -> anyhow::Result<()> {
    match program.command {
        Command::Serve(args) => serve(args),
        Command::Bundles(cmd) => ota_server::cli::bundles::run(cmd),
        Command::Users(cmd) => cli::users::run(cmd),
        Command::Rollout(cmd) => match cmd {
            RolloutCommand::Create {
                remote: r,
                bundle,
                tags,
                plan,
                aim,
            } => {
                let request = CreateRolloutRequest {
                    tags: cli::parse_tags(&tags)?,
                    ..plan.request(bundle)
                };
                create(&r, request, &aim, "created rollout")
            }
            RolloutCommand::List { remote: r } => {
                let list = remote(&r)?.rollouts()?;
                print_list(r.json, &list, "no rollouts", cli::format_rollout);
                Ok(())
            }
            RolloutCommand::Show { remote: r, id } => {
                let detail = remote(&r)?.rollout(id)?;
                print_json_or(r.json, &detail, |d| {
                    println!("{}", cli::format_rollout(&d.rollout));
                    for m in &d.devices {
                        let mut line = format!("  {:>5}  {:<24} {}", m.rank, m.device_id, m.status);
                        if m.timed_out {
                            line.push_str("  (timed out)");
                        }
                        if let Some(w) = &m.waiting {
                            line.push_str(&format!("  waiting before {}: {}", w.phase, w.reason));
                        }
                        println!("{line}");
                    }
                });
                Ok(())
            }
            RolloutCommand::Revert {
                remote: r,
                bundle,
                plan,
                aim,
            } => {
                anyhow::ensure!(
                    aim.group.is_some() || !aim.filter_tags.is_empty(),
                    "say which robots to take back: --group G (or --filter-tag key=value)"
                );
                let request = CreateRolloutRequest {
                    revert: true,
                    ..plan.request(bundle)
                };
                create(&r, request, &aim, "created revert rollout")
            }
            RolloutCommand::Next { remote: r, id } => action(&r, id, "next"),
            RolloutCommand::Retry { remote: r, id } => action(&r, id, "retry"),
            RolloutCommand::Pause { remote: r, id } => action(&r, id, "pause"),
            RolloutCommand::Resume { remote: r, id } => action(&r, id, "resume"),
            RolloutCommand::Abort { remote: r, id } => action(&r, id, "abort"),
        },
        Command::Devices(cmd) => match cmd {
            DevicesCommand::Admission(cmd) => cli::admission::run(cmd),
            DevicesCommand::List { remote: r } => {
                let list = remote(&r)?.devices()?;
                print_list(r.json, &list, "no devices enrolled", cli::format_device);
                Ok(())
            }
            DevicesCommand::History {
                remote: r,
                id,
                metric,
                since,
            } => {
                let history = remote(&r)?.history(&id, &metric, since)?;
                print_json_or(r.json, &history, |h| {
                    if h.points.is_empty() {
                        println!("no {} samples from {}", h.metric, h.device_id);
                    }
                    for p in &h.points {
                        println!("{}", cli::format_point(p));
                    }
                });
                Ok(())
            }
            DevicesCommand::Show { remote: r, id } => {
                let detail = remote(&r)?.device(&id)?;
                print_json_or(r.json, &detail, |d| {
                    println!("{}", cli::format_device(&d.device));
                    for rep in &d.reports {
                        println!(
                            "  {}  {:<12} rollout {}  {}",
                            cli::format_time(rep.received_at),
                            rep.status.as_str(),
                            rep.rollout_id.map_or("-".to_string(), |r| r.to_string()),
                            rep.error.as_deref().or(rep.reason.as_deref()).unwrap_or("")
                        );
                    }
                });
                Ok(())
            }
            DevicesCommand::Label {
                remote: r,
                id,
                tags,
                group,
            } => {
                let labels = DeviceLabels {
                    tags: cli::parse_tags(&tags)?,
                    group,
                };
                let info = remote(&r)?.set_labels(&id, &labels)?;
                print_json_or(r.json, &info, |d| println!("{}", cli::format_device(d)));
                Ok(())
            }
        },
        Command::TimestampKey {
            data_dir,
            timestamp_key,
        } => {
            let (key, _) =
                ota_server::timestamp::load_or_generate(&data_dir, timestamp_key.as_deref())?;
            print!("{}", ota_server::timestamp::describe(&key.public_key()));
            Ok(())
        }
        Command::Trust(TrustCommand::Publish { remote: r, file }) => {
            let chain = cli::publish_trust_root(&remote(&r)?, &file)?;
            print_json_or(r.json, &chain, |c| {
                println!("{}", cli::format_trust_chain(c))
            });
            Ok(())
        }
        Command::Trust(TrustCommand::Chain { remote: r, after }) => {
            let path = format!("{}?after={after}", ota_protocol::paths::TRUST_CHAIN);
            let chain: ota_protocol::device::TrustChain = remote(&r)?.get(&path)?;
            print_json_or(r.json, &chain, |c| {
                println!("{}", cli::format_trust_chain(c))
            });
            Ok(())
        }
        Command::Groups(cmd) => match cmd {
            GroupsCommand::List { remote: r } => {
                let list = remote(&r)?.groups()?;
                print_list(r.json, &list, "no groups", cli::format_group);
                Ok(())
            }
            GroupsCommand::Set {
                remote: r,
                name,
                windows,
                timezone,
            } => {
                let settings = GroupSettings {
                    schedule: cli::parse_schedule(&windows, timezone.as_deref())?
                        .unwrap_or_default(),
                };
                let info = remote(&r)?.put_group(&name, &settings)?;
                print_json_or(r.json, &info, |g| println!("{}", cli::format_group(g)));
                Ok(())
            }
        },
    }
}

fn action(r: &RemoteArgs, id: u64, verb: &str) -> anyhow::Result<()> {
    let info = remote(r)?.rollout_action(id, verb)?;
    print_json_or(r.json, &info, |i| println!("{}", cli::format_rollout(i)));
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(defaults::use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    match with_config_file(ota_packaging::parse_or_generate::<Program>()).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "ota-server: error: {}",
                ota_packaging::error_line(err.chain())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Program::command().debug_assert();
    }

    /// The example config the Debian package installs is one the server accepts.
    #[test]
    fn the_shipped_example_config_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/config/ota-server.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut definition = Program::command();
        definition.build();
        let serve = definition.find_subcommand("serve").unwrap();
        let args = settings::file::file_args(serve, &text, &path, |_| false).unwrap();
        assert!(
            args.contains(&OsString::from("--data-dir=/var/lib/ota-server")),
            "{args:?}"
        );
    }

    /// docs/server-config.md lists every `serve` flag as a config key; `OTA_BLESS_DOCS=1 cargo test -p
    /// ota-server --bin ota-server` rewrites the table after a flag was added or changed.
    #[test]
    fn the_config_reference_lists_every_serve_flag() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/server-config.md");
        let page = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- keys:begin -->\n", "<!-- keys:end -->");
        let start = page.find(begin).expect("keys:begin marker") + begin.len();
        let stop = page.find(end).expect("keys:end marker");
        let mut definition = Program::command();
        definition.build();
        let table = settings::file::reference_table(definition.find_subcommand("serve").unwrap());
        if page[start..stop] != table {
            if std::env::var_os("OTA_BLESS_DOCS").is_some() {
                std::fs::write(&path, format!("{}{table}{}", &page[..start], &page[stop..]))
                    .unwrap();
            } else {
                panic!(
                    "{} does not list serve's flags as they are; run OTA_BLESS_DOCS=1 cargo test -p ota-server \\
                     --bin ota-server and check the diff. Expected:\n{table}",
                    path.display()
                );
            }
        }
    }
}
