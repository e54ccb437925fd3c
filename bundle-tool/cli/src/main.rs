//! `ota-bundle`: the release engineer's tool. Builds, signs, verifies, inspects and extracts OTA bundles and
//! manages release keys and trust roots. Each subcommand lives in its own module under `cmd/`; this file only
//! parses arguments, dispatches, and turns errors into one line on stderr and exit code 1.

#![forbid(unsafe_code)]

mod cmd;
mod keyspec;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, sign and check signed OTA update bundles.
#[derive(Parser)]
#[command(name = "ota-bundle", version, about, long_about = None)]
struct Program {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ed25519 release key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub.
    Keygen(cmd::keygen::Args),
    /// Print the key id of a .key or .pub file or of a key on a PKCS#11 token (pkcs11: URI).
    KeyId(cmd::keygen::KeyIdArgs),
    /// Print (or write) the public key PEM of a .key file or of a key on a PKCS#11 token, for `trust create`.
    PublicKey(cmd::keygen::PublicKeyArgs),
    /// Build and sign a bundle from one or more images.
    Create(cmd::create::Args),
    /// Add a signature to an existing bundle (co-signing) without recompressing it.
    Sign(cmd::sign::Args),
    /// Attach, replace (--trust-chain) or remove (--remove) the trust chain a bundle carries, without re-signing
    /// it: the chain is not signed (each root is checked by the robot's walk), so the bundle id stays.
    SetChain(cmd::chain::Args),
    /// Check a bundle's signatures against a trust root and every payload against the manifest.
    Verify(cmd::verify::Args),
    /// Show a bundle's manifest and the key ids of its signatures (nothing is verified).
    Info(cmd::info::Args),
    /// Verify a bundle and write its uncompressed images into a directory.
    Extract(cmd::extract::Args),
    /// Tell what a robot running OLD downloads to install a chunked NEW bundle (nothing is verified).
    DownloadSize(cmd::download_size::Args),
    /// Create, co-sign and check trust roots (the keys robots trust and how many must sign).
    #[command(subcommand)]
    Trust(cmd::trust::Command),
    /// Upload a signed bundle to the OTA server (streamed; the server verifies it before publishing).
    Publish(cmd::publish::Args),
}

fn main() -> ExitCode {
    let program = ota_packaging::parse_or_generate::<Program>();
    let result = match program.command {
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::KeyId(args) => cmd::keygen::run_key_id(args),
        Command::PublicKey(args) => cmd::keygen::run_public_key(args),
        Command::Create(args) => cmd::create::run(args),
        Command::Sign(args) => cmd::sign::run(args),
        Command::SetChain(args) => cmd::chain::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Info(args) => cmd::info::run(args),
        Command::Extract(args) => cmd::extract::run(args),
        Command::DownloadSize(args) => cmd::download_size::run(args),
        Command::Trust(command) => cmd::trust::run(command),
        Command::Publish(args) => cmd::publish::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "ota-bundle: error: {}",
                ota_packaging::error_line(err.chain())
            );
            ExitCode::FAILURE
        }
    }
}
