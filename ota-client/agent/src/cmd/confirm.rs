//! `ota-client confirm` (run at boot by ota-health-confirm.service).

use ota_client::{Client, Config};

pub fn run(config: Config) -> anyhow::Result<()> {
    let mut client = Client::open(config)?;
    let report = client.confirm()?;
    for action in report.actions {
        println!("{action}");
    }
    Ok(())
}
