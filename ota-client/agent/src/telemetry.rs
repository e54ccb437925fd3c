//! Telemetry sent with every poll: CPU (from `/proc/stat` deltas), memory (`/proc/meminfo`),
//! disk (statvfs of the data directory), uptime (`/proc/uptime`), merged with the JSON object
//! printed by the operator's `telemetry_command` (battery, position, application metrics).
//!
//! Every source is optional: what cannot be read is left out, never guessed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_protocol::device::Telemetry;
use serde_json::{Map, Value};

/// How long `telemetry_command` may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most stdout read from `telemetry_command`.
const COMMAND_OUTPUT_LIMIT: u64 = 64 * 1024;

/// CPU counters of the `cpu` line of `/proc/stat`: (busy, total) jiffies.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice: included in user]
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU use between two `/proc/stat` samples, 0-100.
pub fn cpu_percent(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let busy = after.0.checked_sub(before.0)?;
    let total = after.1.checked_sub(before.1)?;
    (total > 0).then(|| (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

/// (used, total) bytes from `/proc/meminfo` (used = MemTotal - MemAvailable).
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:").or_else(|| field("MemFree:"))?;
    Some((total.saturating_sub(available), total))
}

/// Seconds since boot from `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
}

/// Merges the operator's JSON object into `t`: known fields replace the measured ones,
/// `metrics` entries are added, other numeric top-level keys become metrics.
pub fn merge(t: &mut Telemetry, extra: Map<String, Value>) -> Result<(), String> {
    let mut base = match serde_json::to_value(&*t) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let known = [
        "battery_percent",
        "position",
        "cpu_percent",
        "memory_used_bytes",
        "memory_total_bytes",
        "disk_used_bytes",
        "disk_total_bytes",
        "uptime_secs",
    ];
    for (key, value) in extra {
        if key == "metrics" {
            let Value::Object(m) = value else {
                return Err("\"metrics\" must be an object of numbers".into());
            };
            let entry = base
                .entry("metrics")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(target) = entry {
                target.extend(m);
            }
        } else if known.contains(&key.as_str()) {
            base.insert(key, value);
        } else if value.is_number() {
            let entry = base
                .entry("metrics")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(target) = entry {
                target.insert(key, value);
            }
        }
    }
    *t = serde_json::from_value(Value::Object(base)).map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs `argv` and parses its stdout as one JSON object.
pub fn run_command(argv: &[String], timeout: Duration) -> Result<Map<String, Value>, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(COMMAND_OUTPUT_LIMIT).read_to_end(&mut out);
        out
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(format!(
                    "{program} did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {program}: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{program} failed ({status})"));
    }
    match serde_json::from_slice(&out) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{program} must print one JSON object")),
        Err(e) => Err(format!("{program} printed invalid JSON: {e}")),
    }
}

/// Collects telemetry; keeps the previous CPU sample for the next delta.
pub struct Sampler {
    proc_dir: PathBuf,
    disk_path: PathBuf,
    command: Option<Vec<String>>,
    last_cpu: Option<(u64, u64)>,
}

impl Sampler {
    /// Reads `/proc` and statvfs of `disk_path`, and runs `command` if given.
    pub fn new(disk_path: &Path, command: Option<Vec<String>>) -> Sampler {
        Sampler {
            proc_dir: PathBuf::from("/proc"),
            disk_path: disk_path.to_path_buf(),
            command,
            last_cpu: None,
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.proc_dir.join(name)).ok()
    }

