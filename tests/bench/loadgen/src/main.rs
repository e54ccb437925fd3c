//! `ota-loadgen`: load benchmark of ota-server's device poll path.
//!
//! Starts the release `ota-server` as a child process on 127.0.0.1:0 over a temp data dir (or targets a running
//! one with `--server`), enrolls `--devices` devices in parallel, publishes a bundle and rolls it out to a canary
//! share of the fleet (so some polls carry an offer), then drives polls with realistic telemetry over
//! `--connections` keep-alive connections:
//!
//! 1. **rate phase** (the target): an open-loop schedule of `--rate` polls/s spread evenly over the connections for
//!    `--warmup-secs` + `--duration-secs`. Latency is measured from each poll's *scheduled* send time, so a server
//!    that falls behind shows up in the percentiles (no coordinated omission).
//! 2. **saturation phase** (headroom, `--saturate-secs`, 0 skips it): every connection polls back-to-back; reports
//!    the most polls/s the pair of processes manages on this machine.
//!
//! Reports polls/s, p50/p90/p99/max latency, errors, offers, CPU used by server and client, and the server's peak
//! RSS (`VmHWM`). Everything is bounded: fixed device count, fixed durations, 10 s request timeout.

#![forbid(unsafe_code)]

mod child;
mod conn;
mod phase;
mod rollouts;
mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use ota_protocol::device::EnrollResponse;

use crate::child::ServerProcess;
use crate::conn::{bearer, Conn, JSON};
use crate::phase::{measured, ms, poll_phase, print_phase};
use crate::traffic::{device_id, enroll_body};

/// Load benchmark of ota-server's device poll path (targets 127.0.0.1 only).
#[derive(Parser, Debug)]
#[command(name = "ota-loadgen", version, about)]
struct Args {
    /// Target a running server at this base URL (http://127.0.0.1:PORT) instead of starting one. Needs
    /// --admin-token and --enrollment-secret (and --signing-key for the rollout).
    #[arg(long)]
    server: Option<String>,
    /// Admin token of the --server.
    #[arg(long, env = "OTA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Enrollment secret of the --server.
    #[arg(long, env = "OTA_ENROLLMENT_SECRET", hide_env_values = true)]
    enrollment_secret: Option<String>,
    /// Release signing key (PEM) the --server trusts, to publish the rollout bundle.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// The ota-server binary to start (default: next to this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Devices to enroll.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Concurrent enrollments.
    #[arg(long, default_value_t = 200)]
    enroll_concurrency: usize,
    /// Keep-alive connections polling at once.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Offered poll rate of the rate phase, polls/s.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Warm-up before measuring, seconds.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Measured duration of the rate phase, seconds.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Duration of the closed-loop saturation phase, seconds (0: skip).
    #[arg(long, default_value_t = 10)]
    saturate_secs: u64,
    /// Percent of devices tagged ring=canary and targeted by a rollout (their polls get an offer; 0: no rollout).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    canary_percent: u32,
    /// Active rollouts during the run: the canary one plus this many minus one aimed at a site and robot model
    /// each, with stages, soak, deadline and guards on latency and error rate (needs --canary-percent > 0).
    #[arg(long, default_value_t = 50)]
    rollouts: usize,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Pass when the rate phase achieves at least this many polls/s ...
    #[arg(long, default_value_t = 20_000.0)]
    target_rate: f64,
    /// ... with a p99 latency at or below this many milliseconds (and no errors).
    #[arg(long, default_value_t = 20.0)]
    target_p99_ms: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ota-loadgen: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("ota-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses `http://127.0.0.1:PORT` (or `localhost`, `[::1]`), refusing anything that is not loopback.
fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .context("--server must be an http:// URL")?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let addr: SocketAddr = match hostport.strip_prefix("localhost:") {
        Some(port) => SocketAddr::from((
            [127, 0, 0, 1],
            port.parse().context("bad port in --server")?,
        )),
        None => hostport
            .parse()
            .with_context(|| format!("--server needs an IP:PORT, got {hostport:?}"))?,
    };
    if !addr.ip().is_loopback() {
        bail!(
            "ota-loadgen only targets the loopback interface, not {}",
            addr.ip()
        );
    }
    Ok(addr)
}

/// Enrolls devices `0..n` with `concurrency` workers; returns their `Authorization` header values.
async fn enroll_all(
    addr: SocketAddr,
    secret: &str,
    n: usize,
    concurrency: usize,
    canary: u32,
) -> anyhow::Result<Vec<HeaderValue>> {
    let next = Arc::new(AtomicUsize::new(0));
    let secret: Arc<str> = secret.into();
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let next = next.clone();
        let secret = secret.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr, Duration::from_secs(30))?;
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(out);
                }
                let body = enroll_body(i, &secret, canary);
                let mut attempt = 0;
                let (status, answer) = loop {
                    attempt += 1;
                    match conn
                        .send(
                            Method::POST,
                            ota_protocol::paths::ENROLL,
                            None,
                            Some(JSON),
                            body.clone(),
                        )
                        .await
                    {
                        Ok((s, _))
                            if (s == StatusCode::SERVICE_UNAVAILABLE
                                || s == StatusCode::TOO_MANY_REQUESTS)
                                && attempt < 5 =>
                        {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(answer) => break answer,
                        Err(e) if attempt < 5 => {
                            eprintln!("enroll {}: {e:#}; retrying", device_id(i))
                        }
                        Err(e) => return Err(e.context(format!("enrolling {}", device_id(i)))),
                    }
                };
                if status != StatusCode::OK {
                    bail!(
                        "enrolling {}: HTTP {status}: {}",
                        device_id(i),
                        String::from_utf8_lossy(&answer)
                    );
                }
                let answer: EnrollResponse =
                    serde_json::from_slice(&answer).context("bad enroll answer")?;
                out.push((i, bearer(&answer.token)?));
            }
        }));
    }
    let mut tokens = vec![None; n];
    for w in workers {
        for (i, token) in w.await.context("enroll worker panicked")?? {
            tokens[i] = Some(token);
        }
    }
    Ok(tokens
        .into_iter()
        .map(|t| t.expect("every device enrolled"))
        .collect())
}

