//! Simulated robots, shared by the client's tests, the demo fleet and the end-to-end tests:
//! regular files as slots (rootfs A/B, model A/B), a boot environment (grubenv or the `file`
//! backend's state file), a file playing /proc/cmdline, and a "reboot" that runs the SHIPPED
//! grub script through [`crate::sim`], records the slot it booted, and (optionally) runs `confirm` like ota-health-confirm.service.
//! [`Robot::run_daemon`] runs `ota-client daemon` on such a robot, rebooting it whenever the
//! daemon runs the reboot command.
//!
//! The helpers panic on setup errors (they are test fixtures); the operations under test
//! return their errors.

#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use ota_boot_store::{GrubEnvFile, StateFile};
use ota_bootloader::EnvStore;
use ota_bundle_format::{build_bundle_to_vec, BundleError, BundleSpec, ImageInput};
use ota_client::daemon::{self, DaemonError, DaemonHooks, Exit, Level, LogSink};
use ota_client::{
    BundleSource, Client, ClientError, Config, ConfirmReport, InstallOptions, InstallReport,
    NoProgress, Slot, Status,
};
use ota_keys::SecretKey;

use crate::sim::{self, Loader, SimOptions};

/// Size of each rootfs slot and image.
pub const ROOTFS_SIZE: usize = 96 * 1024;
/// Size of each model slot and image.
pub const MODEL_SIZE: usize = 24 * 1024;
/// The robot's product string.
pub const COMPATIBLE: &str = "acme-robot-v2";

/// Which boot environment store the robot has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// grubenv file.
    Grub,
    /// The `file` backend.
    File,
}

/// Deterministic pseudo-random image content (compressible, different per seed).
pub fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            if i % 4 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            if i % 64 < 40 {
                (x >> ((i % 4) * 8)) as u8
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// Incompressible bytes (a payload large enough to tamper with in the middle, or to measure).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let step = |x: u64| {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    };
    let mut x = step(seed);
    (0..len)
        .map(|_| {
            x = step(x);
            (x >> 33) as u8
        })
        .collect()
}

/// The rootfs image of `version` (the factory image is version "factory").
pub fn rootfs_image(version: &str) -> Vec<u8> {
    image(seed(version, 1), ROOTFS_SIZE)
}

/// The model image of `version`.
pub fn model_image(version: &str) -> Vec<u8> {
    model_image_of_size(version, MODEL_SIZE)
}

/// The model image of `version` for model slots of `size` bytes (what [`Robot::model_image`] gives).
pub fn model_image_of_size(version: &str, size: usize) -> Vec<u8> {
    image(seed(version, 2), size)
}

fn seed(version: &str, class: u64) -> u64 {
    version
        .bytes()
        .fold(class, |h, b| h.wrapping_mul(131).wrapping_add(b as u64))
}

/// The release signing key shared by every robot in a test binary.
pub fn release_key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(SecretKey::generate)
}

/// Builds a signed bundle (panics on errors; see [`try_bundle_with`]).
pub fn bundle_with(
    key: &SecretKey,
    version: &str,
    compatible: &str,
    images: &[(&str, Vec<u8>)],
) -> Vec<u8> {
    try_bundle_with(key, version, compatible, images).expect("bundle builds")
}

