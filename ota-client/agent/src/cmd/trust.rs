//! `ota-client trust update NEW.json`.

use std::path::PathBuf;

use ota_client::{Client, Config};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TrustCommand,
}

#[derive(clap::Subcommand)]
enum TrustCommand {
    /// Install a rotated trust root signed by the installed one.
    Update {
        /// The new trust root JSON.
        file: PathBuf,
    },
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let TrustCommand::Update { file } = args.command;
    let mut client = Client::open(config)?;
    let version = client.trust_update(&file)?;
    println!("trust root version {version} installed");
    Ok(())
}
