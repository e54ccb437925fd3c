//! `ota-bench install`: the robot client's `ota-client install` (verify, decode, write the standby slot, fsync,
//! arm the bootloader) from a local bundle file and from a URL on 127.0.0.1, against plain `zstd -d`, in one
//! interleaved run.
//!
//! The robot is simulated with files: two 1 GiB slot files (allocated once, slot B the target), the `file`
//! bootloader backend, a fake kernel command line saying `ota.slot=A`. The client refuses a version that is
//! already installed, so its data directory and boot state file are removed before every run: every run is a
//! first install of 1.0.0 into slot B. Slot B is written in place (its blocks stay allocated, like a partition)
//! and its page cache is dropped before every install, so each starts like a robot's (the standby slot is not
//! cached) whatever the previous run left; one untimed install before the rounds checks the setup and writes the
//! whole slot once.
//!
//! Baselines:
//! * `zstd -d -c PAYLOAD > /dev/null` (the bundle's own payload, cut out byte for byte): the decode alone;
//! * informational: `zstd -d PAYLOAD -o FILE` + fsync, decode plus writing the image durably, no hashing.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fallocate, FallocateFlags};
use ota_bundle_format::UnverifiedBundle;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bundle::{extract_raw_payload, size_of, warm_page_cache};
use crate::harness::{
    find_program, given_program, remove_path, require_tools, run_interleaved, tool_binary, Case,
    GNU_TIME,
};
use crate::report::{table, Row, RowSpec, Target};
use crate::serve::StaticServer;

/// An install may take at most this many times as long as `zstd -d` alone.
const INSTALL_MAX_RATIO: f64 = 1.2;
/// The client's peak RSS limit, whatever the image size (the robot's memory budget for updates).
const INSTALL_MAX_RSS_MIB: f64 = 32.0;
/// Size of each slot file.
const SLOT_BYTES: u64 = 1 << 30;
/// Fixed creation time, so bundles of the same image are identical from run to run.
const SOURCE_DATE_EPOCH: &str = "1704067200";
/// What the bench bundle says about itself; the client's config must match.
const COMPATIBLE: &str = "ota-bench";
const VERSION: &str = "1.0.0";
const SLOT_CLASS: &str = "rootfs";
/// The name the bundle is served under.
const URL_NAME: &str = "bundle.otab";

/// Arguments of `ota-bench install`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The uncompressed image (e.g. from tests/bench/make-image.sh); at most 1 GiB (the slot size).
    #[arg(long)]
    image: PathBuf,
    /// zstd level of the bundle.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Measured rounds; each round runs every step once, in rotating order. Medians are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Write the full results (every run) as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// The ota-client binary; default: the one next to this binary (same cargo profile), else PATH.
    #[arg(long, value_name = "PATH")]
    ota_client: Option<PathBuf>,
    /// A second ota-client binary (e.g. a build from before a change): its file install runs in the same rounds
    /// and is reported as `install-file@before`.
    #[arg(long, value_name = "PATH")]
    ota_client_before: Option<PathBuf>,
    /// The ota-bundle binary that makes the bundle when no valid cached one exists.
    #[arg(long, value_name = "PATH")]
    ota_bundle: Option<PathBuf>,
    /// The zstd binary.
    #[arg(long, value_name = "PATH", default_value = "zstd")]
    zstd: String,
    /// Where the bundle and its key are cached (`bundle-level<N>.otab`, `bench-key.key/.pub`); reused while it
    /// verifies and holds this image; default: the image's directory.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Directory for the slots, the client's state and the baseline output (needs ~2.3x the slot size free);
    /// default: a temporary directory next to the image, removed at the end.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Serialize)]
struct Sizes {
    image_bytes: u64,
    slot_bytes: u64,
    bundle_bytes: u64,
    payload_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    image: &'a Path,
    bundle: &'a Path,
    level: i32,
    runs: u32,
    sizes: Sizes,
    rows: &'a [Row],
    pass: bool,
}

