//! `ota-client install BUNDLE|URL`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use ota_client::{BundleSource, Client, Config, InstallOptions, InstallReport, Progress, Slot};

#[derive(clap::Args)]
pub struct Args {
    /// Bundle file or http(s) URL.
    bundle: String,
    /// Accept a version lower than the installed one.
    #[arg(long)]
    allow_downgrade: bool,
    /// Reboot into the trial slot once it is armed.
    #[arg(long)]
    reboot: bool,
    /// Write and verify the standby slot but do not arm it (`ota-client activate` arms it later).
    #[arg(long, conflicts_with = "reboot")]
    stage_only: bool,
    /// The URL names a chunked bundle: read it by byte ranges from the first request, fetching only what this
    /// robot lacks (the daemon does this whenever the server's offer says the bundle is chunked). Without it
    /// a URL is streamed until its head shows a chunked bundle, then read by ranges.
    #[arg(long)]
    chunked: bool,
}

/// A progress bar on a terminal, plain lines otherwise (journals, pipes).
struct Display {
    bar: Option<ProgressBar>,
    terminal: bool,
}

impl Progress for Display {
    fn phase(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn image_started(&mut self, image: &str, class: &str, slot: Slot, size: u64) {
        eprintln!("writing {image} into {class} slot {slot} ({size} bytes)");
        if self.terminal {
            let bar = ProgressBar::new(size);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        }
    }

    fn bytes_written(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn image_finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("written and verified");
    }
}

pub fn run(config: Config, args: Args) -> anyhow::Result<()> {
    let mut client = Client::open(config)?;
    let mut display = Display {
        bar: None,
        terminal: std::io::stderr().is_terminal(),
    };
    let options = InstallOptions {
        allow_downgrade: args.allow_downgrade,
        reboot: args.reboot,
        cancel: None,
        stage_only: args.stage_only,
        revert: false,
    };
    let source = match BundleSource::parse(&args.bundle) {
        BundleSource::Url(url) if args.chunked => {
            BundleSource::Http(ota_client::source::HttpRequest {
                url,
                headers: Vec::new(),
                ranges_first: true,
            })
        }
        other => other,
    };
    let report = client.install(&source, &options, &mut display)?;
    match report {
        InstallReport::TrialArmed {
            version,
            slot,
            tries,
            live_classes,
            rebooting,
            ..
        } => {
            println!("installed {version} into slot {slot}; armed for {tries} trial boots");
            if !live_classes.is_empty() {
                println!(
                    "live classes {} switch when the trial is committed",
                    live_classes.join(", ")
                );
            }
            if rebooting {
                println!(
                    "rebooting into slot {slot}; `ota-client confirm` commits it once healthy"
                );
            } else {
                println!("next: reboot; at boot `ota-client confirm` runs the health checks and commits slot {slot}, otherwise the bootloader falls back");
            }
        }
        InstallReport::Staged {
            version,
            bundle_hash,
            ..
        } => {
            println!("staged {version}: written and verified, nothing armed");
            println!("next: `ota-client activate {bundle_hash}` arms it for a trial boot");
        }
        InstallReport::LiveSwitched { version, flips, .. } => {
            for f in flips {
                println!(
                    "switched {} from slot {} to slot {} ({version}); health checks passed",
                    f.class, f.from, f.to
                );
            }
        }
    }
    Ok(())
}
