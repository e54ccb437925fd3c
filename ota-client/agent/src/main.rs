//! `ota-client`: the robot's OTA client CLI. Parses arguments, loads the configuration and
//! dispatches to one module per subcommand; all logic is in the `ota_client` library.
//! Exit status: 0 on success, 1 on any failure (one line on stderr).

mod cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ota-client",
    version,
    about = "A/B over-the-air updates for this robot"
)]
struct Program {
    /// Configuration file.
    #[arg(long, global = true, env = "OTA_CLIENT_CONFIG", default_value = ota_client::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install a signed bundle (file or http(s) URL) into the standby slot and arm a trial boot.
    Install(cmd::install::Args),
    /// Arm a slot that already holds a bundle (staged with `install --stage-only`, or a
    /// release committed before) for a trial boot, without downloading it again.
    Activate(cmd::activate::Args),
    /// Show slots, the pending trial, the last install and unreported events.
    Status(cmd::status::Args),
    /// Mark a slot good (default: the booted one; commits a trial boot).
    MarkGood(cmd::mark::Args),
    /// Mark a slot bad (default: the booted one).
    MarkBad(cmd::mark::Args),
    /// At boot: commit a healthy trial, record rollbacks, finish interrupted operations.
    Confirm,
    /// Manage the trust root.
    Trust(cmd::trust::Args),
    /// Enroll with the fleet server ([server] in the config), poll, install offered updates
    /// and report, until SIGTERM.
    Daemon,
    /// Approve the reboot into the update the daemon waits on (rollouts that require a
    /// confirmation on the robot).
    Approve(cmd::approve::Args),
    /// The robot's own key, which enrollment proves to the server.
    Identity(cmd::identity::Args),
}

fn run(program: Program) -> anyhow::Result<()> {
    let config = ota_client::Config::load(&program.config)?;
    match program.command {
        Command::Install(args) => cmd::install::run(config, args),
        Command::Activate(args) => cmd::activate::run(config, args),
        Command::Status(args) => cmd::status::run(config, args),
        Command::MarkGood(args) => cmd::mark::run(config, args, true),
        Command::MarkBad(args) => cmd::mark::run(config, args, false),
        Command::Confirm => cmd::confirm::run(config),
        Command::Trust(args) => cmd::trust::run(config, args),
        Command::Daemon => cmd::daemon::run(config),
        Command::Approve(args) => cmd::approve::run(config, args),
        Command::Identity(args) => cmd::identity::run(config, args),
    }
}

fn main() -> ExitCode {
    let program = ota_packaging::parse_or_generate::<Program>();
    match run(program) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "ota-client: error: {}",
                ota_packaging::error_line(e.chain())
            );
            ExitCode::FAILURE
        }
    }
}
