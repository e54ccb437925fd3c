//! `ota-client approve`: the local confirmation a rollout may require before the daemon
//! reboots the robot into an update.

use ota_client::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle's manifest digest (default: the update the daemon is working on).
    #[arg(long)]
    digest: Option<String>,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let a = ota_client::daemon::approve(&config.data_dir, args.digest.as_deref())?;
    let what = a
        .version
        .map_or_else(|| a.manifest_digest.clone(), |v| v.to_string());
    println!("approved the reboot into {what}: the daemon reboots at its next poll (if its readiness check agrees)");
    Ok(())
}
