//! `ota-client identity show`: the robot's own key (what enrollment proves), for an operator admitting or
//! pre-authorising it. There is no `rotate`: the server binds a device id to one key and refuses another key for
//! it (admission's `OtherKey`), and has no route to re-enroll with a new one; a new key is a new robot to admit.

use ota_client::daemon::enrolled_device_id;
use ota_client::identity::Shown;
use ota_client::Config;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Show the key file, key id, public key (hex and SPKI PEM) and the enrolled device id; never creates a key.
    Show {
        /// Print JSON.
        #[arg(long, conflicts_with = "pem")]
        json: bool,
        /// Print only the public key PEM (for `ota-server devices preauthorize --key`).
        #[arg(long)]
        pem: bool,
    },
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let Command::Show { json, pem } = args.command;
    let provisioned = config
        .server
        .as_ref()
        .and_then(|s| s.identity_key.as_deref());
    let shown = Shown::read(
        &config.data_dir,
        provisioned,
        enrolled_device_id(&config.data_dir),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else if pem {
        let Some(pem) = &shown.public_key_pem else {
            anyhow::bail!(
                "this robot has no identity key yet ({}): the daemon generates it at its first start",
                shown.path.display()
            );
        };
        print!("{pem}");
    } else {
        shown.lines().iter().for_each(|l| println!("{l}"));
    }
    Ok(())
}
