//! `ota-bench bundle`: `ota-bundle create`, `verify` and `extract` against plain zstd on the same image, in one
//! interleaved run.
//!
//! Baselines, chosen so that each does the same I/O as the step it is compared with:
//! * create vs `zstd -T0 -LEVEL -f IMAGE -o FILE` + fsync of FILE: output is a file in the same work directory as
//!   the bundle (same filesystem), made durable like `ota-bundle create` makes the bundle.
//! * verify and extract vs `zstd -d -c PAYLOAD > /dev/null`, where PAYLOAD is the bundle's own zstd payload cut
//!   out byte for byte, so both decode exactly the same frames.
//! * informational: `zstd -d PAYLOAD -o FILE` + fsync, the cost of writing the image durably without hashing.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ota_bundle_format::UnverifiedBundle;
use serde::Serialize;

use crate::harness::{
    find_program, given_program, require_tools, run_interleaved, tool_binary, Case, GNU_TIME,
};
use crate::report::{table, Row, RowSpec, Target};

/// Create may take at most this many times as long as zstd alone.
const CREATE_MAX_RATIO: f64 = 1.15;
/// Extract may take at most this many times as long as zstd -d alone.
const EXTRACT_MAX_RATIO: f64 = 1.15;
/// Extract's peak RSS limit (the robot's memory budget for the installer).
const EXTRACT_MAX_RSS_MIB: f64 = 64.0;
/// Fixed creation time, so bundles of the same image are identical from run to run.
const SOURCE_DATE_EPOCH: &str = "1704067200";

/// Arguments of `ota-bench bundle`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The uncompressed image (e.g. from tests/bench/make-image.sh).
    #[arg(long)]
    image: PathBuf,
    /// zstd level for both ota-bundle and the zstd baseline.
    #[arg(long, default_value_t = ota_bundle_format::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Measured rounds; each round runs every step once, in rotating order. Medians are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Compression threads for both (`ota-bundle create --threads N`, `zstd -TN`); default: all cores (-T0).
    #[arg(long)]
    threads: Option<u32>,
    /// Write the full results (every run) as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// The ota-bundle binary; default: the one next to this binary (same cargo profile), else PATH.
    #[arg(long, value_name = "PATH")]
    ota_bundle: Option<PathBuf>,
    /// The zstd binary.
    #[arg(long, value_name = "PATH", default_value = "zstd")]
    zstd: String,
    /// A second ota-bundle binary (e.g. a build from before a change): its create, verify and extract run in the
    /// same interleaved rounds and are reported as `create@before` etc., so before/after compare in one run.
    #[arg(long, value_name = "PATH")]
    ota_bundle_before: Option<PathBuf>,
    /// Directory for bundles and outputs (needs ~2.6x the image size free); default: a temporary directory next
    /// to the image, removed at the end.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Only the decode steps (verify, extract, zstd -d): create one bundle untimed first.
    #[arg(long)]
    skip_create: bool,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    strict: bool,
}

/// Sizes reported beside the timings.
#[derive(Debug, Serialize)]
struct Sizes {
    image_bytes: u64,
    bundle_bytes: u64,
    payload_bytes: u64,
    zstd_baseline_bytes: Option<u64>,
    bundle_percent_of_image: f64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    image: &'a Path,
    level: i32,
    runs: u32,
    threads: Option<u32>,
    sizes: Sizes,
    rows: &'a [Row],
    pass: bool,
}

/// Reads `path` once so every step starts with the image in the page cache (24 GiB machine: it stays there).
pub(crate) fn warm_page_cache(path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    io::copy(&mut file, &mut io::sink())
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(())
}

/// Cuts the raw compressed payload of the bundle's only image out into `out`.
pub(crate) fn extract_raw_payload(bundle: &Path, out: &Path) -> Result<u64> {
    let file = File::open(bundle).with_context(|| format!("cannot open {}", bundle.display()))?;
    let head = UnverifiedBundle::read(BufReader::with_capacity(1 << 20, file))?;
    let mut written = 0;
    let mut count = 0;
    head.for_each_raw_payload(|_, payload| {
        count += 1;
        let mut dest = File::create(out)
            .map_err(|e| ota_bundle_format::BundleError::io("creating the payload file", e))?;
        written = io::copy(payload, &mut dest)
            .map_err(|e| ota_bundle_format::BundleError::io("copying the payload", e))?;
        Ok(())
    })?;
    if count != 1 {
        bail!("expected one image in {}, found {count}", bundle.display());
    }
    Ok(written)
}

