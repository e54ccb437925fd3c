//! `ota-bundle keygen` and `ota-bundle key-id`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Arguments of `keygen`.
#[derive(clap::Args)]
pub struct Args {
    /// Path prefix: writes PREFIX.key and PREFIX.pub; refuses to overwrite either.
    prefix: PathBuf,
}

/// Arguments of `key-id`.
#[derive(clap::Args)]
pub struct KeyIdArgs {
    /// A .key (PKCS#8) or .pub (SubjectPublicKeyInfo) PEM file.
    file: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let (secret, public, key) = ota_keys::write_keypair(&args.prefix)?;
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
    println!("{id}");
    Ok(())
}