/// Builds a signed bundle with the real format library: one `<class>.img` per image.
pub fn try_bundle_with(
    key: &SecretKey,
    version: &str,
    compatible: &str,
    images: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>, BundleError> {
    try_bundle_signed_by(&[key], version, compatible, images)
}

/// Like [`try_bundle_with`], signed by every one of `keys` (threshold and rotation tests).
pub fn try_bundle_signed_by(
    keys: &[&SecretKey],
    version: &str,
    compatible: &str,
    images: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>, BundleError> {
    try_bundle_with_floor(keys, version, None, compatible, images)
}

/// Like [`try_bundle_signed_by`], with a signed security floor (the lowest version a robot may run after
/// committing this bundle).
pub fn try_bundle_with_floor(
    keys: &[&SecretKey],
    version: &str,
    security_floor: Option<&str>,
    compatible: &str,
    images: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>, BundleError> {
    let parse = |v: &str| {
        v.parse::<semver::Version>()
            .map_err(|e| BundleError::NotABundle(format!("bad version {v}: {e}")))
    };
    let spec = BundleSpec {
        version: parse(version)?,
        compatible: compatible.into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: security_floor.map(parse).transpose()?,
        level: 1,
        workers: 1,
    };
    let inputs = images
        .iter()
        .map(|(class, data)| ImageInput {
            name: format!("{class}.img"),
            slot_class: class.to_string(),
            reader: Box::new(Cursor::new(data.clone())),
        })
        .collect();
    // The builder takes owned keys; `SecretKey` is deliberately not `Clone`.
    let keys = keys
        .iter()
        .map(|k| SecretKey::from_pem(&k.to_pem()).expect("a key reads back from its own PEM"))
        .collect::<Vec<_>>();
    build_bundle_to_vec(&spec, inputs, &keys).map(|(_, bytes)| bytes)
}

/// A rootfs-only bundle of `version` (cached: the same bytes every time).
pub fn rootfs_bundle(version: &str) -> Vec<u8> {
    cached(&format!("rootfs-{version}"), || {
        bundle_with(
            release_key(),
            version,
            COMPATIBLE,
            &[("rootfs", rootfs_image(version))],
        )
    })
}

/// A model-only (live) bundle of `version`.
pub fn model_bundle(version: &str) -> Vec<u8> {
    cached(&format!("model-{version}"), || {
        bundle_with(
            release_key(),
            version,
            COMPATIBLE,
            &[("model", model_image(version))],
        )
    })
}

/// A bundle with rootfs and model of `version`.
pub fn mixed_bundle(version: &str) -> Vec<u8> {
    cached(&format!("mixed-{version}"), || {
        bundle_with(
            release_key(),
            version,
            COMPATIBLE,
            &[
                ("rootfs", rootfs_image(version)),
                ("model", model_image(version)),
            ],
        )
    })
}

fn cached(name: &str, build: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap().get(name) {
        return b.clone();
    }
    let b = build();
    cache.lock().unwrap().insert(name.to_string(), b.clone());
    b
}

/// The server section of a simulated robot's configuration.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub url: String,
    pub device_id: String,
    pub enrollment_secret: String,
    pub tags: BTreeMap<String, String>,
    pub backoff_initial_ms: u64,
    pub backoff_max_secs: u64,
    /// `telemetry_command` (battery, position, ... as JSON).
    pub telemetry_command: Option<Vec<String>>,
}

/// How to build a simulated robot.
#[derive(Debug, Clone)]
pub struct RobotSpec {
    pub backend: Backend,
    pub rootfs_size: usize,
    pub model_size: usize,
    /// The release public key (PEM) the robot trusts.
    pub trust_pem: String,
    pub server: Option<ServerSpec>,
    /// The robot's own say before an update: `Some(phases)` writes a `[readiness]` section whose command
    /// (`ready.sh` in the robot's dir) gates those phases (`download`, `install`, `reboot`; empty: the
    /// client's default). It answers "go" unless [`Robot::set_busy`] gave it a reason to wait.
    pub readiness: Option<Vec<String>>,
}

impl RobotSpec {
    /// Default sizes, trusting [`release_key`], no server.
    pub fn new(backend: Backend) -> RobotSpec {
        RobotSpec {
            backend,
            rootfs_size: ROOTFS_SIZE,
            model_size: MODEL_SIZE,
            trust_pem: release_key().public_key().to_pem(),
            server: None,
            readiness: None,
        }
    }
}

/// One simulated robot in a directory (a temp dir unless [`Robot::create`] names one).
pub struct Robot {
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub backend: Backend,
    pub config_path: PathBuf,
    rootfs_size: usize,
    model_size: usize,
}

impl Robot {
    /// A factory-fresh robot in a temp dir: slot A holds the factory images, slot B junk, the
    /// boot environment was never written, the model link points at model A, healthy.
    pub fn new(backend: Backend) -> Robot {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Robot::create(dir.path(), &RobotSpec::new(backend));
        r._temp = Some(dir);
        r
    }

    /// A factory-fresh robot in `dir` (created if missing) as `spec` says.
    pub fn create(dir: &Path, spec: &RobotSpec) -> Robot {
        std::fs::create_dir_all(dir).unwrap();
        let d = dir;
        let backend = spec.backend;
        std::fs::write(
            d.join("rootfs_a.img"),
            image(seed("factory", 1), spec.rootfs_size),
        )
        .unwrap();
        std::fs::write(d.join("rootfs_b.img"), vec![0u8; spec.rootfs_size]).unwrap();
        std::fs::write(
            d.join("model_a.bin"),
            image(seed("factory", 2), spec.model_size),
        )
        .unwrap();
        std::fs::write(d.join("model_b.bin"), vec![0u8; spec.model_size]).unwrap();
        std::os::unix::fs::symlink(d.join("model_a.bin"), d.join("model_current")).unwrap();
        std::fs::write(d.join("cmdline"), "root=/dev/x ro ota.slot=A\n").unwrap();
        std::fs::write(d.join("healthy"), b"").unwrap();
        std::fs::write(d.join("trust.pub"), &spec.trust_pem).unwrap();
        let (backend_key, env_key, env_path) = match backend {
            Backend::Grub => ("grub", "grubenv", d.join("grubenv")),
            Backend::File => ("file", "state_file", d.join("bootstate")),
        };
        let p = |name: &str| d.join(name).display().to_string();
        let server = match &spec.server {
            None => String::new(),
            Some(s) => {
                let tags: Vec<String> = s
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k:?} = {v:?}"))
                    .collect();
                let telemetry = s.telemetry_command.as_ref().map_or(String::new(), |c| {
                    let argv: Vec<String> = c.iter().map(|a| format!("{a:?}")).collect();
                    format!("telemetry_command = [{}]\n", argv.join(", "))
                });
                format!(
                    "\n[server]\nurl = {:?}\ndevice_id = {:?}\nenrollment_secret = {:?}\ntags = {{ {} }}\nbackoff_initial_ms = {}\nbackoff_max_secs = {}\n{telemetry}",
                    s.url,
                    s.device_id,
                    s.enrollment_secret,
                    tags.join(", "),
                    s.backoff_initial_ms,
                    s.backoff_max_secs
                )
            }
        };
        let config = format!(
            r#"
compatible = "{COMPATIBLE}"
trust_root = "{trust}"
data_dir = "{data}"
reboot_command = ["sh", "-c", "echo reboot >> {reboots}"]

[slots.rootfs]
a = "{ra}"
b = "{rb}"

[slots.model]
a = "{ma}"
b = "{mb}"
active_link = "{link}"
service_restart = ["sh", "-c", "echo restart >> {restarts}"]

[bootloader]
backend = "{backend_key}"
{env_key} = "{env}"
tries = 3

[booted_slot]
source = "cmdline"
path = "{cmdline}"

[[health_check]]
name = "app-healthy"
command = ["sh", "-c", "test -f {healthy} || {{ echo 'app did not come up'; exit 1; }}"]
timeout_secs = 10

[http]
connect_timeout_secs = 5
read_timeout_secs = 2
retries = 4
retry_delay_ms = 20
"#,
            trust = p("trust.pub"),
            data = p("data"),
            reboots = p("reboots"),
            ra = p("rootfs_a.img"),
            rb = p("rootfs_b.img"),
            ma = p("model_a.bin"),
            mb = p("model_b.bin"),
            link = p("model_current"),
            restarts = p("restarts"),
            env = env_path.display(),
            cmdline = p("cmdline"),
            healthy = p("healthy"),
        );
        let readiness = match &spec.readiness {
            None => String::new(),
            Some(phases) => {
                let script = d.join("ready.sh");
                std::fs::write(
                    &script,
                    format!(
                        "#!/bin/sh\n# The robot stack's answer: busy (first line says why) or ready.\nif [ -f {busy:?} ]; then head -n 1 {busy:?}; exit 1; fi\necho ready\n",
                        busy = p("busy")
                    ),
                )
                .unwrap();
                std::fs::set_permissions(
                    &script,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
                let phases = if phases.is_empty() {
                    String::new()
                } else {
                    let list: Vec<String> = phases.iter().map(|ph| format!("{ph:?}")).collect();
                    format!("phases = [{}]\n", list.join(", "))
                };
                format!(
                    "\n[readiness]\ncommand = {:?}\ntimeout_secs = 5\n{phases}",
                    script.display().to_string()
                )
            }
        };
        let config_path = d.join("client.toml");
        std::fs::write(&config_path, format!("{config}{readiness}{server}")).unwrap();
        Robot {
            root: d.to_path_buf(),
            _temp: None,
            backend,
            config_path,
            rootfs_size: spec.rootfs_size,
            model_size: spec.model_size,
        }
    }

    /// The robot's directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The rootfs image of `version` at this robot's slot size.
    pub fn rootfs_image(&self, version: &str) -> Vec<u8> {
        image(seed(version, 1), self.rootfs_size)
    }

    /// The model image of `version` at this robot's slot size.
    pub fn model_image(&self, version: &str) -> Vec<u8> {
        image(seed(version, 2), self.model_size)
    }

    /// The factory line: installs `version` (rootfs + model, signed by `key`) locally, boots
    /// and confirms it, and clears the events, so the robot leaves the factory on `version`.
    pub fn provision(&self, key: &SecretKey, version: &str) -> Result<Slot, ClientError> {
        let bundle = try_bundle_with(
            key,
            version,
            COMPATIBLE,
            &[
                ("rootfs", self.rootfs_image(version)),
                ("model", self.model_image(version)),
            ],
        )?;
        self.install(&bundle)?;
        let _ = std::fs::remove_file(self.path("bundle.otab"));
        let (slot, confirm) = self.reboot_and_confirm();
        confirm?;
        let mut client = self.client();
        if let Some(last) = client.status().unreported_events.last() {
            client.ack_events(last.id)?;
        }
        self.take_reboot_requests();
        Ok(slot)
    }

    /// Runs `ota-client daemon` as the robot would: after each reboot the daemon starts,
    /// the robot power-cycles through the GRUB script and `confirm` runs before the daemon
    /// starts again. Returns once `cancel` is set.
    pub fn run_daemon(
        &self,
        hooks: &DaemonHooks,
        cancel: &Arc<AtomicBool>,
    ) -> Result<(), DaemonError> {
        loop {
            match daemon::run(self.config(), hooks, cancel)? {
                Exit::Stopped => return Ok(()),
                Exit::Rebooted => self.power_cycle(&hooks.log),
            }
        }
    }

    /// Reboots, runs confirm, and again while the robot asks for reboots (a failed trial
    /// reboots into the committed slot), at most 5 times.
    pub fn power_cycle(&self, log: &LogSink) {
        for _ in 0..5 {
            let _ = self.take_reboot_requests();
            let slot = self.reboot();
            log(Level::Info, &format!("rebooted into slot {slot}"));
            match self.client().confirm() {
                Ok(report) => {
                    for a in report.actions {
                        log(Level::Info, &format!("confirm: {a}"));
                    }
                }
                Err(e) => log(Level::Warn, &format!("confirm: {e}")),
            }
            if self.take_reboot_requests() == 0 {
                break;
            }
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    pub fn client(&self) -> Client {
        Client::open(self.config()).unwrap()
    }

    /// The boot environment file.
    pub fn env_path(&self) -> PathBuf {
        match self.backend {
            Backend::Grub => self.path("grubenv"),
            Backend::File => self.path("bootstate"),
        }
    }

    pub fn store(&self) -> Box<dyn EnvStore> {
        match self.backend {
            Backend::Grub => Box::new(GrubEnvFile::new(self.env_path())),
            Backend::File => Box::new(StateFile::new(self.env_path())),
        }
    }

    /// The contract variables (empty if never written).
    pub fn env_vars(&self) -> BTreeMap<String, String> {
        self.store().load().unwrap().into_vars()
    }

    /// The raw env file (None if missing).
    pub fn env_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.env_path()).ok()
    }

    /// Writes a bundle into the robot's dir and returns its path.
    pub fn put(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn install_bytes(
        &self,
        bytes: &[u8],
        options: &InstallOptions,
    ) -> Result<InstallReport, ClientError> {
        let p = self.put("bundle.otab", bytes);
        self.client()
            .install(&BundleSource::File(p), options, &mut NoProgress)
    }

    pub fn install(&self, bytes: &[u8]) -> Result<InstallReport, ClientError> {
        self.install_bytes(bytes, &InstallOptions::default())
    }

    /// Power cycle: the shipped GRUB script picks the slot (saving the env as GRUB does),
    /// the kernel command line names it. No confirm.
    pub fn reboot(&self) -> Slot {
        let mut store = self.store();
        let boot = sim::reboot(store.as_mut(), Loader::Grub, &SimOptions::default()).unwrap();
        let cmdline = boot.cmdline.expect("a kernel was booted");
        std::fs::write(self.path("cmdline"), format!("{cmdline}\n")).unwrap();
        Slot::from_cmdline(&cmdline).expect("ota.slot on the cmdline")
    }

    /// Reboot, then run confirm as ota-health-confirm.service would.
    pub fn reboot_and_confirm(&self) -> (Slot, Result<ConfirmReport, ClientError>) {
        let slot = self.reboot();
        (slot, self.client().confirm())
    }

    pub fn booted(&self) -> Slot {
        let text = std::fs::read_to_string(self.path("cmdline")).unwrap();
        Slot::from_cmdline(&text).unwrap()
    }

    /// What the robot's readiness command (see [`RobotSpec::readiness`]) answers: `Some(reason)` makes it
    /// print `reason` and say "wait", `None` makes it say "go".
    pub fn set_busy(&self, reason: Option<&str>) {
        match reason {
            Some(r) => std::fs::write(self.path("busy"), format!("{r}\n")).unwrap(),
            None => {
                let _ = std::fs::remove_file(self.path("busy"));
            }
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        if healthy {
            std::fs::write(self.path("healthy"), b"").unwrap();
        } else {
            let _ = std::fs::remove_file(self.path("healthy"));
        }
    }

    /// How many times the reboot command ran (and resets the count).
    pub fn take_reboot_requests(&self) -> usize {
        let n = std::fs::read_to_string(self.path("reboots"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        let _ = std::fs::remove_file(self.path("reboots"));
        n
    }

    pub fn restarts(&self) -> usize {
        std::fs::read_to_string(self.path("restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    pub fn slot_file(&self, class: &str, slot: Slot) -> PathBuf {
        let name = match (class, slot) {
            ("rootfs", Slot::A) => "rootfs_a.img",
            ("rootfs", Slot::B) => "rootfs_b.img",
            ("model", Slot::A) => "model_a.bin",
            ("model", Slot::B) => "model_b.bin",
            _ => panic!("no slot {class}/{slot}"),
        };
        self.path(name)
    }

    pub fn slot_bytes(&self, class: &str, slot: Slot) -> Vec<u8> {
        std::fs::read(self.slot_file(class, slot)).unwrap()
    }

    /// Which model slot the link points at.
    pub fn model_link(&self) -> Slot {
        let target = std::fs::read_link(self.path("model_current")).unwrap();
        if target == self.path("model_a.bin") {
            Slot::A
        } else if target == self.path("model_b.bin") {
            Slot::B
        } else {
            panic!("link points at {}", target.display())
        }
    }

    /// Snapshot of everything an install must not touch when it is refused.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rootfs_a: self.slot_bytes("rootfs", Slot::A),
            rootfs_b: self.slot_bytes("rootfs", Slot::B),
            model_a: self.slot_bytes("model", Slot::A),
            model_b: self.slot_bytes("model", Slot::B),
            env: self.env_bytes(),
            link: self.model_link(),
        }
    }

    pub fn status(&self) -> Status {
        self.client().status()
    }

    pub fn slot_state(&self, class: &str, slot: Slot) -> String {
        self.status()
            .slots
            .into_iter()
            .find(|s| s.class == class && s.slot == slot)
            .unwrap()
            .state
    }

    /// Asserts the invariant after any power cut: the bootloader selects a slot whose bytes
    /// are a complete verified image (the factory image or `allowed` versions).
    pub fn assert_boots_good_slot(&self, allowed: &[&str], context: &str) {
        let booted = self.booted();
        let bytes = self.slot_bytes("rootfs", booted);
        let ok = bytes == self.rootfs_image("factory")
            || allowed.iter().any(|v| bytes == self.rootfs_image(v));
        assert!(
            ok,
            "{context}: booted slot {booted} does not hold a complete verified image"
        );
        let model = self.model_link();
        let mbytes = self.slot_bytes("model", model);
        let ok = mbytes == self.model_image("factory")
            || allowed.iter().any(|v| mbytes == self.model_image(v));
        assert!(
            ok,
            "{context}: active model slot {model} does not hold a complete verified image"
        );
    }
}

/// Bytes of every slot, the env and the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub rootfs_a: Vec<u8>,
    pub rootfs_b: Vec<u8>,
    pub model_a: Vec<u8>,
    pub model_b: Vec<u8>,
    pub env: Option<Vec<u8>>,
    pub link: Slot,
}
