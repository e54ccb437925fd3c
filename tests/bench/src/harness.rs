//! The measuring machinery every scenario shares: run a command under GNU time, collect wall time, CPU time and
//! peak RSS, and interleave a group of commands over several rounds so that the noise of a shared machine hits
//! each of them alike.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use serde::Serialize;

/// GNU time, which reports the peak RSS of the command it runs.
pub const GNU_TIME: &str = "/usr/bin/time";

/// One measured run of a command.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Wall seconds from spawn to exit (plus the fsync of the output, where the case asks for one).
    pub wall_s: f64,
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Peak resident set size in KiB ("Maximum resident set size" of `time -v`).
    pub max_rss_kib: u64,
}

/// Peak resident memory of the measured program itself (not of GNU time), split as the kernel accounts it: anonymous
/// (heap, stacks: what the program really holds) and file-backed (mapped files and the binary, which the kernel can
/// drop at any time). Polled from `/proc/<pid>/status` every [`MEMORY_POLL`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemoryPeak {
    /// Largest `RssAnon` seen, KiB.
    pub anon_kib: u64,
    /// Largest `RssFile` seen, KiB.
    pub file_kib: u64,
}

/// How often [`MemoryPeak`] is sampled.
pub const MEMORY_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// A command measured as one row of a report. Its standard output goes to /dev/null.
#[derive(Debug)]
pub struct Case {
    /// Short name used in the table and the JSON (e.g. `create`).
    pub name: String,
    /// What exactly runs, for people.
    pub label: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    remove_before: Vec<PathBuf>,
    uncache_before: Vec<PathBuf>,
    fsync_after: Option<PathBuf>,
    watch_memory: bool,
    /// Measured runs, in order.
    pub samples: Vec<Sample>,
    /// With [`Case::watch_memory`]: the memory peaks of each run, in order.
    pub memory: Vec<MemoryPeak>,
}

impl Case {
    /// A case running `program` with no arguments yet.
    pub fn new(name: &str, label: impl Into<String>, program: impl AsRef<Path>) -> Self {
        Case {
            name: name.to_string(),
            label: label.into(),
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            remove_before: Vec::new(),
            uncache_before: Vec::new(),
            fsync_after: None,
            watch_memory: false,
            samples: Vec::new(),
            memory: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.into(), value.as_ref().to_os_string()));
        self
    }

    /// Removes `path` (file or directory) before every run, outside the timed region, so every run writes a new
    /// file rather than overwriting the previous run's.
    pub fn remove_before(mut self, path: impl AsRef<Path>) -> Self {
        self.remove_before.push(path.as_ref().to_path_buf());
        self
    }

    /// Writes back and drops the page cache of the existing file `path` before every run, outside the timed
    /// region, so every run finds it uncached whatever the previous run (of this or another case) left behind:
    /// e.g. a slot that is overwritten in place, which on a robot is not in the page cache either.
    pub fn uncache_before(mut self, path: impl AsRef<Path>) -> Self {
        self.uncache_before.push(path.as_ref().to_path_buf());
        self
    }

    /// fsyncs `path` right after the command exits, inside the timed region: for baselines whose output must be
    /// as durable as that of the tool they are compared with.
    pub fn fsync_after(mut self, path: impl AsRef<Path>) -> Self {
        self.fsync_after = Some(path.as_ref().to_path_buf());
        self
    }

    /// Polls the program's anonymous and file-backed RSS while it runs (into [`Case::memory`]).
    pub fn watch_memory(mut self) -> Self {
        self.watch_memory = true;
        self
    }

    /// The command line, for logs.
    pub fn command_line(&self) -> String {
        let mut line = self.program.display().to_string();
        for a in &self.args {
            line.push(' ');
            line.push_str(&a.to_string_lossy());
        }
        line
    }

    /// Runs the command once under GNU time, appends the sample and returns it. `scratch` holds GNU time's report
    /// and the command's stderr; a non-zero exit is an error that shows the end of that stderr.
    pub fn run_once(&mut self, scratch: &Path) -> Result<Sample> {
        for path in &self.remove_before {
            remove_path(path)?;
        }
        for path in &self.uncache_before {
            drop_page_cache(path)?;
        }
        let time_report = scratch.join(format!(".time-{}.txt", self.name));
        let stderr_log = scratch.join(format!(".stderr-{}.txt", self.name));
        let mut command = Command::new(GNU_TIME);
        command
            .arg("-v")
            .arg("-o")
            .arg(&time_report)
            .arg(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&stderr_log)?));

        let start = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {GNU_TIME} (apt-get install time)"))?;
        let status = if self.watch_memory {
            let mut peak = MemoryPeak::default();
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if let Some((anon, file)) = program_rss(child.id()) {
                    peak.anon_kib = peak.anon_kib.max(anon);
                    peak.file_kib = peak.file_kib.max(file);
                }
                std::thread::sleep(MEMORY_POLL);
            };
            self.memory.push(peak);
            status
        } else {
            child.wait()?
        };
        if status.success() {
            if let Some(path) = &self.fsync_after {
                File::open(path)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("cannot fsync {}", path.display()))?;
            }
        }
        let wall_s = start.elapsed().as_secs_f64();

        if !status.success() {
            let err = fs::read_to_string(&stderr_log).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} failed ({status}): {}\n{}",
                self.name,
                self.command_line(),
                tail.join("\n")
            );
        }
        let report = fs::read_to_string(&time_report)
            .with_context(|| format!("cannot read {}", time_report.display()))?;
        let sample = parse_time_report(&report, wall_s)
            .with_context(|| format!("unexpected output of {GNU_TIME} -v:\n{report}"))?;
        self.samples.push(sample);
        Ok(sample)
    }
}

