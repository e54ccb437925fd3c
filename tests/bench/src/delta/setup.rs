//! The delta scenario's plumbing: the tools it runs, a real `ota-server serve` process, simulated robots made of
//! files, and the image links and slot contents a run starts from.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use ota_testkit::proxy::Seen;

use crate::harness::{remove_path, Case};

pub const COMPATIBLE: &str = "ota-bench";
pub const SLOT_CLASS: &str = "rootfs";
pub const ADMIN_TOKEN: &str = "ota-bench-admin-token";

/// The tools a run uses.
pub struct Tools {
    pub ota_bundle: PathBuf,
    pub ota_client: PathBuf,
    pub ota_server: PathBuf,
    pub zstd: PathBuf,
}

/// Runs a command to completion (untimed setup); a failure shows its stderr.
pub fn setup(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ota-server serve` on 127.0.0.1 (a port it picks); killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    pub fn start(t: &Tools, dir: &Path, trust: &Path) -> Result<Server> {
        let mut child = Command::new(&t.ota_server)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .arg("--trust")
            .arg(trust)
            .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTA_ENROLLMENT_SECRET", "ota-bench-enrollment")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start ota-server")?;
        let stdout = child.stdout.take().context("ota-server's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Drains stdout for the whole run so the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(format!("http://{}", url.trim()));
                }
            }
        });
        let mut server = Server {
            child,
            base: String::new(),
        };
        server.base = rx
            .recv_timeout(Duration::from_secs(30))
            .context("ota-server did not print its address within 30 s")?;
        Ok(server)
    }

    /// Publishes `bundle` with `ota-bundle publish`; returns its bundle id.
    pub fn publish(&self, t: &Tools, bundle: &Path) -> Result<String> {
        let out = setup(
            Command::new(&t.ota_bundle)
                .args(["publish", "--server", &self.base, "--token", ADMIN_TOKEN])
                .arg(bundle),
            "ota-bundle publish",
        )?;
        bundle_id(&out)
            .with_context(|| format!("no bundle id in ota-bundle publish's output: {out}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id in `ota-bundle publish`'s "... bundle id ID version ..." line.
fn bundle_id(out: &str) -> Option<String> {
    let rest = out.split("bundle id ").nth(1)?;
    rest.split_whitespace().next().map(str::to_string)
}

/// A simulated robot made of files: slot files A and B, the `file` boot backend, a fake kernel command line.
pub struct Robot {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub state_file: PathBuf,
    pub cmdline: PathBuf,
    pub slots: [PathBuf; 2],
}

impl Robot {
    pub fn create(dir: &Path, trust: &Path, slot_bytes: u64) -> Result<Robot> {
        fs::create_dir_all(dir)?;
        let robot = Robot {
            config: dir.join("client.toml"),
            data_dir: dir.join("data"),
            state_file: dir.join("boot-state"),
            cmdline: dir.join("cmdline"),
            slots: [dir.join("slot-a.img"), dir.join("slot-b.img")],
        };
        // A work directory given again: the robot starts without state.
        remove_path(&robot.data_dir)?;
        remove_path(&robot.state_file)?;
        for slot in &robot.slots {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(slot)?;
            f.set_len(slot_bytes)?;
        }
        robot.boot("A")?;
        let q = |p: &Path| serde_json::to_string(&p.to_string_lossy());
        let mut toml = String::new();
        writeln!(toml, "compatible = {}", serde_json::to_string(COMPATIBLE)?)?;
        writeln!(toml, "trust_root = {}", q(trust)?)?;
        writeln!(toml, "data_dir = {}", q(&robot.data_dir)?)?;
        writeln!(toml, "\n[slots.{SLOT_CLASS}]")?;
        writeln!(
            toml,
            "a = {}\nb = {}",
            q(&robot.slots[0])?,
            q(&robot.slots[1])?
        )?;
        writeln!(
            toml,
            "\n[bootloader]\nbackend = \"file\"\nstate_file = {}",
            q(&robot.state_file)?
        )?;
        writeln!(
            toml,
            "\n[booted_slot]\nsource = \"cmdline\"\npath = {}",
            q(&robot.cmdline)?
        )?;
        fs::write(&robot.config, toml)?;
        Ok(robot)
    }

    /// The kernel command line of a boot of `slot`.
    pub fn boot(&self, slot: &str) -> Result<()> {
        fs::write(
            &self.cmdline,
            format!("BOOT_IMAGE=/vmlinuz ro quiet ota.slot={slot}\n"),
        )?;
        Ok(())
    }

    pub fn client(&self, t: &Tools) -> Command {
        let mut c = Command::new(&t.ota_client);
        c.arg("--config").arg(&self.config);
        c
    }

    pub fn install_case(
        &self,
        t: &Tools,
        name: &str,
        label: &str,
        install: &[&str],
        target: &Path,
    ) -> Case {
        Case::new(name, label, &t.ota_client)
            .args(["--config".as_ref(), self.config.as_os_str()])
            .args(["install"])
            .args(install)
            .uncache_before(target)
            .watch_memory()
    }
}

/// `work/<release>/rootfs.ext4`, a symbolic link to `image`.
pub fn same_name(work: &Path, release: &str, image: &Path) -> Result<PathBuf> {
    let dir = work.join(release);
    fs::create_dir_all(&dir)?;
    let link = dir.join("rootfs.ext4");
    remove_path(&link)?;
    std::os::unix::fs::symlink(image, &link)
        .with_context(|| format!("cannot link {}", link.display()))?;
    Ok(link)
}

/// Copies the regular files of `from` (flat) into a fresh `to`.
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    remove_path(to)?;
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))?;
        } else if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Fills `path` (existing, `len` bytes) with pseudo-random bytes: an active slot with nothing to reuse.
pub fn fill_noise(path: &Path, len: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(OpenOptions::new().write(true).open(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Bundle bytes the client asked for by ranges in `seen` (the `bytes=0-0` probe left out): what its plan reads,
/// without what the server pushed into an answer the client dropped (a streamed request given up for ranges).
pub fn ranged_bytes(seen: &[Seen]) -> u64 {
    seen.iter()
        .filter(|s| s.path.ends_with("/download"))
        .filter_map(|s| s.range.as_deref())
        .filter(|r| r.trim() != "bytes=0-0")
        .flat_map(|r| r.trim().trim_start_matches("bytes=").split(','))
        .filter_map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;
    use crate::bundle::size_of;

    #[test]
    fn reads_the_bundle_id_of_publish() {
        let out =
            "PUBLISHED /w/v2.otab: bundle id 3f2a9c version 2.0.0 for 'ota-bench' (123 bytes)\n";
        assert_eq!(bundle_id(out).as_deref(), Some("3f2a9c"));
        assert_eq!(bundle_id("nothing"), None);
    }

    #[test]
    fn the_robots_config_is_valid_toml() {
        let dir = tempfile::tempdir().unwrap();
        let r =
            Robot::create(&dir.path().join("r \"x\""), &dir.path().join("k.pub"), 4096).unwrap();
        let value: toml::Table = fs::read_to_string(&r.config).unwrap().parse().unwrap();
        assert_eq!(
            value["slots"][SLOT_CLASS]["b"].as_str(),
            r.slots[1].to_str()
        );
        assert_eq!(value["booted_slot"]["path"].as_str(), r.cmdline.to_str());
        assert!(fs::read_to_string(&r.cmdline)
            .unwrap()
            .contains("ota.slot=A"));
        r.boot("B").unwrap();
        assert!(fs::read_to_string(&r.cmdline)
            .unwrap()
            .contains("ota.slot=B"));
        assert_eq!(size_of(&r.slots[0]).unwrap(), 4096);
    }

    #[test]
    fn noise_fills_exactly_and_differs_from_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slot");
        File::create(&p).unwrap().set_len(3 << 20).unwrap();
        fill_noise(&p, (3 << 20) - 5).unwrap();
        let bytes = fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 3 << 20);
        assert!(bytes[..1000].iter().filter(|&&b| b == 0).count() < 50);
        assert_eq!(&bytes[(3 << 20) - 5..], &[0; 5]);
    }

    #[test]
    fn counts_the_bytes_of_ranges_asked_for() {
        let seen = |path: &str, range: Option<&str>| Seen {
            at: std::time::Instant::now(),
            method: "GET".into(),
            path: path.into(),
            range: range.map(str::to_string),
            fate: "forward",
        };
        let all = [
            seen("/api/bundles/x/download", None),
            seen("/api/bundles/x/download", Some("bytes=0-0")),
            seen("/api/bundles/x/download", Some("bytes=0-99, 200-299")),
            seen("/api/devices/poll", Some("bytes=0-99")),
            seen("/api/bundles/x/download", Some("bytes=1000-1000")),
        ];
        assert_eq!(ranged_bytes(&all), 201);
    }
}
