//! Power cuts during a delta install: a robot on v1 (installed and committed) installs v2, a chunked
//! bundle built against v1, and loses power at a random checkpoint or after a random number of bytes
//! written into the standby slot ([`Cut`], as the full-install cuts in `power_cut`). After each cut the
//! robot reboots through the shipped GRUB script and must boot a slot holding a complete image, settle,
//! and take the next update: v2 again when it still runs v1 (after a cut past a journal point the install
//! resumes and fetches fewer bytes than the whole plan), v3 when the cut left it committed to v2; then it
//! commits that update.

use std::io::Cursor;
use std::sync::OnceLock;

use ota_bundle_format::chunked::{ChunkParams, DEFAULT_PARAMS};
use ota_bundle_format::UnverifiedBundle;
use ota_client::{BundleSource, InstallOptions, InstallReport, NoProgress, Progress, Slot};
use ota_testkit::robot::{image, noise, Backend, Robot, RobotSpec};

use super::common::chunked_bundle;
use super::common::cut::{self, Cut};
use super::common::served::Served;

/// Image and slot size of the many small cuts: 2 MiB, about 130 chunks of the small parameters.
const SMALL: usize = 2 << 20;
/// Chunk parameters of the small images (the default ones would give a dozen chunks).
const SMALL_PARAMS: ChunkParams = ChunkParams {
    min: 4 << 10,
    avg: 16 << 10,
    max: 64 << 10,
};
/// Past the client's first journal point (every 64 MiB of output).
const BIG: usize = 72 << 20;

/// One release of the test: its rootfs image and its chunked bundle.
struct Release {
    version: &'static str,
    image: Vec<u8>,
    bundle: Vec<u8>,
}

/// v1 (chunked), v2 and v3 (each chunked against the one before it).
struct Releases {
    v1: Release,
    v2: Release,
    v3: Release,
}

/// `prev` with what a rebuild changes: small edits spread over the image, and an insertion that moves
/// everything behind it (content-defined chunks realign after it), cut back to the same size.
fn next_release(prev: &[u8], seed: u64) -> Vec<u8> {
    let len = prev.len();
    let mut out = prev.to_vec();
    let edits = noise(seed, 64 * 200);
    let step = len / 13;
    for (k, edit) in edits.chunks(200).take(12).enumerate() {
        let at = (k + 1) * step + (seed as usize * 7919) % 4096;
        out[at..at + edit.len()].copy_from_slice(edit);
    }
    let insert_at = len / 3;
    let inserted = noise(seed + 1, 5000);
    out.splice(insert_at..insert_at, inserted);
    out.truncate(len);
    out
}

fn releases(size: usize, params: ChunkParams) -> Releases {
    let v1 = image(0x5EED_0001, size);
    let v2 = next_release(&v1, 2);
    let v3 = next_release(&v2, 3);
    let b1 = chunked_bundle("1.0.0", &v1, None, params);
    let b2 = chunked_bundle("2.0.0", &v2, Some(&b1), params);
    let b3 = chunked_bundle("3.0.0", &v3, Some(&b2), params);
    for (bundle, base) in [(&b1, false), (&b2, true), (&b3, true)] {
        let head = UnverifiedBundle::read(Cursor::new(bundle)).unwrap();
        let chunks = head.manifest_unverified().unwrap().images[0]
            .chunks
            .clone()
            .expect("a chunked image");
        assert_eq!(chunks.base.is_some(), base, "{chunks:?}");
    }
    let release = |version, image, bundle| Release {
        version,
        image,
        bundle,
    };
    Releases {
        v1: release("1.0.0", v1, b1),
        v2: release("2.0.0", v2, b2),
        v3: release("3.0.0", v3, b3),
    }
}

fn small() -> &'static Releases {
    static R: OnceLock<Releases> = OnceLock::new();
    R.get_or_init(|| releases(SMALL, SMALL_PARAMS))
}

fn big() -> &'static Releases {
    static R: OnceLock<Releases> = OnceLock::new();
    R.get_or_init(|| releases(BIG, DEFAULT_PARAMS))
}