    /// One sample. The second return value is a problem with `telemetry_command`, if any
    /// (the rest of the sample is still sent).
    pub fn sample(&mut self) -> (Telemetry, Option<String>) {
        let mut t = Telemetry::default();
        if let Some(now) = self.read("stat").as_deref().and_then(parse_proc_stat) {
            if let Some(before) = self.last_cpu {
                t.cpu_percent = cpu_percent(before, now).map(|p| (p * 10.0).round() / 10.0);
            }
            self.last_cpu = Some(now);
        }
        if let Some((used, total)) = self.read("meminfo").as_deref().and_then(parse_meminfo) {
            t.memory_used_bytes = Some(used);
            t.memory_total_bytes = Some(total);
        }
        if let Ok(s) = nix::sys::statvfs::statvfs(&self.disk_path) {
            // fsblkcnt_t and c_ulong are 32 bits on some robots' targets.
            #[allow(clippy::unnecessary_cast)]
            let (frag, blocks, free) = (
                s.fragment_size() as u64,
                s.blocks() as u64,
                s.blocks_free() as u64,
            );
            let (total, free) = (blocks * frag, free * frag);
            t.disk_total_bytes = Some(total);
            t.disk_used_bytes = Some(total.saturating_sub(free));
        }
        t.uptime_secs = self.read("uptime").as_deref().and_then(parse_uptime);
        let mut problem = None;
        if let Some(cmd) = &self.command {
            match run_command(cmd, COMMAND_TIMEOUT).and_then(|m| merge(&mut t, m)) {
                Ok(()) => {}
                Err(e) => problem = Some(format!("telemetry_command: {e}")),
            }
        }
        // The server refuses a poll whose telemetry breaks a wire rule: drop the offending values here instead,
        // so a faulty script costs a metric, never the poll that brings this robot its updates.
        let dropped = ota_protocol::validate::sanitize_telemetry(&mut t);
        if !dropped.is_empty() && problem.is_none() {
            problem = Some(format!("telemetry_command: dropped {}", dropped.join("; ")));
        }
        (t, problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsers() {
        let a = parse_proc_stat("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, (200, 1000));
        let b = parse_proc_stat("cpu  150 0 150 800 100 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_percent(a, b), Some(50.0));
        assert_eq!(cpu_percent(a, a), None);
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
        let mem = "MemTotal:        1000 kB\nMemFree:          100 kB\nMemAvailable:     400 kB\n";
        assert_eq!(parse_meminfo(mem), Some((600 * 1024, 1000 * 1024)));
        assert_eq!(parse_uptime("86400.55 12345.00\n"), Some(86400));
        assert_eq!(parse_uptime("x"), None);
    }

    #[test]
    fn command_output_is_merged() {
        let mut t = Telemetry {
            cpu_percent: Some(5.0),
            ..Default::default()
        };
        let m = run_command(
            &[
                "sh".into(),
                "-c".into(),
                r#"echo '{"battery_percent": 81.5, "position": {"x": 1, "y": 2}, "metrics": {"lat": 4}, "temp_c": 40, "name": "x"}'"#.into(),
            ],
            Duration::from_secs(5),
        )
        .unwrap();
        merge(&mut t, m).unwrap();
        assert_eq!(t.battery_percent, Some(81.5));
        assert_eq!(t.position.as_ref().unwrap().y, 2.0);
        assert_eq!(t.cpu_percent, Some(5.0));
        assert_eq!(t.metrics["lat"], 4.0);
        assert_eq!(t.metrics["temp_c"], 40.0);
        let e = run_command(
            &["sh".into(), "-c".into(), "echo '[1]'".into()],
            COMMAND_TIMEOUT,
        )
        .unwrap_err();
        assert!(e.contains("one JSON object"), "{e}");
        let e = run_command(
            &["sh".into(), "-c".into(), "exit 3".into()],
            COMMAND_TIMEOUT,
        )
        .unwrap_err();
        assert!(e.contains("failed"), "{e}");
        let e = run_command(
            &["sh".into(), "-c".into(), "sleep 5".into()],
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        let mut t = Telemetry::default();
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"battery_percent": "full"}"#).unwrap();
        assert!(merge(&mut t, bad).is_err());
    }

    #[test]
    fn a_script_emitting_what_the_server_refuses_loses_that_metric_not_the_sample() {
        let script = r#"echo '{"metrics": {"bad name!": 1, "lat_ms": 4}}'"#;
        let mut s = Sampler::new(
            &std::env::temp_dir(),
            Some(vec!["sh".into(), "-c".into(), script.into()]),
        );
        let (t, problem) = s.sample();
        assert_eq!(t.metrics.keys().collect::<Vec<_>>(), ["lat_ms"]);
        assert!(t.memory_total_bytes.is_some());
        let problem = problem.expect("the drop is reported");
        assert!(problem.contains("bad name!"), "{problem}");
        assert!(ota_protocol::validate::telemetry(&t).is_ok());
    }

    #[test]
    fn a_sample_measures_this_machine() {
        let dir = std::env::temp_dir();
        let mut s = Sampler::new(&dir, None);
        let (first, problem) = s.sample();
        assert!(problem.is_none());
        assert!(first.memory_total_bytes.unwrap() > 0);
        assert!(first.disk_total_bytes.unwrap() > 0);
        assert!(first.uptime_secs.is_some());
        std::thread::sleep(Duration::from_millis(50));
        let (second, _) = s.sample();
        assert!(second
            .cpu_percent
            .is_some_and(|c| (0.0..=100.0).contains(&c)));
    }
}
