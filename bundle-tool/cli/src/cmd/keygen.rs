//! `ota-bundle keygen` and `ota-bundle key-id`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Arguments of `keygen`.
#[derive(clap::Args)]
pub struct Args {
    /// Path prefix: writes PREFIX.key and PREFIX.pub; refuses to overwrite either.
    prefix: PathBuf,
    /// Print the key id and both paths as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `key-id`.
#[derive(clap::Args)]
pub struct KeyIdArgs {
    /// A .key (PKCS#8) or .pub (SubjectPublicKeyInfo) PEM file.
    file: PathBuf,
    /// Print the key id as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (secret, public, key) = ota_keys::write_keypair(&args.prefix)?;
    if args.json {
        let value = serde_json::json!({
            "key_id": key.key_id().to_string(),
            "secret_key": secret,
            "public_key": public,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "key {} written: {} (secret, mode 0600) and {} (public)",
        key.key_id(),
        secret.display(),
        public.display()
    );
    Ok(())
}

pub fn run_key_id(args: KeyIdArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let id = if text.contains("PRIVATE KEY") {
        ota_keys::SecretKey::from_pem(&text)
            .with_context(|| args.file.display().to_string())?
            .key_id()
    } else if text.contains("PUBLIC KEY") {
        ota_keys::PublicKey::from_pem(&text)
            .with_context(|| args.file.display().to_string())?
            .key_id()
    } else {
        bail!("{}: not a PEM key file", args.file.display());
    };
    if args.json {
        let value = serde_json::json!({ "key_id": id.to_string() });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{id}");
    }
    Ok(())
}
