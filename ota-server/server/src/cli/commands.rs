//! The admin subcommands of `ota-server` (`rollout`, `devices`, `groups`, `trust`): what each takes. The binary
//! dispatches them; the calls go through the one API client ([`super::connect`]).

use std::path::PathBuf;

use clap::Subcommand;

use super::RemoteArgs;

#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum RolloutCommand {
    /// Roll a published bundle out to the devices carrying every given tag.
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Bundle id (from `ota-bundle publish`).
        #[arg(long)]
        bundle: String,
        /// Select devices with this tag (key=value, repeatable; none: all compatible devices).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[command(flatten)]
        plan: super::PlanArgs,
        #[command(flatten)]
        aim: super::AimArgs,
    },
    /// Take a group back to an older release (robots whose other slot holds it switch without downloading).
    Revert {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The bundle id of the release to go back to.
        #[arg(long = "to")]
        bundle: String,
        #[command(flatten)]
        plan: super::PlanArgs,
        #[command(flatten)]
        aim: super::AimArgs,
    },
    /// Start the next stage now, whatever the current one's completion or soak.
    Next {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Rollout id.
        id: u64,
    },
    /// Offer the update again to the robots that failed or rolled back.
    Retry {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Rollout id.
        id: u64,
    },
    /// List rollouts.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show one rollout and the status of each of its devices.
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Rollout id.
        id: u64,
    },
    /// Stop offering the update until resumed.
    Pause {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Rollout id.
        id: u64,
    },
    /// Resume a paused rollout (failures so far no longer count against the threshold).
    Resume {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Rollout id.
        id: u64,
    },
    /// Stop a rollout for good.
    Abort {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Rollout id.
        id: u64,
    },
}

#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum DevicesCommand {
    /// List enrolled devices.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show one device with its report history.
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
    },
    /// Set a device's operator tags and group (replacing earlier ones; they override its reported tags).
    Label {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
        /// Operator tag (key=value, repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Group (none: no group).
        #[arg(long)]
        group: Option<String>,
    },
    /// Show a device's telemetry history of one metric (1-minute buckets for a day, hourly before).
    History {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Device id.
        id: String,
        /// Metric, e.g. inference_latency_ms or battery_percent.
        #[arg(long)]
        metric: String,
        /// From this time (Unix seconds or RFC 3339; default: 24 hours ago).
        #[arg(long, value_parser = super::parse_instant)]
        since: Option<u64>,
    },
    #[command(flatten)]
    Admission(super::admission::AdmissionCommand),
}

#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum GroupsCommand {
    /// List groups with their sizes and windows.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Create or replace a group's maintenance windows.
    Set {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Group name.
        name: String,
        /// Maintenance window `[DAYS@]HH:MM-HH:MM` (repeatable; none: any time).
        #[arg(long = "window")]
        windows: Vec<String>,
        /// IANA time zone of the windows (default UTC).
        #[arg(long)]
        timezone: Option<String>,
    },
}

#[derive(Subcommand)]
#[allow(missing_docs)] // `remote` is flattened: clap takes no doc from it
pub enum TrustCommand {
    /// Publish the next trust root; robots fetch and walk it on their next poll, and uploads are checked
    /// against it from now on. It must be the next version, signed by a threshold of the newest published
    /// root's keys and of its own (`ota-bundle trust sign --key OLD.key --key NEW.key ROOT.json`).
    Publish {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The trust root file.
        file: PathBuf,
    },
    /// List the published roots.
    Chain {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only roots newer than this version.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}
