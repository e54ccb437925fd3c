//! `ota-client activate DIGEST [--revert] [--reboot]`.

use anyhow::bail;
use ota_client::{Client, Config};

#[derive(clap::Args)]
pub struct Args {
    /// The bundle's manifest digest (`ota-client status` shows the staged one).
    digest: String,
    /// Allow a version lower than the running one (never below the robot's security floor).
    #[arg(long)]
    revert: bool,
    /// Reboot into the armed slot.
    #[arg(long)]
    reboot: bool,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let mut client = Client::open(config)?;
    let Some(slot) = client.activate(&args.digest, args.revert)? else {
        bail!(
            "no slot other than the running one holds bundle {}: install it instead",
            args.digest
        );
    };
    let armed = client
        .status()
        .trial
        .is_some_and(|t| t.slot == slot && t.tries_left > 0);
    if !armed {
        println!("switched live slots to {slot}; health checks passed");
        return Ok(());
    }
    println!(
        "armed slot {slot} for a trial boot of bundle {}",
        args.digest
    );
    if args.reboot {
        client.reboot_now()?;
    } else {
        println!("next: reboot; at boot `ota-client confirm` runs the health checks and commits slot {slot}");
    }
    Ok(())
}
