//! Running health checks, service restarts and the reboot command: argv only (no shell
//! unless the operator asks for one), a timeout that kills the whole process group, and the
//! tail of the output kept for the failure report.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::config::HealthCheck;

/// Bytes of output kept for reports.
pub const TAIL_BYTES: usize = 2048;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// Exit status 0 within the timeout.
    pub success: bool,
    /// "exit status 1", "killed after 30 s", "cannot start: ...".
    pub status: String,
    /// The end of stdout+stderr, lossily decoded.
    pub output_tail: String,
    /// The first line of stdout (a readiness check's answer), trimmed.
    pub first_line: String,
}

/// Bytes of stdout kept for [`CommandResult::first_line`].
const HEAD_BYTES: usize = 512;

/// Runs `argv` with a timeout.
pub fn run(argv: &[String], timeout: Duration) -> CommandResult {
    run_with_env(argv, &[], timeout)
}

/// Runs `argv` with a timeout and these extra environment variables.
pub fn run_with_env(argv: &[String], env: &[(String, String)], timeout: Duration) -> CommandResult {
    let fail = |status: String| CommandResult {
        success: false,
        status,
        output_tail: String::new(),
        first_line: String::new(),
    };
    let Some((program, args)) = argv.split_first() else {
        return fail("empty command".into());
    };
    let mut child = match Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {program}: {e}")),
    };
    let tail = Arc::new(Mutex::new(Vec::<u8>::new()));
    let head = Arc::new(Mutex::new(Vec::<u8>::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| (Box::new(s) as Box<dyn Read + Send>, true)),
        child
            .stderr
            .take()
            .map(|s| (Box::new(s) as Box<dyn Read + Send>, false)),
    ]
    .into_iter()
    .flatten()
    .map(|(mut stream, is_stdout)| {
        let tail = Arc::clone(&tail);
        let head = Arc::clone(&head);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if is_stdout {
                    let mut h = head.lock().unwrap_or_else(|e| e.into_inner());
                    let keep = HEAD_BYTES.saturating_sub(h.len()).min(n);
                    h.extend_from_slice(&buf[..keep]);
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend_from_slice(&buf[..n]);
                if t.len() > TAIL_BYTES {
                    let cut = t.len() - TAIL_BYTES;
                    t.drain(..cut);
                }
            }
        })
    })
    .collect();
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() >= timeout => break Err(()),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return fail(format!("waiting for {program}: {e}")),
        }
    };
    let pgid = Pid::from_raw(child.id() as i32);
    // Kill whatever the command left behind (or all of it on timeout), so no descendant
    // keeps the output pipes open.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
    for r in readers {
        let _ = r.join();
    }
    let output = String::from_utf8_lossy(&tail.lock().unwrap_or_else(|e| e.into_inner()))
        .trim()
        .to_string();
    let first_line = String::from_utf8_lossy(&head.lock().unwrap_or_else(|e| e.into_inner()))
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match status {
        Ok(s) => CommandResult {
            success: s.success(),
            status: s.to_string(),
            output_tail: output,
            first_line,
        },
        Err(()) => CommandResult {
            success: false,
            status: format!("killed after {} s timeout", timeout.as_secs_f32()),
            output_tail: output,
            first_line,
        },
    }
}

/// A failed health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFailure {
    /// The check's name.
    pub name: String,
    /// How it ended.
    pub status: String,
    /// The end of its output.
    pub output_tail: String,
}

impl HealthFailure {
    /// One line for reports and logs.
    pub fn reason(&self) -> String {
        let last_line = self.output_tail.lines().last().unwrap_or("").trim();
        if last_line.is_empty() {
            format!("health check '{}' failed ({})", self.name, self.status)
        } else {
            format!(
                "health check '{}' failed ({}): {last_line}",
                self.name, self.status
            )
        }
    }
}

/// Runs every check in order; the first failure stops the rest.
pub fn run_health_checks(checks: &[HealthCheck]) -> Result<(), HealthFailure> {
    for check in checks {
        let r = run(&check.command, check.timeout);
        if !r.success {
            return Err(HealthFailure {
                name: check.name.clone(),
                status: r.status,
                output_tail: r.output_tail,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn success_failure_and_output_tail() {
        let ok = run(&sh("echo fine"), Duration::from_secs(10));
        assert!(ok.success, "{ok:?}");
        assert_eq!(ok.output_tail, "fine");
        let bad = run(
            &sh("echo first; echo 'disk missing' >&2; exit 3"),
            Duration::from_secs(10),
        );
        assert!(!bad.success);
        assert!(bad.status.contains('3'), "{}", bad.status);
        assert!(bad.output_tail.contains("disk missing"));
        let big = run(
            &sh("head -c 100000 /dev/zero | tr '\\0' x; echo END"),
            Duration::from_secs(10),
        );
        assert!(big.output_tail.len() <= TAIL_BYTES && big.output_tail.ends_with("END"));
        let missing = run(&["/nonexistent/check".to_string()], Duration::from_secs(1));
        assert!(!missing.success && missing.status.contains("cannot start"));
    }

    #[test]
    fn the_first_stdout_line_and_extra_environment() {
        let r = run_with_env(
            &sh("echo warming up >&2; echo \"on a mission: $MISSION\"; echo second; exit 1"),
            &[("MISSION".into(), "pick 42".into())],
            Duration::from_secs(10),
        );
        assert!(!r.success);
        assert_eq!(r.first_line, "on a mission: pick 42");
        let silent = run(&sh("exit 1"), Duration::from_secs(10));
        assert_eq!(silent.first_line, "");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let start = Instant::now();
        let r = run(
            &sh("sleep 30 & sleep 30; echo never"),
            Duration::from_millis(300),
        );
        assert!(!r.success);
        assert!(r.status.contains("timeout"), "{}", r.status);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn checks_stop_at_the_first_failure_and_name_it() {
        let checks = vec![
            HealthCheck {
                name: "one".into(),
                command: sh("true"),
                timeout: Duration::from_secs(5),
            },
            HealthCheck {
                name: "two".into(),
                command: sh("echo 'no route'; false"),
                timeout: Duration::from_secs(5),
            },
            HealthCheck {
                name: "three".into(),
                command: sh("true"),
                timeout: Duration::from_secs(5),
            },
        ];
        let f = run_health_checks(&checks).unwrap_err();
        assert_eq!(f.name, "two");
        assert!(
            f.reason().contains("'two'") && f.reason().contains("no route"),
            "{}",
            f.reason()
        );
        assert!(run_health_checks(&checks[..1]).is_ok());
    }
}