/// `RssAnon` and `RssFile` (KiB) of the program GNU time (`time_pid`) runs, while it runs.
fn program_rss(time_pid: u32) -> Option<(u64, u64)> {
    let children = fs::read_to_string(format!("/proc/{time_pid}/task/{time_pid}/children")).ok()?;
    let pid: u32 = children.split_whitespace().next()?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("RssAnon:")?, field("RssFile:")?))
}

/// Reads the fields we need from the report of GNU `time -v`.
pub fn parse_time_report(report: &str, wall_s: f64) -> Result<Sample> {
    let field = |name: &str| -> Result<&str> {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().strip_prefix(':'))
            .map(str::trim)
            .with_context(|| format!("no '{name}' line"))
    };
    Ok(Sample {
        wall_s,
        user_s: field("User time (seconds)")?.parse()?,
        sys_s: field("System time (seconds)")?.parse()?,
        max_rss_kib: field("Maximum resident set size (kbytes)")?.parse()?,
    })
}

/// Runs every case once per round for `rounds` rounds. The order rotates each round (A B C, B C A, C A B, ...) so
/// no case always runs first, right after another, or while the page cache and the disk are still busy with the
/// same neighbour; drifting load on the shared machine then spreads over all cases instead of biasing one.
pub fn run_interleaved(cases: &mut [Case], rounds: usize, scratch: &Path) -> Result<()> {
    let n = cases.len();
    for round in 0..rounds {
        for k in 0..n {
            let case = &mut cases[(round + k) % n];
            let s = case.run_once(scratch)?;
            eprintln!(
                "  round {}/{} {:<12} {:>8.3} s wall  {:>7.2} s cpu  {:>7.1} MiB peak RSS",
                round + 1,
                rounds,
                case.name,
                s.wall_s,
                s.user_s + s.sys_s,
                s.max_rss_kib as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// Removes a file or a directory tree; a missing path is fine.
pub fn remove_path(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.with_context(|| format!("cannot remove {}", path.display()))
}

/// fsyncs `path` and asks the kernel to drop its pages from the page cache (`POSIX_FADV_DONTNEED` on clean pages).
pub fn drop_page_cache(path: &Path) -> Result<()> {
    let file = File::options()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot fsync {}", path.display()))?;
    posix_fadvise(
        file.as_raw_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .with_context(|| format!("cannot drop the page cache of {}", path.display()))?;
    Ok(())
}

/// Median of a non-empty slice (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Finds a program: an explicit path, or the first match on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(name);
    if candidate.components().count() > 1 {
        return candidate.is_file().then(|| candidate.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Finds one of our binaries: an explicit path, else the one next to this binary (same cargo profile), else PATH.
/// `build` is the command that builds it, for the error message.
pub fn tool_binary(explicit: Option<&Path>, name: &str, build: &str) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return given_program(p);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(name)));
    if let Some(p) = sibling.filter(|p| p.is_file()) {
        return Ok(p);
    }
    find_program(name)
        .with_context(|| format!("{name} not found next to ota-bench nor on PATH: {build}"))
}

/// A program the user named on the command line (a path, or a name on PATH), which must exist.
pub fn given_program(path: &Path) -> Result<PathBuf> {
    find_program(&path.to_string_lossy()).with_context(|| format!("{} not found", path.display()))
}

/// Checks that the external tools a scenario runs are installed, naming the Debian package of each missing one.
pub fn require_tools(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<String> = tools
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, package)| format!("{program} (apt-get install {package})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} — tests/bench/run.sh installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_time_report() {
        let report = "\tCommand being timed: \"zstd -d -c x\"\n\
            \tUser time (seconds): 1.25\n\
            \tSystem time (seconds): 0.10\n\
            \tPercent of CPU this job got: 99%\n\
            \tElapsed (wall clock) time (h:mm:ss or m:ss): 0:01.36\n\
            \tMaximum resident set size (kbytes): 10544\n\
            \tExit status: 0\n";
        let s = parse_time_report(report, 1.5).unwrap();
        assert_eq!(s.max_rss_kib, 10544);
        assert!((s.user_s - 1.25).abs() < 1e-9 && (s.sys_s - 0.10).abs() < 1e-9);
        assert!((s.wall_s - 1.5).abs() < 1e-9);
        assert!(parse_time_report("garbage", 1.0).is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn measures_a_real_command() {
        if !ota_testkit::tools::require_all(&[GNU_TIME, "true", "false"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut case = Case::new("true", "true", find_program("true").unwrap());
        let s = case.run_once(dir.path()).unwrap();
        assert!(s.wall_s > 0.0 && s.max_rss_kib > 0);
        let mut failing = Case::new("false", "false", find_program("false").unwrap());
        assert!(failing.run_once(dir.path()).is_err());
    }

    #[test]
    fn watches_the_memory_of_the_program_not_of_time() {
        if !ota_testkit::tools::require_all(&[GNU_TIME, "sleep"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut case = Case::new("sleep", "sleep", find_program("sleep").unwrap())
            .args(["0.2"])
            .watch_memory();
        case.run_once(dir.path()).unwrap();
        let [peak] = case.memory.as_slice() else {
            panic!("{:?}", case.memory)
        };
        assert!(peak.file_kib > 0 && peak.anon_kib > 0, "{peak:?}");
        assert!(peak.anon_kib + peak.file_kib < 64 * 1024, "{peak:?}");
    }

    #[test]
    fn drops_page_cache_of_existing_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slot");
        fs::write(&p, vec![1u8; 1 << 16]).unwrap();
        drop_page_cache(&p).unwrap();
        assert_eq!(fs::read(&p).unwrap(), vec![1u8; 1 << 16]);
        assert!(drop_page_cache(&dir.path().join("none")).is_err());
    }
}
