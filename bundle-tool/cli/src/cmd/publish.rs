//! `ota-bundle publish`: upload a signed bundle to the OTA server. The file is streamed (never read into memory
//! whole); the server verifies it against its own trust root before publishing it.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Arguments of `publish`.
#[derive(clap::Args)]
pub struct Args {
    /// Server base URL, e.g. https://ota.example.com:8443.
    #[arg(long, env = "OTA_SERVER_URL")]
    server: String,
    /// Admin token of the server.
    #[arg(long, env = "OTA_SERVER_TOKEN", hide_env_values = true)]
    token: String,
    /// PEM CA certificate to trust (for a server with a private CA).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The bundle to publish.
    bundle: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let file = File::open(&args.bundle)
        .with_context(|| format!("cannot open bundle {}", args.bundle.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read the size of {}", args.bundle.display()))?
        .len();
    // Uploads of large bundles take long; the server verifies the whole file before answering.
    let mut builder = reqwest::blocking::Client::builder().timeout(None);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read CA file {}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().context("cannot set up the HTTP client")?;
    let base = args.server.trim_end_matches('/');
    // The server refuses a bad token before reading the body, and an HTTP client that is still sending a large
    // body then sees a broken connection instead of the answer: check server and token first, cheaply.
    let check = client
        .get(format!("{base}/api/bundles"))
        .bearer_auth(&args.token)
        .send()
        .with_context(|| format!("cannot reach the server at {base}"))?;
    if !check.status().is_success() {
        let status = check.status();
        let text = check.text().unwrap_or_default();
        bail!("server refused the token ({status}): {}", error_of(&text));
    }
    let url = format!("{base}/api/bundles");
    let response = client
        .post(&url)
        .bearer_auth(&args.token)
        .header("content-type", "application/octet-stream")
        .body(reqwest::blocking::Body::sized(file, len))
        .send()
        .with_context(|| {
            format!(
                "upload to {url} failed; if the server closed the connection early, the bundle ({len} bytes) may \
                 exceed its --max-upload-bytes"
            )
        })?;
    let status = response.status();
    let text = response.text().context("cannot read the server's answer")?;
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = json.get("error").and_then(|e| e.as_str()).unwrap_or(&text);
        bail!(
            "server refused {} ({status}): {message}",
            args.bundle.display()
        );
    }
    let field = |name: &str| {
        json.get(name)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .unwrap_or_default()
    };
    let dedup = json
        .get("deduplicated")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    println!(
        "{} {}: bundle id {} version {} for '{}' ({} bytes)",
        if dedup {
            "ALREADY PUBLISHED"
        } else {
            "PUBLISHED"
        },
        args.bundle.display(),
        field("bundle_id"),
        field("version"),
        field("compatible"),
        field("size")
    );
    Ok(())
}

/// The `error` of a JSON error body, or the body itself.
fn error_of(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.to_string())
}
