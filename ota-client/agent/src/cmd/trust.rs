//! `ota-client trust update CHAIN.json`.

use std::path::PathBuf;

use ota_client::{Client, Config};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(clap::Subcommand)]
enum TrustCommand {
    /// Walk a chain of rotated trust roots from the robot's trust root and keep the newest one reached.
    ///
    /// Each root must be exactly one version newer than the one before and signed by a threshold of the
    /// previous root's keys and of its own. The accepted root is kept in the data directory (outside the
    /// A/B slots); the image's trust root file is never written. A refused link stops the walk: the robot
    /// keeps the last good root.
    Update {
        /// One trust root JSON, or a JSON list of them (any order).
        file: PathBuf,
    },
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let TrustCommand::Update { file } = args.command;
    let mut client = Client::open(config)?;
    let kept = client.kept_root_path();
    let version = match client.trust_update(&file) {
        Ok(version) => version,
        Err(e) => {
            // Say where the robot stands: a refused link may come after accepted ones.
            if let Ok(root) = client.trust_root() {
                eprintln!("trust root: version {}", root.version);
            }
            return Err(e.into());
        }
    };
    println!(
        "trust root version {version} installed (kept in {})",
        kept.display()
    );
    Ok(())
}
