//! What the binaries need to ship as distribution packages and run as services.
//!
//! * [`docs`]: man pages and bash/zsh/fish completions generated from a binary's own clap
//!   definition, behind each binary's hidden `generate-docs DIR` subcommand, so the packages
//!   document exactly the binary they ship.
//! * [`service`]: systemd readiness and watchdog notifications (`Type=notify`, `WatchdogSec=`);
//!   no-ops when the process was not started by systemd.
//!
//! `build-debs.sh` (beside this crate) builds the Debian packages from the release binaries;
//! this crate's `[package.metadata.deb]` variants describe them (its `description` is their
//! one-line synopsis).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod docs;
pub mod service;

pub use docs::{parse_or_generate, write_docs, DocsError};
pub use service::Notifier;