/// SHA-256 of the first `len` bytes of `path`, as lowercase hex.
pub(crate) fn sha256_prefix(path: &Path, len: u64) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = file.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != len {
        bail!("{} has {total} bytes, expected {len}", path.display());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `bundle` verifies with `public` and holds exactly this image (same size and SHA-256) for our slot
/// class, compatible string and version. Any error means "not valid"; it is printed.
fn cached_bundle_is_valid(
    ota_bundle: &Path,
    bundle: &Path,
    public: &Path,
    image_bytes: u64,
    image_sha: &str,
) -> bool {
    let check = || -> Result<()> {
        let status = Command::new(ota_bundle)
            .arg("verify")
            .arg("--trust")
            .arg(public)
            .arg(bundle)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("ota-bundle verify failed ({status})");
        }
        let head = UnverifiedBundle::read(BufReader::new(File::open(bundle)?))?;
        let manifest = head.manifest_unverified()?;
        let [image] = manifest.images.as_slice() else {
            bail!("{} images, expected 1", manifest.images.len());
        };
        if manifest.compatible != COMPATIBLE
            || manifest.version.to_string() != VERSION
            || image.slot_class != SLOT_CLASS
        {
            bail!("made for another setup");
        }
        if image.size != image_bytes || image.sha256 != image_sha {
            bail!("made from another image");
        }
        Ok(())
    };
    match check() {
        Ok(()) => true,
        Err(e) => {
            if bundle.exists() {
                eprintln!("  cached {} not reusable: {e:#}", bundle.display());
            }
            false
        }
    }
}

/// Returns a valid level-`level` bundle of `image` in `cache`, and its public key: the cached one, or a new one
/// (new key pair if none, `ota-bundle create`, renamed into place when complete).
fn cached_bundle(
    ota_bundle: &Path,
    cache: &Path,
    image: &Path,
    image_bytes: u64,
    level: i32,
) -> Result<(PathBuf, PathBuf)> {
    let key = cache.join("bench-key");
    let secret = key.with_extension("key");
    let public = key.with_extension("pub");
    let bundle = cache.join(format!("bundle-level{level}.otab"));
    eprintln!("  hashing {} to check the cached bundle", image.display());
    let image_sha = sha256_prefix(image, image_bytes)?;
    if secret.is_file()
        && public.is_file()
        && cached_bundle_is_valid(ota_bundle, &bundle, &public, image_bytes, &image_sha)
    {
        eprintln!("  reusing {}", bundle.display());
        return Ok((bundle, public));
    }
    if !(secret.is_file() && public.is_file()) {
        remove_path(&secret)?;
        remove_path(&public)?;
        let status = Command::new(ota_bundle)
            .arg("keygen")
            .arg(&key)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("ota-bundle keygen failed ({status})");
        }
    }
    eprintln!("  creating {} (level {level}, untimed)", bundle.display());
    let partial = cache.join(format!(".bundle-level{level}.otab.partial"));
    let status = Command::new(ota_bundle)
        .args(["create", "--version", VERSION, "--compatible", COMPATIBLE])
        .arg("--image")
        .arg(format!("{SLOT_CLASS}={}", image.display()))
        .arg("--key")
        .arg(&secret)
        .args(["--level", &level.to_string(), "--force", "-o"])
        .arg(&partial)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("ota-bundle create failed ({status})");
    }
    fs::rename(&partial, &bundle)
        .with_context(|| format!("cannot rename into {}", bundle.display()))?;
    if !cached_bundle_is_valid(ota_bundle, &bundle, &public, image_bytes, &image_sha) {
        bail!("the new bundle {} does not check out", bundle.display());
    }
    Ok((bundle, public))
}

