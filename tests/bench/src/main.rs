//! `ota-bench`: end-to-end benchmarks of the OTA tools against plain baselines on a realistic image.
//!
//! Every scenario is a subcommand. A scenario builds [`harness::Case`]s (one external command each: the tool under
//! test and its baselines), runs them interleaved with [`harness::run_interleaved`] so the noise of a shared
//! machine falls on all of them alike, and reports medians, MB/s, ratios to the baseline, peak RSS (GNU time) and
//! pass/fail against its targets with [`report`]. A scenario is a module (`bundle.rs`, `install.rs`, `delta.rs`)
//! plus one variant of [`Scenario`].

#![forbid(unsafe_code)]

mod bundle;
mod delta;
mod download;
mod harness;
mod install;
mod report;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks of the OTA tools against plain zstd, measured interleaved in one run.
#[derive(Parser)]
#[command(name = "ota-bench", version, about, long_about = None)]
struct Program {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// ota-bundle create / verify / extract vs zstd at the same level on the same image.
    Bundle(bundle::Args),
    /// ota-client install (file and http://127.0.0.1) into a file slot vs zstd -d of the same payload.
    Install(install::Args),
    /// Issue 11 on a v1 -> v2 pair: delta bundle size, bytes on the wire, delta and full install vs zstd, memory.
    Delta(delta::Args),
    /// A ~1 GiB bundle downloaded with curl from ota-server vs nginx (sendfile) serving the same file.
    Download(download::Args),
}

fn main() -> ExitCode {
    let program = Program::parse();
    let result = match program.scenario {
        Scenario::Bundle(args) => bundle::run(args),
        Scenario::Install(args) => install::run(args),
        Scenario::Delta(args) => delta::run(args),
        Scenario::Download(args) => download::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("ota-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
