//! The `ota-server` child process: started on 127.0.0.1:0 over a temp data dir, watched through `/proc`, stopped
//! with SIGTERM (SIGKILL if it does not stop) when the run ends or the generator panics.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A running server.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Secrets the child is started with.
pub struct Secrets<'a> {
    pub admin_token: &'a str,
    pub enrollment_secret: &'a str,
}

/// The `ota-server` binary next to this one (both are built into the same target directory).
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the running executable")?;
    let bin = me.with_file_name("ota-server");
    if !bin.exists() {
        bail!(
            "{} not found; build it with `cargo build --release -p ota-server -p ota-loadgen` or pass --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

impl ServerProcess {
    /// Starts `bin serve` and waits (up to 30 s) for its "listening on" line.
    pub fn start(
        bin: &Path,
        data_dir: &Path,
        trust: &Path,
        secrets: &Secrets<'_>,
    ) -> anyhow::Result<ServerProcess> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--trust")
            .arg(trust)
            // Its devices enroll with the fleet secret alone, as fast as they can.
            .args(["--admission", "auto"])
            .env("OTA_ADMIN_TOKEN", secrets.admin_token)
            .env("OTA_ENROLLMENT_SECRET", secrets.enrollment_secret)
            .env(
                "RUST_LOG",
                std::env::var("OTA_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout for the whole run so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let mut process = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    process.addr = addr
                        .parse()
                        .with_context(|| format!("server printed a bad address {addr:?}"))?;
                    return Ok(process);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = process.child.try_wait()? {
                        bail!("ota-server exited during start-up ({status})");
                    }
                    if Instant::now() > deadline {
                        bail!("ota-server did not report its address within 30 s");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = process.child.wait()?;
                    bail!("ota-server closed its output during start-up ({status})");
                }
            }
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server gracefully (SIGTERM, up to 20 s for its final flush), then SIGKILL.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .context("cannot signal ota-server")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("ota-server exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("ota-server did not stop within 20 s of SIGTERM; killed")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `/proc/<pid>/status` field in kB (e.g. `VmHWM`, `VmRSS`).
pub fn proc_status_kb(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU time of a process (`/proc/<pid>/stat`), in seconds (USER_HZ is 100 on Linux).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after the closing parenthesis are space-separated.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, i.e. 12 and 13 after "pid (comm) ".
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU seconds all processes on the machine have been busy (`/proc/stat`: everything but idle and iowait).
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user/nice]
    let busy =
        v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).copied().unwrap_or(0);
    Some(busy as f64 / 100.0)
}
