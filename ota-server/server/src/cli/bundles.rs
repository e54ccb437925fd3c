//! `ota-server bundles prune`: delete the bundles no rollout uses, through the API client (so the server
//! removes row and blob together, and the change is audited).

use clap::Subcommand;
use ota_protocol::alerts::{PruneRequest, PruneResponse};
use ota_protocol::paths;

use super::{connect, RemoteArgs};

/// The `ota-server bundles` subcommands.
#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum BundlesCommand {
    /// Delete bundles no rollout (active or finished) uses and uploaded at least --min-age-days ago.
    Prune {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Keep bundles uploaded less than this many days ago.
        #[arg(long, default_value_t = crate::retention::DEFAULT_MIN_AGE_DAYS)]
        min_age_days: u64,
    },
}

/// Runs a `bundles` subcommand.
pub fn run(cmd: BundlesCommand) -> anyhow::Result<()> {
    let BundlesCommand::Prune {
        remote,
        dry_run,
        min_age_days,
    } = cmd;
    let client = connect(&remote.server, &remote.token, remote.ca_file.as_deref())?;
    let request = PruneRequest {
        dry_run,
        min_age_days: Some(min_age_days),
    };
    let answer: PruneResponse = client.post(paths::BUNDLES_PRUNE, &request)?;
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!("{}", summary(&answer));
    for id in &answer.deleted {
        println!("  {id}");
    }
    Ok(())
}

/// The first line of the answer.
pub fn summary(a: &PruneResponse) -> String {
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    format!(
        "{verb} {} bundle(s), {} bytes; kept {} used by rollouts and {} recent",
        a.deleted.len(),
        a.freed_bytes,
        a.kept_in_use,
        a.kept_recent
    )
}
