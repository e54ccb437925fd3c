//! `ota-bundle publish`: upload a signed bundle to the OTA server. The file is streamed (never read into memory
//! whole); the server verifies it against its own trust root before publishing it.

use std::path::PathBuf;

use anyhow::Result;
use ota_protocol::client::{ApiClient, ClientOptions, ErrorKind};
use ota_protocol::defaults;

/// Arguments of `publish`.
#[derive(clap::Args)]
pub struct Args {
    /// Server base URL, e.g. https://ota.example.com:8443 (the same default as `ota-server`'s).
    #[arg(long, env = defaults::SERVER_URL_ENV, default_value = defaults::DEFAULT_SERVER_URL)]
    server: String,
    /// Admin token of the server.
    #[arg(long, env = defaults::ADMIN_TOKEN_ENV, hide_env_values = true)]
    token: String,
    /// Print the server's JSON answer instead of a line.
    #[arg(long)]
    json: bool,
    /// PEM CA certificate to trust (for a server with a private CA).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The bundle to publish.
    bundle: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let mut options = ClientOptions::new(args.server);
    options.ca_file = args.ca_file;
    options.token = Some(args.token);
    let api = ApiClient::new(&options)?;
    let published = api.publish_file(&args.bundle).map_err(|e| {
        let what = if e.kind == ErrorKind::Reauthenticate {
            "server refused the token".to_string()
        } else {
            format!("cannot publish {}", args.bundle.display())
        };
        anyhow::Error::new(e).context(what)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&published)?);
        return Ok(());
    }
    println!(
        "{} {}: bundle id {} version {} for '{}' ({} bytes)",
        if published.deduplicated {
            "ALREADY PUBLISHED"
        } else {
            "PUBLISHED"
        },
        args.bundle.display(),
        published.bundle_id,
        published.version,
        published.compatible,
        published.size
    );
    Ok(())
}
