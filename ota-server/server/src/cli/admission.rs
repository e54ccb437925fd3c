//! `ota-server devices pending|admit|reject|revoke|preauthorize`: robot admission through the API client.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use ota_protocol::admin::{DeviceIdentity, PreauthorizeRequest};
use ota_protocol::paths;

use super::{connect, RemoteArgs};

/// The admission subcommands of `ota-server devices`.
#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum AdmissionCommand {
    /// List robots waiting for admission (with --all: every robot identity).
    Pending {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Also the accepted and rejected robots.
        #[arg(long)]
        all: bool,
    },
    /// Admit a robot that asked: its key gets tokens from its next request on.
    Admit {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
    },
    /// Reject a robot: it gets no token, and the one it has stops working at once.
    Reject {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
    },
    /// Revoke an admitted robot (the same as reject): its token stops working at once.
    Revoke {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
    },
    /// Accept a robot's key before it first asks (factory-provisioned keys).
    Preauthorize {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
        /// The robot's public key: an SPKI PEM file (`ota-client identity` prints it) or a file holding 64 hex
        /// digits.
        #[arg(long, value_name = "PUB.pem")]
        key: PathBuf,
    },
}

/// One line per identity.
pub fn format_identity(i: &DeviceIdentity) -> String {
    let decided = match (&i.decided_by, i.decided_at) {
        (Some(by), Some(at)) => format!(" by {by} at {}", super::format_time(at)),
        _ => String::new(),
    };
    format!(
        "{}  {}{decided}  key {}  asked {}",
        i.device_id,
        i.admission.as_str(),
        i.public_key,
        super::format_time(i.requested_at)
    )
}

/// Runs one admission subcommand.
pub fn run(cmd: AdmissionCommand) -> anyhow::Result<()> {
    let (r, identities) = match cmd {
        AdmissionCommand::Pending { remote, all } => {
            let mut list: Vec<DeviceIdentity> = client(&remote)?.get(paths::ADMISSION)?;
            list.retain(|i| all || i.admission == ota_protocol::admin::Admission::Pending);
            (remote, list)
        }
        AdmissionCommand::Admit { remote, id } => decide(remote, &id, "admit", None)?,
        AdmissionCommand::Reject { remote, id } | AdmissionCommand::Revoke { remote, id } => {
            decide(remote, &id, "reject", None)?
        }
        AdmissionCommand::Preauthorize { remote, id, key } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read the public key {}", key.display()))?;
            decide(remote, &id, "preauthorize", Some(text))?
        }
    };
    if r.json {
        println!("{}", serde_json::to_string_pretty(&identities)?);
    } else if identities.is_empty() {
        println!("no robot is waiting for admission");
    } else {
        identities
            .iter()
            .for_each(|i| println!("{}", format_identity(i)));
    }
    Ok(())
}

fn client(r: &RemoteArgs) -> anyhow::Result<ota_protocol::client::ApiClient> {
    connect(&r.server, &r.token, r.ca_file.as_deref())
}

fn decide(
    remote: RemoteArgs,
    id: &str,
    action: &str,
    key: Option<String>,
) -> anyhow::Result<(RemoteArgs, Vec<DeviceIdentity>)> {
    let api = client(&remote)?;
    let path = paths::admission(id, action);
    let identity: DeviceIdentity = match key {
        Some(public_key) => api.post(&path, &PreauthorizeRequest { public_key })?,
        None => api.post(&path, &serde_json::json!({}))?,
    };
    Ok((remote, vec![identity]))
}
