//! `ota-demo`: one command that shows the whole OTA system working. Starts the server,
//! makes release keys, builds, signs and publishes a release, provisions five simulated
//! robots, rolls the release out in stages and prints what every robot does, then a
//! summary and the dashboard URL. Then a second story: release 1.2.0's slower model is halted by its latency
//! guard and the operator reverts the group. Serves until Ctrl-C, or exits after the summary with
//! `--exit-when-done` (status 1 if the outcome is not 4 updated + 1 rolled back, 1.2.0 halted and reverted).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{SigSet, Signal};

/// Run a demo OTA fleet: server, signed release, staged rollout, five simulated robots.
#[derive(Parser)]
#[command(name = "ota-demo", version, about)]
struct Args {
    /// Working directory (server data, keys, robots); a previous demo's is replaced.
    #[arg(long, default_value = "demo-fleet")]
    dir: PathBuf,
    /// Address for the server (a free port of 127.0.0.1 is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of simulated robots.
    #[arg(long, default_value_t = 5)]
    robots: usize,
    /// Which robot (1-based) fails its health check after the update and rolls back.
    #[arg(long, default_value_t = 3)]
    failing_robot: usize,
    /// Exit after the summary (status 0 only for the expected outcome) instead of serving
    /// the dashboard until Ctrl-C.
    #[arg(long)]
    exit_when_done: bool,
    /// Print only the summary, not every robot's steps.
    #[arg(long)]
    quiet: bool,
    /// Longest the rollout may take, in seconds.
    #[arg(long, default_value_t = 90)]
    timeout_secs: u64,
}

fn run(args: Args, signals: SigSet) -> anyhow::Result<bool> {
    let options = ota_demo::DemoOptions {
        dir: args.dir,
        listen: args.listen,
        robots: args.robots,
        failing_robot: args.failing_robot,
        verbose: !args.quiet,
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let out: Arc<Mutex<dyn std::io::Write + Send>> = Arc::new(Mutex::new(std::io::stdout()));
    let mut demo = ota_demo::start(&options, out)?;
    let summary = demo.summary.clone();
    println!();
    print!("{}", ota_demo::format_summary(&summary));
    println!();
    println!("dashboard: {}", summary.dashboard);
    if !args.exit_when_done {
        println!("serving until Ctrl-C (robots keep polling)");
        signals.wait().context("waiting for Ctrl-C")?;
        println!("stopping");
    }
    demo.fleet.stop();
    demo.server.stop()?;
    Ok(summary.as_expected)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Ctrl-C / SIGTERM are taken synchronously by the main thread; block them before any
    // thread starts so every thread inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    if let Err(e) = signals.thread_block() {
        eprintln!("ota-demo: error: cannot block SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    match run(args, signals) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("ota-demo: error: the outcome is not the expected one (see the summary)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ota-demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