/// A robot whose rootfs slots are `size` bytes, in its own temporary directory.
struct TestRobot {
    robot: Robot,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestRobot {
    type Target = Robot;
    fn deref(&self) -> &Robot {
        &self.robot
    }
}

/// A robot that installed v1 from a file, booted it and committed it (no cuts).
fn robot_on_v1(rel: &Releases, size: usize, backend: Backend) -> TestRobot {
    let dir = tempfile::tempdir().unwrap();
    let spec = RobotSpec {
        rootfs_size: size,
        ..RobotSpec::new(backend)
    };
    let robot = Robot::create(dir.path(), &spec);
    robot.install(&rel.v1.bundle).expect("v1 installs");
    let (slot, confirmed) = robot.reboot_and_confirm();
    confirmed.expect("v1 commits");
    assert_eq!(robot.slot_bytes("rootfs", slot), rel.v1.image);
    TestRobot { robot, _dir: dir }
}

/// After any cut: the slot booted holds a complete image (factory, v1, v2 or v3), the model slot its
/// factory image (the bundles carry no model).
fn check_boot(rel: &Releases, r: &Robot, context: &str) {
    let booted = r.booted();
    let bytes = r.slot_bytes("rootfs", booted);
    let known = [&rel.v1, &rel.v2, &rel.v3]
        .iter()
        .find(|v| v.image == bytes)
        .map(|v| v.version);
    assert!(
        known.is_some() || bytes == r.rootfs_image("factory"),
        "{context}: booted slot {booted} does not hold a complete image"
    );
    assert_eq!(
        r.slot_bytes("model", r.model_link()),
        r.model_image("factory"),
        "{context}: the model slot changed"
    );
}

/// The release the robot booted, if one of ours.
fn running<'a>(rel: &'a Releases, r: &Robot) -> Option<&'a Release> {
    let bytes = r.slot_bytes("rootfs", r.booted());
    [&rel.v1, &rel.v2, &rel.v3]
        .into_iter()
        .find(|v| v.image == bytes)
}

/// The delta install of v2 and its trial boot and commit, until the power is cut. Whether it ran to the end.
fn run(r: &Robot, rel: &Releases, cut: &Cut) -> bool {
    let path = r.put("v2.otab", &rel.v2.bundle);
    let mut client = r.client();
    client.set_hooks(cut.hooks());
    let res = client.install(
        &BundleSource::File(path),
        &InstallOptions::default(),
        &mut NoProgress,
    );
    if let Err(e) = &res {
        assert!(cut.fired(), "unexpected install failure: {e}");
    }
    if cut.fired() {
        return false;
    }
    r.reboot();
    let mut client = r.client();
    client.set_hooks(cut.hooks());
    let _ = client.confirm();
    !cut.fired()
}

/// The install's phase messages (the range engine's plan: what it fetches, reuses, keeps).
#[derive(Default)]
struct Phases(Vec<String>);

