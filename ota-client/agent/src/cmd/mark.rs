//! `ota-client mark-good [SLOT]` / `mark-bad [SLOT]`.

use anyhow::Context;
use ota_client::{Client, Config};
use ota_client_core::parse_operator_slot;

#[derive(clap::Args)]
pub struct Args {
    /// A or B (default: the booted slot).
    slot: Option<String>,
}

pub fn run(config: Config, args: Args, good: bool) -> anyhow::Result<()> {
    let slot = args
        .slot
        .map(|s| {
            parse_operator_slot(&s).with_context(|| format!("invalid slot {s:?}: expected A or B"))
        })
        .transpose()?;
    let mut client = Client::open(config)?;
    let message = if good {
        client.mark_good(slot)?
    } else {
        client.mark_bad(slot)?
    };
    println!("{message}");
    Ok(())
}
