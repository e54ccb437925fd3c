//! `ota-bench delta`: issue 11's benchmark on a v1 -> v2 image pair, baselines in the same run.
//!
//! One invocation builds every bundle it compares and measures, interleaved over `--runs` rounds:
//!
//! * create: v2 chunked with `--delta-from` v1 (what a release engineer ships), v2 chunked without a base, v2 with
//!   `--payload full` (today's bundle), against `zstd -T0 -LEVEL` of v2 into a file + fsync;
//! * installs through a real `ota-server serve` (the release binary) on 127.0.0.1, behind the test kit's proxy,
//!   which counts the bytes the server sent (the robot's link) and adds the admin token a robot's daemon would
//!   replace with its device token:
//!   - `install-delta`: a robot on v1 (v1 installed by the client itself and committed, so its state is real)
//!     installs the delta bundle: wire bytes, time, peak RSS, and its anonymous and file-backed parts;
//!   - `install-full`: the same bundle on a robot with nothing to reuse (no state, the active slot noise);
//!   - `install-legacy`: the `--payload full` bundle on that robot (informational);
//!   - `zstd-d`: `zstd -d` of v2 at the same level (single-threaded, the full-install baseline).
//!
//! The targets are issue 11's; casync's and zchunk's figures on the same pair (measured once on this machine,
//! see the README) are printed beside ours.

mod setup;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ota_testkit::proxy::Proxy;
use serde::Serialize;

use crate::bundle::{size_of, warm_page_cache};
use crate::harness::{
    drop_page_cache, find_program, median, remove_path, require_tools, run_interleaved,
    tool_binary, Case, GNU_TIME,
};
use crate::install::sha256_prefix;
use crate::report::{table, Row, RowSpec};
use setup::{
    copy_dir, fill_noise, ranged_bytes, same_name, setup, Robot, Server, Tools, ADMIN_TOKEN,
    COMPATIBLE, SLOT_CLASS,
};

/// Peers' bytes on the wire for a robot on v1 installing v2, same pair, measured on this machine (MB = 10^6).
const CASYNC_MB: f64 = 30.4;
/// zchunk's, ditto.
const ZCHUNK_MB: f64 = 29.2;
/// Issue 11's targets.
const MAX_WIRE_MB: f64 = 12.0;
const MAX_DELTA_VS_FULL: f64 = 1.5;
const MAX_ANON_MIB: f64 = 64.0;
const MAX_CREATE_VS_ZSTD: f64 = 1.3;
const MAX_FULL_VS_ZSTD_D: f64 = 1.1;
const AIM_FULL_VS_ZSTD_D: f64 = 0.7;
const MAX_SIZE_VS_FULL: f64 = 1.10;

const SOURCE_DATE_EPOCH: &str = "1704067200";

/// Arguments of `ota-bench delta`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The old release's image (the robot runs it).
    #[arg(long)]
    v1: PathBuf,
    /// The new release's image, at most as large as v1 (both are the slot size).
    #[arg(long)]
    v2: PathBuf,
    /// zstd level of every bundle and of the zstd baselines (the table in the README is LEVEL=19).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Measured rounds (each runs every step once, rotating); medians are reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Write the full results as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// The ota-bundle binary; default: next to this binary, else PATH.
    #[arg(long, value_name = "PATH")]
    ota_bundle: Option<PathBuf>,
    /// The ota-client binary; default: next to this binary, else PATH.
    #[arg(long, value_name = "PATH")]
    ota_client: Option<PathBuf>,
    /// The ota-server binary; default: next to this binary, else PATH.
    #[arg(long, value_name = "PATH")]
    ota_server: Option<PathBuf>,
    /// The zstd binary.
    #[arg(long, value_name = "PATH", default_value = "zstd")]
    zstd: String,
    /// Work directory (needs ~5x the image size free); default: a temporary directory next to v2, removed at the end.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    strict: bool,
}

/// One line of the table.
#[derive(Debug, Serialize)]
struct Verdict {
    measure: String,
    value: String,
    target: String,
    beside: String,
    pass: bool,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'static str,
    v1: &'a Path,
    v2: &'a Path,
    level: i32,
    runs: u32,
    sizes: &'a Sizes,
    wire_bytes: &'a [(String, Vec<u64>)],
    ranged_bytes: &'a [(String, Vec<u64>)],
    memory: &'a [(String, Vec<crate::harness::MemoryPeak>)],
    rows: &'a [Row],
    verdicts: &'a [Verdict],
    pass: bool,
}