async fn run(args: Args) -> anyhow::Result<bool> {
    if args.devices == 0 || args.connections == 0 || args.duration_secs == 0 {
        bail!("--devices, --connections and --duration-secs must be positive");
    }
    let temp = tempfile::Builder::new().prefix("ota-loadgen-").tempdir()?;
    let mut server: Option<ServerProcess> = None;
    let (addr, admin_token, enrollment_secret, signing_key) = match &args.server {
        Some(url) => {
            let addr = loopback_addr(url)?;
            let admin = args
                .admin_token
                .clone()
                .context("--server needs --admin-token")?;
            let secret = args
                .enrollment_secret
                .clone()
                .context("--server needs --enrollment-secret")?;
            let key = match &args.signing_key {
                Some(p) => Some(ota_keys::load_secret_key(p)?),
                None => None,
            };
            (addr, admin, secret, key)
        }
        None => {
            let bin = match &args.server_bin {
                Some(b) => b.clone(),
                None => child::default_server_bin()?,
            };
            let (_, public, key) = ota_keys::write_keypair(&temp.path().join("release"))?;
            let admin = "loadgen-admin-token-0123456789abcdef".to_string();
            let secret = "loadgen-enrollment-secret-0123456789".to_string();
            let secrets = child::Secrets {
                admin_token: &admin,
                enrollment_secret: &secret,
            };
            let started = Instant::now();
            let process = ServerProcess::start(&bin, &temp.path().join("data"), &public, &secrets)?;
            println!(
                "started {} (pid {}) on http://{} in {:.2} s",
                bin.display(),
                process.pid(),
                process.addr,
                started.elapsed().as_secs_f64()
            );
            let addr = process.addr;
            server = Some(process);
            (addr, admin, secret, Some(key))
        }
    };
    let server_pid = server.as_ref().map(|s| s.pid().to_string());

    let started = Instant::now();
    let tokens = enroll_all(
        addr,
        &enrollment_secret,
        args.devices,
        args.enroll_concurrency,
        args.canary_percent,
    )
    .await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "enrolled {} devices in {secs:.2} s ({:.0}/s)",
        tokens.len(),
        tokens.len() as f64 / secs
    );
    let tokens = Arc::new(tokens);

    if args.canary_percent > 0 {
        match signing_key {
            Some(key) => {
                let (base, token) = (format!("http://{addr}"), admin_token.clone());
                let count = args.rollouts.max(1);
                let (canary, total) = tokio::task::spawn_blocking(move || {
                    rollouts::create(&base, &token, &key, count)
                })
                .await
                .context("the rollout setup panicked")??;
                println!(
                    "{count} active rollouts: 1.1.0 to ring=canary ({canary} devices targeted, their polls get an offer), \
                     {} aimed at a site and model with guards ({} members)",
                    count - 1,
                    total - canary
                );
            }
            None => println!("no --signing-key for the --server: no rollout, polls get no offers"),
        }
    }

    let warmup = Duration::from_secs(args.warmup_secs);
    let duration = Duration::from_secs(args.duration_secs);
    println!(
        "rate phase: {} polls/s offered over {} connections, {} s warm-up + {} s measured",
        args.rate, args.connections, args.warmup_secs, args.duration_secs
    );
    let (rate_result, cpu) = measured(
        server_pid.as_deref(),
        warmup,
        duration,
        poll_phase(
            addr,
            tokens.clone(),
            args.connections,
            Some(args.rate.max(1)),
            warmup,
            duration,
        ),
    )
    .await?;
    let achieved = print_phase("rate phase", &rate_result, &cpu);

    if args.saturate_secs > 0 {
        println!(
            "saturation phase: {} connections polling back-to-back, 1 s warm-up + {} s",
            args.connections, args.saturate_secs
        );
        let warm = Duration::from_secs(1);
        let window = Duration::from_secs(args.saturate_secs);
        let (sat, cpu) = measured(
            server_pid.as_deref(),
            warm,
            window,
            poll_phase(addr, tokens.clone(), args.connections, None, warm, window),
        )
        .await?;
        print_phase("saturation phase", &sat, &cpu);
    }

    if let Some(pid) = &server_pid {
        match child::proc_status_kb(pid, "VmHWM") {
            Some(kb) => println!("server peak RSS (VmHWM): {:.1} MiB", kb as f64 / 1024.0),
            None => println!("server peak RSS: unavailable"),
        }
    }
    if let Some(kb) = child::proc_status_kb("self", "VmHWM") {
        println!("loadgen peak RSS (VmHWM): {:.1} MiB", kb as f64 / 1024.0);
    }
    if let Some(mut s) = server.take() {
        s.stop()?;
    }

    let p99 = ms(rate_result.latency.value_at_quantile(0.99));
    let pass = meets_rate(achieved, args.target_rate)
        && p99 <= args.target_p99_ms
        && rate_result.errors == 0;
    println!(
        "{}: {achieved:.0} polls/s (target >= {:.0}), p99 {p99:.2} ms (target <= {:.1}), {} errors",
        if pass { "PASS" } else { "FAIL" },
        args.target_rate,
        args.target_p99_ms,
        rate_result.errors
    );
    Ok(pass)
}

