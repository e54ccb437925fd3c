//! What the binaries need to ship as distribution packages and run as services.
//!
//! * [`docs`]: man pages and bash/zsh/fish completions generated from a binary's own clap
//!   definition, behind each binary's hidden `generate-docs DIR` subcommand, so the packages
//!   document exactly the binary they ship.
//! * [`errors`]: [`error_line`], the one line a binary prints for a failed command (each clause said once).
//! * [`service`]: systemd readiness and watchdog notifications (`Type=notify`, `WatchdogSec=`);
//!   no-ops when the process was not started by systemd.
//!
//! `build-debs.sh` (beside this crate) builds the Debian packages from the release binaries;
//! this crate's `[package.metadata.deb]` variants describe them (its `description` is their
//! one-line synopsis).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod docs;
pub mod errors;
pub mod service;

pub use docs::{parse_or_generate, write_docs, DocsError};
pub use errors::error_line;
pub use service::Notifier;
