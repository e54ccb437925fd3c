//! What the daemon's surroundings provide: time, the reboot, where log lines go.

use std::sync::Arc;

use ota_client_core::daemon::Level;

use super::clock::{Clock, SystemClock};

/// Where log lines go.
pub type LogSink = Arc<dyn Fn(Level, &str) + Send + Sync>;
/// A reboot performed instead of the configured reboot command.
pub type RebootHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the daemon's surroundings provide.
#[derive(Clone)]
pub struct DaemonHooks {
    /// Time and jitter.
    pub clock: Arc<dyn Clock>,
    /// Reboots the robot; `None`: run the configured `reboot_command`.
    pub reboot: Option<RebootHook>,
    /// Log lines.
    pub log: LogSink,
}

impl Default for DaemonHooks {
    fn default() -> Self {
        DaemonHooks {
            clock: Arc::new(SystemClock),
            reboot: None,
            log: Arc::new(|level, line| {
                if level >= Level::Info {
                    eprintln!("ota-client daemon: {level}: {line}");
                }
            }),
        }
    }
}
