//! `ota-bundle keygen`, `ota-bundle key-id` and `ota-bundle public-key`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::keyspec::{self, KeySpec};
use crate::output::AtomicOutput;

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
    /// A .key (PKCS#8) or .pub (SubjectPublicKeyInfo) PEM file, or a pkcs11: URI of a key on a token.
    #[arg(value_name = "KEY", value_parser = keyspec::value_parser())]
    key: KeySpec,
    /// Print the key id as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `public-key`.
#[derive(clap::Args)]
pub struct PublicKeyArgs {
    /// A .key file or a pkcs11: URI of a key on a token.
    #[arg(value_name = "KEY", value_parser = keyspec::value_parser())]
    key: KeySpec,
    /// Write the PEM to OUT instead of standard output.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
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
    let id = args.key.public_key()?.key_id();
    if args.json {
        let value = serde_json::json!({ "key_id": id.to_string() });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{id}");
    }
    Ok(())
}

/// The SubjectPublicKeyInfo PEM of a key (on a token, its only way out), ready for `trust create --key`.
pub fn run_public_key(args: PublicKeyArgs) -> Result<()> {
    let key = args.key.public_key()?;
    let Some(path) = &args.output else {
        print!("{}", key.to_pem());
        return Ok(());
    };
    let mut out = AtomicOutput::create(path, args.force)?;
    out.file().write_all(key.to_pem().as_bytes())?;
    out.commit()?;
    eprintln!("public key {} written to {}", key.key_id(), path.display());
    Ok(())
}