pub(crate) fn size_of(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len())
}

pub fn run(args: Args) -> Result<bool> {
    require_tools(&[(GNU_TIME, "time"), (&args.zstd, "zstd")])?;
    let ota_bundle = tool_binary(
        args.ota_bundle.as_deref(),
        "ota-bundle",
        "cargo build --release -p ota-bundle-tool",
    )?;
    let before = args
        .ota_bundle_before
        .as_deref()
        .map(given_program)
        .transpose()?;
    let zstd = find_program(&args.zstd).context("zstd not found")?;
    let image = args
        .image
        .canonicalize()
        .with_context(|| format!("image {} not found", args.image.display()))?;
    let image_bytes = size_of(&image)?;
    let image_name = image
        .file_name()
        .and_then(|n| n.to_str())
        .context("the image path has no usable file name")?
        .to_string();

    let temp_dir;
    let work: PathBuf = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.canonicalize()?
        }
        None => {
            let parent = image.parent().unwrap_or(Path::new("."));
            temp_dir = tempfile::Builder::new()
                .prefix(".ota-bench-")
                .tempdir_in(parent)
                .with_context(|| {
                    format!("cannot create a work directory in {}", parent.display())
                })?;
            temp_dir.path().to_path_buf()
        }
    };
    let key = work.join("bench-key");
    let bundle = work.join("bundle.otab");
    let zstd_out = work.join("baseline.zst");
    let payload = work.join("payload.zst");
    let extract_dir = work.join("extract");
    let decoded = work.join("decoded.img");
    let bundle_before = work.join("bundle-before.otab");
    let extract_dir_before = work.join("extract-before");

    eprintln!(
        "ota-bench bundle: {} ({:.0} MiB), level {}, {} run(s), work dir {}",
        image.display(),
        image_bytes as f64 / 1048576.0,
        args.level,
        args.runs,
        work.display()
    );
    eprintln!("  ota-bundle: {}", ota_bundle.display());
    if let Some(b) = &before {
        eprintln!("  ota-bundle before: {}", b.display());
    }
    crate::harness::remove_path(&key.with_extension("key"))?;
    crate::harness::remove_path(&key.with_extension("pub"))?;
    let status = std::process::Command::new(&ota_bundle)
        .arg("keygen")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("ota-bundle keygen failed ({status})");
    }
    let secret = key.with_extension("key");
    let public = key.with_extension("pub");
    warm_page_cache(&image)?;

    let level = format!("-{}", args.level);
    let threads = args.threads.map_or("-T0".to_string(), |n| format!("-T{n}"));
    let create_args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "create".into(),
            "--version".into(),
            "1.0.0".into(),
            "--compatible".into(),
            "ota-bench".into(),
            "--image".into(),
            format!("rootfs={}", image.display()),
            "--key".into(),
            secret.display().to_string(),
            "--level".into(),
            args.level.to_string(),
            "--force".into(),
            "-o".into(),
            out.display().to_string(),
        ];
        if let Some(n) = args.threads {
            a.extend(["--threads".into(), n.to_string()]);
        }
        a
    };
    let create_case = |name: &str, label: String, program: &Path, out: &Path| {
        Case::new(name, label, program)
            .args(create_args(out))
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
            .remove_before(out)
    };
    let verify_case = |name: &str, label: &str, program: &Path| {
        Case::new(name, label, program)
            .args(["verify".as_ref(), "--trust".as_ref(), public.as_os_str()])
            .args([bundle.as_os_str()])
    };
    let extract_case = |name: &str, label: &str, program: &Path, dir: &Path| {
        Case::new(name, label, program)
            .args(["extract", "--force", "--trust"])
            .args([public.as_os_str(), bundle.as_os_str(), dir.as_os_str()])
            .remove_before(dir.join(&image_name))
    };

    let mut create_cases = vec![
        create_case(
            "create",
            format!("ota-bundle create {level}"),
            &ota_bundle,
            &bundle,
        ),
        Case::new(
            "zstd",
            format!("zstd {threads} {level} -> file+fsync"),
            &zstd,
        )
        .args([threads.as_str(), level.as_str(), "-q", "-f"])
        .args([image.as_os_str()])
        .args(["-o".as_ref(), zstd_out.as_os_str()])
        .remove_before(&zstd_out)
        .fsync_after(&zstd_out),
    ];
    if let Some(b) = &before {
        create_cases.push(create_case(
            "create@before",
            format!("(before) create {level}"),
            b,
            &bundle_before,
        ));
    }
    if args.skip_create {
        eprintln!("creating the bundle (untimed)");
        create_cases[0].run_once(&work)?;
        create_cases[0].samples.clear();
    } else {
        eprintln!("create vs zstd, interleaved:");
        run_interleaved(&mut create_cases, args.runs as usize, &work)?;
    }

    let payload_bytes = extract_raw_payload(&bundle, &payload)?;
    let mut decode_cases = vec![
        verify_case("verify", "ota-bundle verify", &ota_bundle),
        extract_case("extract", "ota-bundle extract", &ota_bundle, &extract_dir),
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
        decode_cases.push(verify_case("verify@before", "(before) verify", b));
        decode_cases.push(extract_case(
            "extract@before",
            "(before) extract",
            b,
            &extract_dir_before,
        ));
    }
    eprintln!("verify / extract vs zstd -d, interleaved:");
    run_interleaved(&mut decode_cases, args.runs as usize, &work)?;
    let extracted = size_of(&extract_dir.join(&image_name))?;
    if extracted != image_bytes {
        bail!("extract wrote {extracted} bytes, the image has {image_bytes}");
    }

    let cases: Vec<Case> = create_cases.into_iter().chain(decode_cases).collect();
    let row = |name: &str, baseline: Option<&str>, targets: Vec<Target>| {
        RowSpec::named(&cases, name, baseline, targets)
    };
    let create_targets = || {
        vec![Target::MaxRatio {
            ratio: CREATE_MAX_RATIO,
        }]
    };
    let extract_targets = || Target::ratio_and_rss(EXTRACT_MAX_RATIO, EXTRACT_MAX_RSS_MIB);
    let mut specs = Vec::new();
    if !args.skip_create {
        specs.push(row("create", Some("zstd"), create_targets()));
        if before.is_some() {
            specs.push(row("create@before", Some("zstd"), create_targets()));
        }
        specs.push(row("zstd", None, vec![]));
    }
    specs.push(row("verify", Some("zstd-d"), vec![]));
    if before.is_some() {
        specs.push(row("verify@before", Some("zstd-d"), vec![]));
    }
    specs.push(row("extract", Some("zstd-d"), extract_targets()));
    if before.is_some() {
        specs.push(row("extract@before", Some("zstd-d"), extract_targets()));
    }
    specs.push(row("zstd-d", None, vec![]));
    specs.push(row("zstd-d-file", Some("zstd-d"), vec![]));
    let rows: Vec<Row> = specs.iter().map(|s| Row::new(s, image_bytes)).collect();
    let pass = rows.iter().all(Row::pass);

    let bundle_bytes = size_of(&bundle)?;
    let zstd_baseline_bytes = if args.skip_create {
        None
    } else {
        Some(size_of(&zstd_out)?)
    };
    let sizes = Sizes {
        image_bytes,
        bundle_bytes,
        payload_bytes,
        zstd_baseline_bytes,
        bundle_percent_of_image: 100.0 * bundle_bytes as f64 / image_bytes as f64,
    };

    println!();
    println!(
        "ota-bench bundle: {} ({:.1} MB), zstd level {}, {} run(s), medians; MB/s = image bytes / wall",
        image.display(),
        image_bytes as f64 / 1e6,
        args.level,
        args.runs
    );
    print!("{}", table(&rows));
    println!(
        "bundle {} bytes = {:.2} % of the image ({} bytes); payload {} bytes; overhead {} bytes{}",
        bundle_bytes,
        sizes.bundle_percent_of_image,
        image_bytes,
        payload_bytes,
        bundle_bytes - payload_bytes,
        zstd_baseline_bytes.map_or(String::new(), |z| format!(
            "; zstd {level} alone {z} bytes = {:.2} %",
            100.0 * z as f64 / image_bytes as f64
        ))
    );
    println!("overall: {}", if pass { "PASS" } else { "FAIL" });

    if let Some(path) = &args.json {
        let report = Report {
            scenario: "bundle",
            image: &image,
            level: args.level,
            runs: args.runs,
            threads: args.threads,
            sizes,
            rows: &rows,
            pass,
        };
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(pass || !args.strict)
}
