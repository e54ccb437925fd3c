//! `ota-bundle trust ...`: trust roots. A robot trusts the keys of its installed root and accepts a new root only
//! when a threshold of the keys it already trusts signed it and its version is higher; a key is revoked by leaving
//! it out of the next root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ota_keys::{accept_rotation, SignedTrustRoot, TrustRoot};

use crate::keyspec::{self, KeySpec};
use crate::output::AtomicOutput;

/// `trust` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a new (unsigned) trust root listing public keys and a signature threshold.
    Create(CreateArgs),
    /// Add a signature to a trust root file (in place).
    Sign(SignArgs),
    /// Check that NEW may replace CURRENT on a device: higher version, signed by a threshold of CURRENT's keys.
    Verify(VerifyArgs),
    /// Show a trust root.
    Show(ShowArgs),
}

/// Arguments of `trust create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// A trusted public key (.pub); repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// How many distinct keys must sign a bundle.
    #[arg(long)]
    threshold: u32,
    /// Root version; each rotation must increase it.
    #[arg(long = "root-version", default_value_t = 1)]
    root_version: u64,
    /// Sign the new root with these keys right away (e.g. the keys of the root it replaces): .key files or
    /// pkcs11: URIs; repeatable.
    #[arg(long = "sign-with", value_parser = keyspec::value_parser())]
    sign_with: Vec<KeySpec>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Output file.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
}

/// Arguments of `trust sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// The signing key: a .key file or a pkcs11: URI.
    #[arg(long, value_parser = keyspec::value_parser())]
    key: KeySpec,
    /// The trust root file to sign.
    root: PathBuf,
}

/// Arguments of `trust verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The root the device trusts now (JSON, or a single .pub).
    #[arg(long)]
    current: PathBuf,
    /// The candidate root.
    new: PathBuf,
}

/// Arguments of `trust show`.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// The trust root file.
    root: PathBuf,
    /// Print the trust root file's JSON (canonical form) instead of lines.
    #[arg(long)]
    json: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Create(args) => create(args),
        Command::Sign(args) => sign(args),
        Command::Verify(args) => verify(args),
        Command::Show(args) => show(args),
    }
}

fn read_signed(path: &Path) -> Result<SignedTrustRoot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trust root {}", path.display()))?;
    SignedTrustRoot::from_json(&text).with_context(|| path.display().to_string())
}

fn write_signed(path: &Path, root: &SignedTrustRoot, overwrite: bool) -> Result<()> {
    let mut out = AtomicOutput::create(path, overwrite)?;
    std::io::Write::write_all(out.file(), root.to_json_pretty().as_bytes())?;
    out.commit()
}

fn create(args: CreateArgs) -> Result<()> {
    let keys = args
        .keys
        .iter()
        .map(|p| ota_keys::load_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let root = TrustRoot::new(args.root_version, args.threshold, keys)?;
    let mut signed = SignedTrustRoot::new(root);
    for key in keyspec::signers(&args.sign_with)? {
        signed.sign_with(&key)?;
    }
    write_signed(&args.output, &signed, args.force)?;
    println!(
        "wrote trust root version {} to {}: {} of {} keys must sign ({})",
        signed.signed.version,
        args.output.display(),
        signed.signed.threshold,
        signed.signed.keys.len(),
        signed
            .signed
            .key_ids()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn sign(args: SignArgs) -> Result<()> {
    let key = args.key.signer()?;
    let mut root = read_signed(&args.root)?;
    let key_id = root.sign_with(&key)?;
    write_signed(&args.root, &root, true)?;
    println!(
        "signed trust root version {} with key {key_id}",
        root.signed.version,
    );
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<()> {
    let current = ota_keys::load_trust_root(&args.current)
        .with_context(|| args.current.display().to_string())?;
    let candidate = read_signed(&args.new)?;
    let accepted = accept_rotation(&current, &candidate).with_context(|| {
        format!(
            "{} may not replace {}",
            args.new.display(),
            args.current.display()
        )
    })?;
    println!(
        "OK: trust root version {} may replace version {} ({} of {} keys required from now on)",
        accepted.version,
        current.version,
        accepted.threshold,
        accepted.keys.len()
    );
    Ok(())
}

fn show(args: ShowArgs) -> Result<()> {
    let root = read_signed(&args.root)?;
    if args.json {
        print!("{}", root.to_json_pretty());
        return Ok(());
    }
    println!("version:    {}", root.signed.version);
    println!("threshold:  {}", root.signed.threshold);
    for id in root.signed.key_ids() {
        println!("key:        {id}");
    }
    for sig in &root.signatures {
        println!("signed by:  {} (not verified)", sig.key_id);
    }
    Ok(())
}
