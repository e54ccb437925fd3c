//! `ota-bundle trust ...`: trust roots. A robot trusts the keys of its installed root and accepts a new root only
//! when its version is exactly one higher and it is signed by a threshold of the keys it already trusts AND by a
//! threshold of its own keys (`ota_keys::chain`); a key is revoked by leaving it out of the next root.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ota_keys::chain::{accept_next, parse_chain, walk};
use ota_keys::{SignedTrustRoot, TrustRoot};

use crate::keyspec::{self, KeySpec};
use crate::output::AtomicOutput;

/// `trust` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a new (unsigned) trust root listing public keys and a signature threshold.
    #[command(after_long_help = ROTATION_HELP)]
    Create(CreateArgs),
    /// Add signatures to a trust root file (in place).
    #[command(after_long_help = ROTATION_HELP)]
    Sign(SignArgs),
    /// Check that NEW may replace CURRENT on a device: the next version, signed by a threshold of CURRENT's keys
    /// and of its own. NEW may be a chain (a JSON list of roots), walked one version at a time.
    Verify(VerifyArgs),
    /// Show a trust root.
    Show(ShowArgs),
}

/// Arguments of `trust create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// A trusted key: a public (.pub) or secret (.key) PEM file, or a pkcs11: URI (its public key is read from
    /// the token); repeatable. Only the public half goes into the root.
    #[arg(long = "key", required = true, value_parser = keyspec::value_parser())]
    keys: Vec<KeySpec>,
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

/// How a rotation is signed, shown by `trust create --help` and `trust sign --help`.
const ROTATION_HELP: &str = "\
Rotating keys: root version N+1 is accepted by robots only when signed by a threshold of version N's keys (the
old keys hand over) AND by a threshold of its own keys (the new keys prove they work). For example:

  ota-bundle trust create --key new1.pub --key new2.pub --threshold 1 --root-version 2 -o root-v2.json
  ota-bundle trust sign --key old1.key --key new1.key root-v2.json
  ota-bundle trust verify --current root-v1.json root-v2.json

Publish it to the fleet with `ota-server trust publish root-v2.json`; robots walk every version in order, so
never skip one.";

/// Arguments of `trust sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// A signing key (.key file or pkcs11: URI); repeatable: the previous root's keys and the new root's own
    /// keys both sign.
    #[arg(long = "key", required = true, value_parser = keyspec::value_parser())]
    keys: Vec<KeySpec>,
    /// The trust root file to sign.
    root: PathBuf,
}

/// Arguments of `trust verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The root the device trusts now (JSON, or a single .pub).
    #[arg(long)]
    current: PathBuf,
    /// The candidate root, or a chain (a JSON list of roots) starting right after CURRENT.
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
        .map(KeySpec::public_key)
        .collect::<Result<Vec<_>>>()?;
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
    let mut root = read_signed(&args.root)?;
    let mut ids = Vec::new();
    for key in keyspec::signers(&args.keys)? {
        ids.push(root.sign_with(&key)?.to_string());
    }
    write_signed(&args.root, &root, true)?;
    let plural = if ids.len() == 1 { "" } else { "s" };
    println!(
        "signed trust root version {} with key{plural} {}",
        root.signed.version,
        ids.join(", ")
    );
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<()> {
    let current = ota_keys::load_trust_root(&args.current)
        .with_context(|| args.current.display().to_string())?;
    let text = std::fs::read_to_string(&args.new)
        .with_context(|| format!("cannot read trust root {}", args.new.display()))?;
    let chain = parse_chain(&text).with_context(|| args.new.display().to_string())?;
    let refused = || {
        format!(
            "{} may not replace {}",
            args.new.display(),
            args.current.display()
        )
    };
    // One root is checked as the next link (so a replay is refused, not skipped); a list is walked to its end.
    let accepted = match chain.as_slice() {
        [one] => accept_next(&current, one).with_context(refused)?,
        _ => {
            let reached = walk(&current, &chain).with_context(refused)?;
            if reached.version == current.version {
                anyhow::bail!(
                    "{}: the chain holds nothing newer than version {}",
                    refused(),
                    current.version
                );
            }
            reached
        }
    };
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