#[derive(Debug, Serialize)]
struct Sizes {
    v1_image: u64,
    v2_image: u64,
    v2_delta_bundle: u64,
    v2_chunked_bundle: u64,
    v2_full_bundle: u64,
    v2_zst: u64,
}

/// How every bundle of a run is made: the tool, the signing key, the level.
struct Creator<'a> {
    ota_bundle: &'a Path,
    key: &'a Path,
    level: i32,
}

/// `ota-bundle create` of `image` as version `version` into `out` (more arguments can follow).
fn create_case(
    c: &Creator,
    name: &str,
    label: &str,
    image: &Path,
    version: &str,
    out: &Path,
) -> Case {
    let (key, level) = (c.key, c.level);
    Case::new(name, label, c.ota_bundle)
        .args([
            "create",
            "--version",
            version,
            "--compatible",
            COMPATIBLE,
            "--force",
        ])
        .args([
            "--image".to_string(),
            format!("{SLOT_CLASS}={}", image.display()),
        ])
        .args(["--key".as_ref(), key.as_os_str()])
        .args(["--level", &level.to_string(), "-o"])
        .args([out.as_os_str()])
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .remove_before(out)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn verdict(measure: &str, value: String, target: String, beside: String, pass: bool) -> Verdict {
    Verdict {
        measure: measure.into(),
        value,
        target,
        beside,
        pass,
    }
}

pub fn run(args: Args) -> Result<bool> {
    require_tools(&[(GNU_TIME, "time"), (&args.zstd, "zstd")])?;
    let build = "cargo build --release -p ota-bundle-tool -p ota-client -p ota-server";
    let t = Tools {
        ota_bundle: tool_binary(args.ota_bundle.as_deref(), "ota-bundle", build)?,
        ota_client: tool_binary(args.ota_client.as_deref(), "ota-client", build)?,
        ota_server: tool_binary(args.ota_server.as_deref(), "ota-server", build)?,
        zstd: find_program(&args.zstd).context("zstd not found")?,
    };
    let v1 = args
        .v1
        .canonicalize()
        .with_context(|| format!("v1 image {} not found", args.v1.display()))?;
    let v2 = args
        .v2
        .canonicalize()
        .with_context(|| format!("v2 image {} not found", args.v2.display()))?;
    let (v1_bytes, v2_bytes) = (size_of(&v1)?, size_of(&v2)?);
    let slot_bytes = v1_bytes.max(v2_bytes);
    let image_dir = v2.parent().unwrap_or(Path::new(".")).to_path_buf();
    let temp_dir;
    let work: PathBuf = match &args.work_dir {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            dir.canonicalize()?
        }
        None => {
            temp_dir = tempfile::Builder::new()
                .prefix(".ota-bench-delta-")
                .tempdir_in(&image_dir)?;
            temp_dir.path().to_path_buf()
        }
    };
    // A delta bundle pairs its image with the base's image of the same name, as a release pipeline that always
    // names its image rootfs.ext4 does: both images are given under that name.
    let (v1, v2) = (same_name(&work, "v1", &v1)?, same_name(&work, "v2", &v2)?);
    let level = args.level;
    eprintln!(
        "ota-bench delta: {} -> {} ({:.0} MiB), level {level}, {} run(s), work dir {}",
        args.v1.display(),
        args.v2.display(),
        v2_bytes as f64 / 1048576.0,
        args.runs,
        work.display()
    );

    // --- setup: key, v1 chunked (untimed) ---
    let key = work.join("bench-key");
    // A work directory given again: a new key (keygen never overwrites one).
    remove_path(&key.with_extension("key"))?;
    remove_path(&key.with_extension("pub"))?;
    setup(
        Command::new(&t.ota_bundle).arg("keygen").arg(&key),
        "ota-bundle keygen",
    )?;
    let (secret, public) = (key.with_extension("key"), key.with_extension("pub"));
    let b = |name: &str| work.join(name);
    let creator = Creator {
        ota_bundle: &t.ota_bundle,
        key: &secret,
        level,
    };
    eprintln!("creating v1 chunked (untimed)");
    create_case(&creator, "v1", "", &v1, "1.0.0", &b("v1.otab")).run_once(&work)?;

    // --- create, interleaved ---
    let zst = b("v2.zst");
    let mut creates = vec![
        create_case(
            &creator,
            "create-delta",
            "ota-bundle create --delta-from v1",
            &v2,
            "2.0.0",
            &b("v2-delta.otab"),
        )
        .args(["--delta-from".as_ref(), b("v1.otab").as_os_str()]),
        create_case(
            &creator,
            "create-chunked",
            "ota-bundle create (chunked, no base)",
            &v2,
            "2.0.0",
            &b("v2-chunked.otab"),
        ),
        create_case(
            &creator,
            "create-full",
            "ota-bundle create --payload full",
            &v2,
            "2.0.0",
            &b("v2-full.otab"),
        )
        .args(["--payload", "full"]),
        Case::new("zstd", format!("zstd -T0 -{level} -> file+fsync"), &t.zstd)
            .args(["-q", "-f", "-T0", &format!("-{level}")])
            .args([v2.as_os_str(), "-o".as_ref(), zst.as_os_str()])
            .remove_before(&zst)
            .fsync_after(&zst),
    ];
    warm_page_cache(&v1)?;
    warm_page_cache(&v2)?;
    eprintln!("create vs zstd -T0, interleaved:");
    run_interleaved(&mut creates, args.runs as usize, &work)?;
    let sizes = Sizes {
        v1_image: v1_bytes,
        v2_image: v2_bytes,
        v2_delta_bundle: size_of(&b("v2-delta.otab"))?,
        v2_chunked_bundle: size_of(&b("v2-chunked.otab"))?,
        v2_full_bundle: size_of(&b("v2-full.otab"))?,
        v2_zst: size_of(&zst)?,
    };

    // --- server, proxy, robots ---
    let server = Server::start(&t, &b("server"), &public)?;
    let ids: Vec<String> = ["v1.otab", "v2-delta.otab", "v2-full.otab"]
        .iter()
        .map(|n| server.publish(&t, &b(n)))
        .collect::<Result<_>>()?;
    let addr = server.base.trim_start_matches("http://").parse()?;
    let proxy = Proxy::start(addr);
    proxy.add_header(Some(format!("Authorization: Bearer {ADMIN_TOKEN}")));
    let url = |id: &str| format!("{}/api/bundles/{id}/download", proxy.base);
    eprintln!(
        "ota-server at {} behind the counting proxy {}",
        server.base, proxy.base
    );

    // Robot on v1: the client installs v1 into B, the robot boots B, confirm commits it. Its data directory and
    // boot state are kept as they are now, and put back before every delta install.
    let on_v1 = Robot::create(&b("robot-v1"), &public, slot_bytes)?;
    eprintln!("robot on v1: install v1 and commit it (untimed)");
    setup(
        on_v1.client(&t).args(["install", &url(&ids[0])]),
        "ota-client install v1",
    )?;
    on_v1.boot("B")?;
    setup(on_v1.client(&t).arg("confirm"), "ota-client confirm on v1")?;
    let snapshot = b("robot-v1-snapshot");
    copy_dir(&on_v1.data_dir, &snapshot.join("data"))?;
    fs::copy(&on_v1.state_file, snapshot.join("boot-state"))?;

    // A robot with nothing to reuse: no state, its active slot A full of noise.
    let fresh = Robot::create(&b("robot-fresh"), &public, slot_bytes)?;
    fill_noise(&fresh.slots[0], slot_bytes)?;
    drop_page_cache(&fresh.slots[0])?;

    // `--chunked`: ranges from the first request, as the daemon asks for a bundle its offer says is chunked.
    let mut cases = vec![
        on_v1.install_case(
            &t,
            "install-delta",
            "robot on v1: install v2 (delta bundle)",
            &["--chunked", &url(&ids[1])],
            &on_v1.slots[0],
        ),
        fresh.install_case(
            &t,
            "install-full",
            "nothing to reuse: install v2 (same bundle)",
            &["--chunked", &url(&ids[1])],
            &fresh.slots[1],
        ),
        fresh.install_case(
            &t,
            "install-legacy",
            "nothing to reuse: install v2 (--payload full)",
            &[&url(&ids[2])],
            &fresh.slots[1],
        ),
        Case::new(
            "zstd-d",
            "zstd -d -c v2.zst > /dev/null (1 thread)",
            &t.zstd,
        )
        .args(["-d", "-q", "-c", "-T1"])
        .args([zst.as_os_str()]),
    ];
    warm_page_cache(&b("v2-delta.otab"))?;
    warm_page_cache(&zst)?;
    let mut wire: Vec<(String, Vec<u64>)> =
        cases.iter().map(|c| (c.name.clone(), Vec::new())).collect();
    let mut asked = wire.clone();
    eprintln!("installs vs zstd -d, interleaved:");
    let n = cases.len();
    for round in 0..args.runs as usize {
        for k in 0..n {
            let i = (round + k) % n;
            // Before each install (untimed): the robot back to its starting state.
            match cases[i].name.as_str() {
                "install-delta" => {
                    remove_path(&on_v1.data_dir)?;
                    copy_dir(&snapshot.join("data"), &on_v1.data_dir)?;
                    fs::copy(snapshot.join("boot-state"), &on_v1.state_file)?;
                }
                "install-full" | "install-legacy" => {
                    remove_path(&fresh.data_dir)?;
                    remove_path(&fresh.state_file)?;
                }
                _ => {}
            }
            let (before, seen_before) = (proxy.download_bytes(), proxy.seen().len());
            let s = cases[i].run_once(&work)?;
            let sent = proxy.download_bytes() - before;
            let ranged = ranged_bytes(&proxy.seen()[seen_before..]);
            wire[i].1.push(sent);
            asked[i].1.push(ranged);
            let mem = cases[i].memory.last().copied().unwrap_or_default();
            eprintln!(
                "  round {}/{} {:<15} {:>8.3} s wall {:>7.2} s cpu {:>7.1} MiB RSS ({:.1} anon, {:.1} file) {:>9.2} MB from the server ({:.2} MB asked for by ranges)",
                round + 1,
                args.runs,
                cases[i].name,
                s.wall_s,
                s.user_s + s.sys_s,
                s.max_rss_kib as f64 / 1024.0,
                mem.anon_kib as f64 / 1024.0,
                mem.file_kib as f64 / 1024.0,
                mb(sent),
                mb(ranged)
            );
        }
    }
    drop(proxy);
    drop(server);

    // The delta install left v2 in the robot's slot A, the full ones in the fresh robot's slot B.
    let want = sha256_prefix(&v2, v2_bytes)?;
    for (slot, who) in [
        (&on_v1.slots[0], "the robot on v1's slot A"),
        (&fresh.slots[1], "the fresh robot's slot B"),
    ] {
        if sha256_prefix(slot, v2_bytes)? != want {
            bail!("{who} does not hold v2 after the installs");
        }
    }

    // --- report ---
    let all: Vec<Case> = creates.into_iter().chain(cases).collect();
    let row = |name: &str, base: Option<&str>| RowSpec::named(&all, name, base, vec![]);
    let specs = [
        row("create-delta", Some("zstd")),
        row("create-chunked", Some("zstd")),
        row("create-full", Some("zstd")),
        row("zstd", None),
        row("install-delta", Some("install-full")),
        row("install-full", Some("zstd-d")),
        row("install-legacy", Some("zstd-d")),
        row("zstd-d", None),
    ];
    let rows: Vec<Row> = specs.iter().map(|s| Row::new(s, v2_bytes)).collect();
    let find = |name: &str| rows.iter().find(|r| r.name == name).expect("row exists");
    let median_of = |table: &[(String, Vec<u64>)], name: &str| {
        let w = &table
            .iter()
            .find(|(n, _)| n == name)
            .expect("case exists")
            .1;
        median(&w.iter().map(|&b| b as f64).collect::<Vec<_>>()) as u64
    };
    let wire_of = |name: &str| median_of(&wire, name);
    let mem_of = |name: &str| {
        let c = all.iter().find(|c| c.name == name).expect("case exists");
        let anon = c.memory.iter().map(|m| m.anon_kib).max().unwrap_or(0);
        let file = c.memory.iter().map(|m| m.file_kib).max().unwrap_or(0);
        (anon as f64 / 1024.0, file as f64 / 1024.0)
    };
    let ratio = |a: &str, b: &str| find(a).wall_median_s / find(b).wall_median_s;
    let delta_wire = wire_of("install-delta");
    let (anon, file) = mem_of("install-delta");
    let full_vs_zstd = ratio("install-full", "zstd-d");
    let verdicts = vec![
        verdict(
            "bytes on the wire, robot on v1 installing v2",
            format!("{:.2} MB", mb(delta_wire)),
            format!("<= {MAX_WIRE_MB} MB"),
            format!(
                "zchunk {ZCHUNK_MB} MB, casync {CASYNC_MB} MB, full bundle {:.1} MB; of ours asked for by ranges \
                 {:.2} MB (the rest: a streamed answer dropped for ranges); nothing to reuse {:.1} MB",
                mb(sizes.v2_full_bundle),
                mb(median_of(&asked, "install-delta")),
                mb(wire_of("install-full"))
            ),
            mb(delta_wire) <= MAX_WIRE_MB,
        ),
        verdict(
            "delta install time vs full install of v2 (same run)",
            format!("{:.3}x", ratio("install-delta", "install-full")),
            format!("<= {MAX_DELTA_VS_FULL}x"),
            format!("vs the --payload full install {:.3}x", ratio("install-delta", "install-legacy")),
            ratio("install-delta", "install-full") <= MAX_DELTA_VS_FULL,
        ),
        verdict(
            "client peak anonymous memory, delta install",
            format!("{anon:.1} MiB"),
            format!("<= {MAX_ANON_MIB} MiB"),
            format!("RSS {:.1} MiB, of it file-backed {file:.1} MiB", find("install-delta").peak_rss_mib),
            anon <= MAX_ANON_MIB,
        ),
        verdict(
            "create --delta-from vs zstd -T0 (same level)",
            format!("{:.3}x", ratio("create-delta", "zstd")),
            format!("<= {MAX_CREATE_VS_ZSTD}x"),
            format!(
                "chunked without base {:.3}x, --payload full {:.3}x",
                ratio("create-chunked", "zstd"),
                ratio("create-full", "zstd")
            ),
            ratio("create-delta", "zstd") <= MAX_CREATE_VS_ZSTD,
        ),
        verdict(
            "full install from the same bundle vs zstd -d (1 thread)",
            format!("{full_vs_zstd:.3}x"),
            format!("<= {MAX_FULL_VS_ZSTD_D}x (aim {AIM_FULL_VS_ZSTD_D}x)"),
            format!(
                "--payload full install {:.3}x; anon {:.1} MiB",
                ratio("install-legacy", "zstd-d"),
                mem_of("install-full").0
            ),
            full_vs_zstd <= MAX_FULL_VS_ZSTD_D,
        ),
        verdict(
            "bundle size vs today's full bundle (same level)",
            format!("{:.3}x", sizes.v2_delta_bundle as f64 / sizes.v2_full_bundle as f64),
            format!("<= {MAX_SIZE_VS_FULL}x"),
            format!(
                "delta {:.1} MB, chunked without base {:.1} MB ({:.3}x), full {:.1} MB",
                mb(sizes.v2_delta_bundle),
                mb(sizes.v2_chunked_bundle),
                sizes.v2_chunked_bundle as f64 / sizes.v2_full_bundle as f64,
                mb(sizes.v2_full_bundle)
            ),
            sizes.v2_delta_bundle as f64 <= MAX_SIZE_VS_FULL * sizes.v2_full_bundle as f64,
        ),
    ];
    let pass = verdicts.iter().all(|v| v.pass);

    println!();
    println!(
        "ota-bench delta: {} -> {} ({:.1} MB), level {level}, {} run(s), medians; MB/s = v2 image bytes / wall",
        args.v1.display(),
        args.v2.display(),
        mb(v2_bytes),
        args.runs
    );
    print!("{}", table(&rows));
    println!();
    print!("{}", verdict_table(&verdicts));
    println!("overall: {}", if pass { "PASS" } else { "FAIL" });

    if let Some(path) = &args.json {
        let memory: Vec<_> = all
            .iter()
            .filter(|c| !c.memory.is_empty())
            .map(|c| (c.name.clone(), c.memory.clone()))
            .collect();
        let report = Report {
            scenario: "delta",
            v1: &args.v1,
            v2: &args.v2,
            level,
            runs: args.runs,
            sizes: &sizes,
            wire_bytes: &wire,
            ranged_bytes: &asked,
            memory: &memory,
            rows: &rows,
            verdicts: &verdicts,
            pass,
        };
        fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(pass || !args.strict)
}

/// The table: measure, this run, target, what is beside it, PASS/FAIL.
fn verdict_table(verdicts: &[Verdict]) -> String {
    let w = |f: &dyn Fn(&Verdict) -> usize, h: &str| {
        verdicts.iter().map(f).max().unwrap_or(0).max(h.len())
    };
    let (wm, wv, wt) = (
        w(&|v| v.measure.len(), "measure"),
        w(&|v| v.value.len(), "this run"),
        w(&|v| v.target.len(), "target"),
    );
    let mut out = format!(
        "{:<wm$}  {:>wv$}  {:<wt$}  result  beside\n",
        "measure", "this run", "target"
    );
    for v in verdicts {
        let result = if v.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "{:<wm$}  {:>wv$}  {:<wt$}  {result:<6}  {}",
            v.measure, v.value, v.target, v.beside
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_table_names_peers_and_results() {
        let v = [verdict(
            "bytes",
            "9.00 MB".into(),
            "<= 12 MB".into(),
            format!("zchunk {ZCHUNK_MB} MB"),
            true,
        )];
        let t = verdict_table(&v);
        assert!(t.contains("PASS") && t.contains("zchunk 29.2 MB"), "{t}");
    }
}