/// Share of the target rate a run may fall short by and still meet it: the polls still in flight when the
/// measured window closes (rate × latency, a few dozen at 20,000/s) are not counted, so an on-time server
/// measures 19,999.9 polls/s over 20 s. 0.1 % is 20 polls/s at the default target, far below a real shortfall.
const RATE_TOLERANCE: f64 = 0.001;

/// Whether `achieved` polls/s meets `target`, allowing [`RATE_TOLERANCE`] for the window's edge.
fn meets_rate(achieved: f64, target: f64) -> bool {
    achieved >= target * (1.0 - RATE_TOLERANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_verdict_allows_the_polls_in_flight_at_the_window_edge() {
        assert!(meets_rate(19_999.9, 20_000.0));
        assert!(meets_rate(399_998.0 / 20.0, 20_000.0));
        assert!(meets_rate(20_000.0, 20_000.0));
        assert!(!meets_rate(19_900.0, 20_000.0));
        assert!(!meets_rate(18_926.0, 20_000.0));
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert_eq!(loopback_addr("http://127.0.0.1:8080").unwrap().port(), 8080);
        assert_eq!(loopback_addr("http://localhost:9/").unwrap().port(), 9);
        assert!(loopback_addr("http://[::1]:80").is_ok());
        assert!(loopback_addr("http://10.0.0.1:8080").is_err());
        assert!(loopback_addr("https://127.0.0.1:8080").is_err());
        assert!(loopback_addr("http://example.com:80").is_err());
    }
}