/// Creates a slot file of `bytes` with all its blocks allocated (a partition has no holes).
fn allocate_slot(path: &Path, bytes: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    fallocate(
        file.as_raw_fd(),
        FallocateFlags::empty(),
        0,
        i64::try_from(bytes)?,
    )
    .with_context(|| format!("cannot allocate {}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

/// A TOML basic string (JSON string escapes are valid TOML).
fn toml_str(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(serde_json::to_string(s)?)
}

/// Paths of the simulated robot.
struct Robot {
    config: PathBuf,
    data_dir: PathBuf,
    state_file: PathBuf,
    slot_b: PathBuf,
}

/// Writes the slot files (`slot_bytes` each), the fake command line and the client's config into `work`.
fn make_robot(work: &Path, trust: &Path, slot_bytes: u64) -> Result<Robot> {
    let robot = Robot {
        config: work.join("client.toml"),
        data_dir: work.join("data"),
        state_file: work.join("boot-state"),
        slot_b: work.join("slot-b.img"),
    };
    let slot_a = work.join("slot-a.img");
    let cmdline = work.join("cmdline");
    allocate_slot(&slot_a, slot_bytes)?;
    allocate_slot(&robot.slot_b, slot_bytes)?;
    fs::write(
        &cmdline,
        "BOOT_IMAGE=/vmlinuz root=/dev/vda2 ro quiet ota.slot=A\n",
    )?;
    let mut toml = String::new();
    writeln!(toml, "compatible = {}", serde_json::to_string(COMPATIBLE)?)?;
    writeln!(toml, "trust_root = {}", toml_str(trust)?)?;
    writeln!(toml, "data_dir = {}", toml_str(&robot.data_dir)?)?;
    writeln!(toml, "\n[slots.{SLOT_CLASS}]")?;
    writeln!(toml, "a = {}", toml_str(&slot_a)?)?;
    writeln!(toml, "b = {}", toml_str(&robot.slot_b)?)?;
    writeln!(toml, "\n[bootloader]\nbackend = \"file\"")?;
    writeln!(toml, "state_file = {}", toml_str(&robot.state_file)?)?;
    writeln!(toml, "\n[booted_slot]\nsource = \"cmdline\"")?;
    writeln!(toml, "path = {}", toml_str(&cmdline)?)?;
    fs::write(&robot.config, toml)?;
    Ok(robot)
}

pub fn run(args: Args) -> Result<bool> {
    require_tools(&[(GNU_TIME, "time"), (&args.zstd, "zstd")])?;
    let ota_client = tool_binary(
        args.ota_client.as_deref(),
        "ota-client",
        "cargo build --release -p ota-client",
    )?;
    let before = args
        .ota_client_before
        .as_deref()
        .map(given_program)
        .transpose()?;
    let ota_bundle = tool_binary(
        args.ota_bundle.as_deref(),
        "ota-bundle",
        "cargo build --release -p ota-bundle-tool",
    )?;
    let zstd = find_program(&args.zstd).context("zstd not found")?;
    let image = args
        .image
        .canonicalize()
        .with_context(|| format!("image {} not found", args.image.display()))?;
    let image_bytes = size_of(&image)?;
    if image_bytes > SLOT_BYTES {
        bail!(
            "the image ({image_bytes} bytes) does not fit a {SLOT_BYTES}-byte slot: use an image of at most 1 GiB"
        );
    }
    let image_dir = image.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cache = match &args.cache_dir {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            dir.canonicalize()?
        }
        None => image_dir.clone(),
    };

    let temp_dir;
    let work: PathBuf = match &args.work_dir {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            dir.canonicalize()?
        }
        None => {
            temp_dir = tempfile::Builder::new()
                .prefix(".ota-bench-install-")
                .tempdir_in(&image_dir)
                .with_context(|| {
                    format!("cannot create a work directory in {}", image_dir.display())
                })?;
            temp_dir.path().to_path_buf()
        }
    };

    eprintln!(
        "ota-bench install: {} ({:.0} MiB), level {}, {} run(s), work dir {}",
        image.display(),
        image_bytes as f64 / 1048576.0,
        args.level,
        args.runs,
        work.display()
    );
    eprintln!("  ota-client: {}", ota_client.display());
    if let Some(b) = &before {
        eprintln!("  ota-client before: {}", b.display());
    }
    let (bundle, public) = cached_bundle(&ota_bundle, &cache, &image, image_bytes, args.level)?;
    let bundle_bytes = size_of(&bundle)?;
    let payload = work.join("payload.zst");
    let decoded = work.join("decoded.img");
    let payload_bytes = extract_raw_payload(&bundle, &payload)?;
    let robot = make_robot(&work, &public, SLOT_BYTES)?;
    let server = StaticServer::start(&bundle, URL_NAME)?;
    let url = server.url(URL_NAME);
    eprintln!("  serving {} at {url}", bundle.display());
    warm_page_cache(&bundle)?;
    warm_page_cache(&payload)?;

    let install_case = |name: &str, label: &str, program: &Path, source: &str| {
        Case::new(name, label, program)
            .args(["--config".as_ref(), robot.config.as_os_str()])
            .args(["install", source])
            .remove_before(&robot.data_dir)
            .remove_before(&robot.state_file)
            .uncache_before(&robot.slot_b)
    };
    let bundle_arg = bundle
        .to_str()
        .context("the bundle path is not UTF-8")?
        .to_string();
    let mut cases = vec![
        install_case(
            "install-file",
            "ota-client install FILE",
            &ota_client,
            &bundle_arg,
        ),
        install_case(
            "install-http",
            "ota-client install http://127.0.0.1",
            &ota_client,
            &url,
        ),
        Case::new("zstd-d", "zstd -d -c payload > /dev/null", &zstd)
            .args(["-d", "-q", "-c"])
            .args([payload.as_os_str()]),
        Case::new("zstd-d-file", "zstd -d payload -o file+fsync", &zstd)
            .args(["-d", "-q", "-f"])
            .args([payload.as_os_str(), "-o".as_ref(), decoded.as_os_str()])
            .remove_before(&decoded)
            .fsync_after(&decoded),
    ];
    if let Some(b) = &before {
        cases.push(install_case(
            "install-file@before",
            "(before) install FILE",
            b,
            &bundle_arg,
        ));
    }

    // Untimed: checks the whole setup once (fails fast with the client's message) and writes all of slot B.
    eprintln!("warm-up install (untimed)");
    cases[0].run_once(&work)?;
    cases[0].samples.clear();

    eprintln!("install vs zstd -d, interleaved:");
    run_interleaved(&mut cases, args.runs as usize, &work)?;
    server.stop()?;

    // The last install left slot B holding the image and a trial armed in the boot state.
    let head = UnverifiedBundle::read(BufReader::new(File::open(&bundle)?))?;
    let want = head.manifest_unverified()?.images[0].sha256.clone();
    if sha256_prefix(&robot.slot_b, image_bytes)? != want {
        bail!("slot B does not hold the image after the installs");
    }
    let boot_state = fs::read_to_string(&robot.state_file).with_context(|| {
        format!(
            "no boot state {} after the installs",
            robot.state_file.display()
        )
    })?;
    if !boot_state.contains('B') {
        bail!("the boot state does not name slot B:\n{boot_state}");
    }

    let row = |name: &str, baseline: Option<&str>, targets: Vec<Target>| {
        RowSpec::named(&cases, name, baseline, targets)
    };
    let install_targets = || Target::ratio_and_rss(INSTALL_MAX_RATIO, INSTALL_MAX_RSS_MIB);
    let mut specs = vec![
        row("install-file", Some("zstd-d"), install_targets()),
        row("install-http", Some("zstd-d"), install_targets()),
    ];
    if before.is_some() {
        specs.push(row(
            "install-file@before",
            Some("zstd-d"),
            install_targets(),
        ));
    }
    specs.push(row("zstd-d", None, vec![]));
    specs.push(row("zstd-d-file", Some("zstd-d"), vec![]));
    let rows: Vec<Row> = specs.iter().map(|s| Row::new(s, image_bytes)).collect();
    let pass = rows.iter().all(Row::pass);
    let file_row = rows
        .iter()
        .find(|r| r.name == "zstd-d-file")
        .expect("row exists");

    println!();
    println!(
        "ota-bench install: {} ({:.1} MB), bundle level {}, {} run(s), medians; MB/s = image bytes / wall",
        image.display(),
        image_bytes as f64 / 1e6,
        args.level,
        args.runs
    );
    print!("{}", table(&rows));
    println!(
        "bundle {} ({bundle_bytes} bytes, payload {payload_bytes}); slots {SLOT_BYTES} bytes each",
        bundle.display()
    );
    let vs_file: Vec<String> = rows
        .iter()
        .filter(|r| r.name.starts_with("install"))
        .map(|r| {
            format!(
                "{} {:.3}x",
                r.name,
                r.wall_median_s / file_row.wall_median_s
            )
        })
        .collect();
    println!(
        "vs zstd -d -o file+fsync (informational): {}",
        vs_file.join(", ")
    );
    println!("overall: {}", if pass { "PASS" } else { "FAIL" });

    if let Some(path) = &args.json {
        let report = Report {
            scenario: "install",
            image: &image,
            bundle: &bundle,
            level: args.level,
            runs: args.runs,
            sizes: Sizes {
                image_bytes,
                slot_bytes: SLOT_BYTES,
                bundle_bytes,
                payload_bytes,
            },
            rows: &rows,
            pass,
        };
        let text = serde_json::to_string_pretty(&report)?;
        fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(pass || !args.strict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_toml_with_odd_paths() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("a \"quoted\" dir\\x");
        fs::create_dir_all(&work).unwrap();
        let trust = work.join("k.pub");
        let robot = make_robot(&work, &trust, 8192).unwrap();
        let text = fs::read_to_string(&robot.config).unwrap();
        let value: toml::Table = text.parse().unwrap();
        assert_eq!(value["trust_root"].as_str(), trust.to_str());
        assert_eq!(value["compatible"].as_str(), Some(COMPATIBLE));
        let slots = value["slots"][SLOT_CLASS].as_table().unwrap();
        assert_eq!(slots["b"].as_str(), robot.slot_b.to_str());
        assert_eq!(value["bootloader"]["backend"].as_str(), Some("file"));
        assert_eq!(value["booted_slot"]["source"].as_str(), Some("cmdline"));
        assert_eq!(size_of(&robot.slot_b).unwrap(), 8192);
        let blocks = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&robot.slot_b).unwrap());
        assert!(blocks * 512 >= 8192, "slot not allocated: {blocks} blocks");
        let cmdline = fs::read_to_string(work.join("cmdline")).unwrap();
        assert!(cmdline.contains("ota.slot=A"));
    }

    #[test]
    fn hashes_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"abcdef").unwrap();
        assert_eq!(
            sha256_prefix(&p, 3).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_prefix(&p, 10).is_err());
        assert!(sha256_prefix(&dir.path().join("none"), 1).is_err());
    }
}
