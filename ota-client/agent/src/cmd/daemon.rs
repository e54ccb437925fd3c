//! `ota-client daemon`: enroll with the fleet server, poll, install offered updates, report.
//! Stops cleanly on SIGTERM or SIGINT (a download in progress is cancelled and retried at the
//! next start; nothing half-written is ever armed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use ota_client::daemon::{self, Clock, DaemonHooks, Exit, SystemClock};
use ota_client::Config;

/// How long to wait for the system to go down after the reboot command before polling again.
const REBOOT_GRACE: Duration = Duration::from_secs(600);

/// Blocks SIGTERM and SIGINT in every thread (call before any thread starts) and sets the
/// flag when one arrives.
fn cancel_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().context("cannot block SIGTERM/SIGINT")?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(signal) = set.wait() {
                eprintln!("ota-client daemon: {signal} received: stopping");
                flag.store(true, Ordering::Relaxed);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(cancel)
}

pub fn run(config: Config) -> anyhow::Result<()> {
    let cancel = cancel_on_signals()?;
    let hooks = DaemonHooks::default();
    loop {
        match daemon::run(config.clone(), &hooks, &cancel)? {
            Exit::Stopped => return Ok(()),
            Exit::Rebooted => {
                eprintln!("ota-client daemon: info: waiting for the system to reboot");
                if !SystemClock.sleep(REBOOT_GRACE, &cancel) {
                    return Ok(());
                }
                eprintln!(
                    "ota-client daemon: warning: no reboot happened within {} s; continuing",
                    REBOOT_GRACE.as_secs()
                );
            }
        }
    }
}