impl Progress for Phases {
    fn phase(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
    fn image_started(&mut self, _: &str, _: &str, _: Slot, _: u64) {}
    fn bytes_written(&mut self, _: u64) {}
    fn image_finished(&mut self) {}
}

impl Phases {
    /// The plan's summary line ("...: fetching N MB from ...").
    fn plan(&self) -> String {
        self.0
            .iter()
            .find(|p| p.contains(": fetching "))
            .cloned()
            .unwrap_or_default()
    }
}

/// Installs `release` from `source` (no cuts), boots it on trial and commits it. Returns the install's phases.
fn install_and_commit(r: &Robot, release: &Release, source: BundleSource, context: &str) -> Phases {
    r.take_reboot_requests();
    let mut phases = Phases::default();
    let report = r
        .client()
        .install(&source, &InstallOptions::default(), &mut phases)
        .unwrap_or_else(|e| panic!("{context}: installing {} failed: {e}", release.version));
    let InstallReport::TrialArmed { slot, .. } = report else {
        panic!("{context}: {report:?}")
    };
    let (booted, res) = r.reboot_and_confirm();
    assert_eq!(booted, slot, "{context}");
    res.unwrap_or_else(|e| panic!("{context}: commit of {} failed: {e}", release.version));
    assert_eq!(
        r.slot_bytes("rootfs", booted),
        release.image,
        "{context}: slot {booted} after installing {}",
        release.version
    );
    assert_eq!(r.status().primary, Some(booted), "{context}");
    phases
}

/// After a cut: settle, then the next update (v2 when still on v1, else v3) installs and commits.
fn recover_and_update(r: &Robot, rel: &Releases, context: &str) {
    cut::settle(r, context, &|r: &Robot, c: &str| check_boot(rel, r, c));
    let next = match running(rel, r).map(|v| v.version) {
        Some("2.0.0") => &rel.v3,
        _ => &rel.v2,
    };
    let path = r.put("next.otab", &next.bundle);
    install_and_commit(r, next, BundleSource::File(path), context);
}

/// Bundle bytes the client asked for by ranges in `seen` (its reads of the source; the `bytes=0-0` probe and
/// the opening streamed request, dropped once the head showed a chunked bundle, are not reads of the plan).
fn requested(seen: &[ota_testkit::proxy::Seen]) -> u64 {
    seen.iter()
        .filter(|s| s.path.ends_with("/download"))
        .filter_map(|s| s.range.as_deref())
        .filter(|r| r.trim() != "bytes=0-0")
        .flat_map(|r| {
            r.trim()
                .trim_start_matches("bytes=")
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|r| {
            let (a, b) = r.trim().split_once('-')?;
            Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()? + 1)
        })
        .sum()
}

/// A seeded xorshift: every run prints its seed, `OTA_DELTA_CUT_SEED` repeats it.
struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn seed() -> u64 {
    let seed = std::env::var("OTA_DELTA_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("power_cut_delta seed {seed} (OTA_DELTA_CUT_SEED={seed} repeats these cuts)");
    seed
}

/// `runs` cuts on robots with `backend`, at random checkpoints (those a clean run passes) and random byte
/// offsets of the slot writer.
fn cut_delta_installs(backend: Backend, runs: usize) {
    let rel = small();
    // The checkpoints of a clean run, and a check that the delta bundle is what it claims to be.
    let probe = robot_on_v1(rel, SMALL, backend);
    let record = Cut::new(None, None);
    assert!(run(&probe, rel, &record), "the delta install runs cleanly");
    assert_eq!(probe.slot_bytes("rootfs", probe.booted()), rel.v2.image);
    let names = record.names.lock().unwrap().clone();
    assert!(
        names.iter().any(|n| n.starts_with("install:")) && names.len() >= 5,
        "{names:?}"
    );

    let seed = seed();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (mut at_checkpoints, mut at_bytes, mut back_on_v1) = (0, 0, 0);
    for i in 0..runs {
        let r = robot_on_v1(rel, SMALL, backend);
        let (cut, what) = if rng.next(2) == 0 {
            let at = rng.next(names.len() as u64) as usize;
            at_checkpoints += 1;
            (
                Cut::new(Some(at), None),
                format!("checkpoint #{at} {}", names[at]),
            )
        } else {
            let limit = rng.next(SMALL as u64);
            at_bytes += 1;
            (Cut::new(None, Some(limit)), format!("byte {limit}"))
        };
        let context = format!("seed {seed} run {i} ({backend:?}): cut at {what}");
        assert!(!run(&r, rel, &cut), "{context}: the cut never fired");
        let armed = r.status().trial.map(|t| t.slot);
        if cut.write_limit.is_some() {
            assert_ne!(
                armed,
                Some(Slot::A),
                "{context}: a partly written slot was armed"
            );
        }
        if running(rel, &r).map(|v| v.version) == Some("1.0.0") {
            back_on_v1 += 1;
        }
        recover_and_update(&r, rel, &context);
    }
    eprintln!(
        "{runs} delta install cuts ({backend:?}, seed {seed}): {at_checkpoints} at checkpoints, {at_bytes} at \
         byte offsets; {back_on_v1} came back on v1"
    );
    assert!(at_checkpoints > 0 && at_bytes > 0);
}

// 200 cuts in all, in two tests that run in parallel (the runs wait on fsyncs more than they compute).
#[test]
fn cuts_at_random_points_of_a_delta_install_grub() {
    cut_delta_installs(Backend::Grub, 100);
}

#[test]
fn cuts_at_random_points_of_a_delta_install_file_backend() {
    cut_delta_installs(Backend::File, 100);
}

/// The bundle bytes a whole install of v2 reads by ranges, and those after a cut past the first journal point:
/// fewer, as the verified prefix of the interrupted write is kept. Through the in-process server behind the
/// test kit's proxy, which records the ranges asked for.
#[test]
fn a_cut_past_a_journal_point_resumes_with_fewer_bytes() {
    let rel = big();
    let served = Served::publish(&rel.v2.bundle);
    let proxy = &served.proxy;
    let source = || served.source();
    let install = |r: &Robot, cut: &Cut| {
        let mut client = r.client();
        client.set_hooks(cut.hooks());
        let res = client.install(&source(), &InstallOptions::default(), &mut NoProgress);
        if let Err(e) = &res {
            assert!(cut.fired(), "unexpected install failure: {e}");
        }
    };
    let journal = |r: &Robot| r.path("data/download.json");

    // A whole install: what it fetches, and its checkpoints.
    let probe = robot_on_v1(rel, BIG, Backend::Grub);
    let record = Cut::new(None, None);
    let before = proxy.seen().len();
    install(&probe, &record);
    let whole = requested(&proxy.seen()[before..]);
    assert_eq!(probe.slot_bytes("rootfs", Slot::A), rel.v2.image);
    assert!(!journal(&probe).exists(), "the journal outlived the write");
    let names = record.names.lock().unwrap().clone();
    let first_journal = names
        .iter()
        .position(|n| n == "install:journal")
        .unwrap_or_else(|| panic!("no journal point in a {BIG}-byte write: {names:?}"));
    eprintln!(
        "whole delta install of v2: {whole} bytes asked for by ranges; checkpoints {names:?}"
    );

    let seed = seed();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let past_journal = (BIG as u64 - (66 << 20)).max(1);
    let cuts = [
        // At the journal point itself (the slot is synced, the journal not yet written), just after it
        // (written), and at random bytes past it.
        ("at install:journal", Cut::new(Some(first_journal), None)),
        (
            "after install:journal",
            Cut::new(Some(first_journal + 1), None),
        ),
        (
            "past the journal point",
            Cut::new(None, Some((66 << 20) + rng.next(past_journal))),
        ),
        (
            "past the journal point",
            Cut::new(None, Some((66 << 20) + rng.next(past_journal))),
        ),
    ];
    for (what, cut) in cuts {
        let r = robot_on_v1(rel, BIG, Backend::Grub);
        let context = format!("seed {seed}: cut {what} {:?}", cut.write_limit);
        install(&r, &cut);
        assert!(cut.fired(), "{context}: the cut never fired");
        assert_eq!(r.status().trial, None, "{context}: armed after the cut");
        let resumable = journal(&r).exists();
        cut::settle(&r, &context, &|r: &Robot, c: &str| check_boot(rel, r, c));
        assert_eq!(
            running(rel, &r).map(|v| v.version),
            Some("1.0.0"),
            "{context}"
        );
        let before = proxy.seen().len();
        let phases = install_and_commit(&r, &rel.v2, source(), &context);
        let again = requested(&proxy.seen()[before..]);
        eprintln!(
            "{context}: journal {resumable}, {again} of {whole} bytes asked for again; {}",
            phases.plan()
        );
        if resumable {
            assert!(
                again < whole,
                "{context}: the resumed install fetched {again} bytes, a whole one {whole}"
            );
        }
        if what != "at install:journal" {
            assert!(resumable, "{context}: no journal after the journal point");
        }
        assert!(
            !journal(&r).exists(),
            "{context}: the journal outlived the write"
        );
    }
}
