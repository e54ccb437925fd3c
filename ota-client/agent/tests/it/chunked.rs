//! The range engine (`ota_client::client::chunked`): chunked bundles installed by byte ranges, reusing the
//! active slot (as the delta base, or by its scanned chunks) and the verified prefix of an interrupted try.
//! The engine is driven directly where the bytes a source handed out are counted, and through
//! [`Client::install`] where the end result matters (nothing armed on an error).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use ota_bundle_format::chunked::{ChunkParams, Span};
use ota_bundle_format::head::{parse_head, HeadParse, VerifiedHead};
use ota_client::client::chunked::{self, Host, ImageJob, ImageStats};
use ota_client::slotio::{self, SlotWriter};
use ota_client::source::ranges::{FileRanges, RangeSink, RangeSource};
use ota_client::source::SourceError;
use ota_client::{BundleSource, ClientError, Hooks, InstallOptions, NoProgress, Progress, Slot};
use ota_testkit::release::trust_root;
use ota_testkit::robot::{image, noise, release_key, Backend, Robot, RobotSpec};

use crate::common::served::Served;

/// Image and slot size: 24 MiB, several ~4 MiB frames of chunks of [`PARAMS`], so an edit near the middle leaves
/// most frames unfetched.
const SIZE: usize = 24 << 20;
const PARAMS: ChunkParams = ChunkParams {
    min: 4 << 10,
    avg: 16 << 10,
    max: 64 << 10,
};

struct Releases {
    v1: Vec<u8>,
    v2: Vec<u8>,
    /// v1, chunked.
    b1: Vec<u8>,
    /// v2, chunked with deltas against `b1`.
    b2: Vec<u8>,
    /// v2, chunked without a base.
    b2_plain: Vec<u8>,
}

/// `prev` with two small edits and an insertion that moves everything behind it, all near the middle (a
/// few frames change, most stay).
fn edited(prev: &[u8], seed: u64) -> Vec<u8> {
    let mut out = prev.to_vec();
    let step = out.len() / 20;
    for (k, edit) in noise(seed, 2 * 300).chunks(300).enumerate() {
        let at = (9 + 2 * k) * step;
        out[at..at + edit.len()].copy_from_slice(edit);
    }
    let at = out.len() / 2;
    out.splice(at..at, noise(seed + 1, 3000));
    out.truncate(prev.len());
    out
}

fn bundle(version: &str, rootfs: &[u8], base: Option<&[u8]>) -> Vec<u8> {
    crate::common::chunked_bundle(version, rootfs, base, PARAMS)
}

fn releases() -> &'static Releases {
    static R: OnceLock<Releases> = OnceLock::new();
    R.get_or_init(|| {
        let v1 = image(0xC0FFEE, SIZE);
        let v2 = edited(&v1, 7);
        let b1 = bundle("1.0.0", &v1, None);
        let b2 = bundle("2.0.0", &v2, Some(&b1));
        let b2_plain = bundle("2.0.0", &v2, None);
        Releases {
            v1,
            v2,
            b1,
            b2,
            b2_plain,
        }
    })
}

/// A file source that counts the bytes it hands out and remembers the ranges asked.
struct Counting {
    inner: FileRanges,
    bytes: Arc<AtomicU64>,
    asked: Vec<Span>,
}

impl RangeSource for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read_ranges(
        &mut self,
        ranges: &[Span],
        sink: &mut RangeSink<'_>,
    ) -> Result<(), SourceError> {
        self.asked.extend_from_slice(ranges);
        let bytes = Arc::clone(&self.bytes);
        self.inner.read_ranges(ranges, &mut |i, b| {
            bytes.fetch_add(b.len() as u64, Ordering::SeqCst);
            sink(i, b)
        })
    }

    fn wire_bytes(&self) -> u64 {
        0
    }
}

/// Writes the standby file; `limit`: the power is cut after that many bytes.
struct TestHost {
    standby: PathBuf,
    limit: Option<u64>,
    /// Called when the writer opens (after planning): the test's chance to change the active slot.
    on_open: Option<Box<dyn FnMut()>>,
}

struct Limited {
    inner: Box<dyn SlotWriter>,
    left: u64,
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("power cut"));
        }
        let n = buf.len().min(self.left as usize);
        let n = self.inner.write(&buf[..n])?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SlotWriter for Limited {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }
}

impl Host for TestHost {
    fn open_writer(&mut self, offset: u64) -> Result<Box<dyn SlotWriter>, ClientError> {
        if let Some(f) = &mut self.on_open {
            f();
        }
        let inner = slotio::open_slot_at(&self.standby, offset).unwrap();
        Ok(match self.limit {
            Some(left) => Box::new(Limited { inner, left }),
            None => inner,
        })
    }

    fn checkpoint(&mut self, _: &str) -> Result<(), ClientError> {
        Ok(())
    }

    fn slot_error(&self, detail: String) -> ClientError {
        ClientError::Inconsistent(detail)
    }
}

/// A robot's slots and state directory, for the engine alone.
struct Bench {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    head: VerifiedHead,
}

impl Bench {
    /// The active slot holds `active`, the standby slot zeros, the bundle is `bundle`.
    fn new(active: &[u8], bundle: &[u8]) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("active"), active).unwrap();
        std::fs::write(dir.path().join("standby"), vec![0u8; SIZE]).unwrap();
        let path = dir.path().join("bundle.otab");
        std::fs::write(&path, bundle).unwrap();
        let head = match parse_head(bundle).unwrap() {
            HeadParse::Complete(h) => h.verify(&trust_root(&[release_key()], 1)).unwrap(),
            HeadParse::NeedMore(n) => panic!("the whole bundle is shorter than its head ({n})"),
        };
        Bench {
            dir,
            bundle: path,
            head,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn source(&self) -> Counting {
        Counting {
            inner: FileRanges::open(&self.bundle).unwrap(),
            bytes: Arc::default(),
            asked: Vec::new(),
        }
    }

    fn host(&self) -> TestHost {
        TestHost {
            standby: self.path("standby"),
            limit: None,
            on_open: None,
        }
    }

    /// Runs the engine for the bundle's image; `journal_every` small enough for journal points in 2 MiB.
    fn run(
        &self,
        on_base: bool,
        source: &mut Counting,
        host: &mut TestHost,
    ) -> Result<ImageStats, ClientError> {
        let manifest = &self.head.manifest;
        let image = &manifest.images[0];
        let spans = self.head.layout.image(manifest, &image.name).unwrap();
        let active = self.path("active");
        let standby = self.path("standby");
        let journal = self.path("download.json");
        let job = ImageJob {
            bundle_id: &self.head.bundle_id,
            image,
            spans: &spans,
            class: "rootfs",
            slot: Slot::B,
            standby: &standby,
            active: Some((active.as_path(), SIZE as u64)),
            on_base,
            origin: "bundle.otab",
            journal: &journal,
            journal_every: 256 << 10,
        };
        chunked::write_image(&job, source, host, &mut NoProgress)
    }

    fn standby(&self) -> Vec<u8> {
        std::fs::read(self.path("standby")).unwrap()
    }
}

fn entry(head: &VerifiedHead, path: &str) -> Span {
    head.layout.entry(path).unwrap()
}

fn inside(s: &Span, outer: &Span) -> bool {
    s.offset >= outer.offset && s.end() <= outer.end()
}

#[test]
fn a_robot_on_the_base_fetches_the_index_and_the_deltas_only() {
    let rel = releases();
    let b = Bench::new(&rel.v1, &rel.b2);
    let mut source = b.source();
    let stats = b.run(true, &mut source, &mut b.host()).unwrap();
    assert_eq!(b.standby(), rel.v2);
    let index = entry(&b.head, "index/rootfs.img");
    let delta = entry(&b.head, "delta/rootfs.img");
    let payload = entry(&b.head, "images/rootfs.img");
    assert!(
        source
            .asked
            .iter()
            .all(|s| inside(s, &index) || inside(s, &delta)),
        "a range outside the index and the deltas: {:?}",
        source.asked
    );
    let fetched = source.bytes.load(Ordering::SeqCst);
    assert_eq!(fetched, stats.fetched);
    assert!(stats.deltas > 0 && stats.frames == 0, "{stats:?}");
    assert!(
        fetched <= index.len + delta.len && fetched * 4 < payload.len,
        "fetched {fetched} of a {}-byte payload: {stats:?}",
        payload.len
    );
    assert!(stats.local_bytes > SIZE as u64 / 2, "{stats:?}");
    assert!(!b.path("download.json").exists() || b.journal_done());
}

impl Bench {
    /// The journal says the whole image (the caller removes it once it recorded the slot).
    fn journal_done(&self) -> bool {
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.path("download.json")).unwrap()).unwrap();
        j["verified_upto"] == SIZE as u64
    }
}

#[test]
fn a_robot_not_on_the_base_reuses_the_chunks_found_in_its_active_slot() {
    let rel = releases();
    for bundle in [&rel.b2, &rel.b2_plain] {
        let b = Bench::new(&rel.v1, bundle);
        let mut source = b.source();
        let stats = b.run(false, &mut source, &mut b.host()).unwrap();
        assert_eq!(b.standby(), rel.v2);
        let payload = entry(&b.head, "images/rootfs.img");
        assert_eq!(stats.deltas, 0, "{stats:?}");
        assert!(stats.local_bytes > SIZE as u64 / 2, "{stats:?}");
        assert!(
            source.bytes.load(Ordering::SeqCst) < payload.len / 2,
            "{stats:?} of a {}-byte payload",
            payload.len
        );
    }
}

#[test]
fn nothing_to_reuse_fetches_every_frame_and_writes_the_image() {
    let rel = releases();
    let b = Bench::new(&noise(5, SIZE), &rel.b2_plain);
    let mut source = b.source();
    let stats = b.run(false, &mut source, &mut b.host()).unwrap();
    assert_eq!(b.standby(), rel.v2);
    assert_eq!(stats.local_bytes, 0);
    let payload = entry(&b.head, "images/rootfs.img");
    assert!(source.bytes.load(Ordering::SeqCst) >= payload.len);
}

#[test]
fn an_interrupted_write_resumes_from_its_journal_and_fetches_less() {
    let rel = releases();
    // What a whole install fetches (nothing to reuse: every frame).
    let whole = {
        let b = Bench::new(&noise(5, SIZE), &rel.b2_plain);
        let mut source = b.source();
        b.run(false, &mut source, &mut b.host()).unwrap();
        source.bytes.load(Ordering::SeqCst)
    };
    let b = Bench::new(&noise(5, SIZE), &rel.b2_plain);
    let mut host = b.host();
    host.limit = Some(SIZE as u64 * 3 / 4);
    let err = b.run(false, &mut b.source(), &mut host).unwrap_err();
    assert!(err.to_string().contains("power cut"), "{err}");
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path("download.json")).unwrap()).unwrap();
    let upto = journal["verified_upto"].as_u64().unwrap();
    assert!(
        upto >= 256 << 10 && upto <= SIZE as u64 * 3 / 4,
        "{journal}"
    );

    let mut source = b.source();
    let stats = b.run(false, &mut source, &mut b.host()).unwrap();
    assert_eq!(b.standby(), rel.v2);
    assert!(
        stats.resumed_bytes > 0 && stats.resumed_bytes <= upto,
        "{stats:?}"
    );
    let again = source.bytes.load(Ordering::SeqCst);
    assert!(again < whole, "resumed fetch {again} >= whole {whole}");

    // A prefix that no longer verifies is not kept: the chunk that differs and everything after it is
    // fetched again, and the image still comes out right.
    let mut host = b.host();
    host.limit = Some(SIZE as u64 * 3 / 4);
    std::fs::write(b.path("standby"), vec![0u8; SIZE]).unwrap();
    b.run(false, &mut b.source(), &mut host).unwrap_err();
    let mut standby = b.standby();
    standby[1000] ^= 0xff;
    std::fs::write(b.path("standby"), &standby).unwrap();
    let stats = b.run(false, &mut b.source(), &mut b.host()).unwrap();
    assert_eq!(stats.resumed_bytes, 0, "{stats:?}");
    assert_eq!(b.standby(), rel.v2);
}

#[test]
fn a_journal_of_another_bundle_is_not_used_and_is_removed() {
    let rel = releases();
    let b = Bench::new(&noise(5, SIZE), &rel.b2_plain);
    let stale = serde_json::json!({
        "bundle": "0".repeat(64), "class": "rootfs", "slot": "B",
        "image_sha256": b.head.manifest.images[0].sha256, "verified_upto": SIZE,
    });
    std::fs::write(b.path("download.json"), stale.to_string()).unwrap();
    let stats = b.run(false, &mut b.source(), &mut b.host()).unwrap();
    assert_eq!(stats.resumed_bytes, 0);
    assert_eq!(b.standby(), rel.v2);
}

#[test]
fn an_active_slot_changed_after_planning_is_an_error() {
    let rel = releases();
    for on_base in [true, false] {
        let b = Bench::new(&rel.v1, &rel.b2);
        let mut host = b.host();
        let active = b.path("active");
        host.on_open = Some(Box::new(move || {
            let mut bytes = std::fs::read(&active).unwrap();
            for x in bytes.iter_mut().step_by(4096) {
                *x ^= 0x5a;
            }
            std::fs::write(&active, bytes).unwrap();
        }));
        let err = b.run(on_base, &mut b.source(), &mut host).unwrap_err();
        assert!(
            matches!(err, ClientError::ActiveSlotChanged { .. })
                || err.to_string().contains("delta"),
            "{err}"
        );
    }
}

/// A robot on v1 (chunked, committed) with 2 MiB rootfs slots.
fn robot_on_v1(dir: &Path) -> Robot {
    let rel = releases();
    let spec = RobotSpec {
        rootfs_size: SIZE,
        ..RobotSpec::new(Backend::File)
    };
    let r = Robot::create(dir, &spec);
    r.install(&rel.b1).unwrap();
    let (_, confirmed) = r.reboot_and_confirm();
    confirmed.unwrap();
    r
}

/// Collects the phase messages.
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

#[test]
fn a_delta_bundle_from_a_file_installs_through_the_engine_and_arms() {
    let rel = releases();
    let dir = tempfile::tempdir().unwrap();
    let r = robot_on_v1(dir.path());
    let standby = r.booted().other();
    let path = r.put("v2.otab", &rel.b2);
    let mut phases = Phases::default();
    r.client()
        .install(
            &BundleSource::File(path),
            &InstallOptions::default(),
            &mut phases,
        )
        .unwrap();
    assert_eq!(r.slot_bytes("rootfs", standby), rel.v2);
    assert!(
        phases.0.iter().any(|p| p.contains("0 frames")),
        "{:?}",
        phases.0
    );
    assert_eq!(r.status().trial.map(|t| t.slot), Some(standby));
    assert!(!r.path("data/download.json").exists());
    let (slot, confirmed) = r.reboot_and_confirm();
    assert_eq!(slot, standby);
    confirmed.unwrap();
}

#[test]
fn a_flipped_byte_in_a_frame_is_refused_and_nothing_is_armed() {
    let rel = releases();
    let dir = tempfile::tempdir().unwrap();
    let r = robot_on_v1(dir.path());
    // The plain bundle: a robot on v1 scans its slot and fetches the frames of the changed chunks.
    let head = Bench::new(&rel.v1, &rel.b2_plain).head;
    let payload = entry(&head, "images/rootfs.img");
    // One byte of every frame (frames are longer than 4 KiB), at two places in them.
    for first in [10, 2000] {
        let mut bad = rel.b2_plain.clone();
        for at in (payload.offset + first..payload.end()).step_by(4096) {
            bad[at as usize] ^= 0x01;
        }
        let path = r.put("bad.otab", &bad);
        let err = r
            .client()
            .install(
                &BundleSource::File(path),
                &InstallOptions::default(),
                &mut NoProgress,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("frame") && text.contains("bad.otab"),
            "{text}"
        );
        assert_eq!(r.status().trial, None);
    }
    // Still takes the good bundle.
    r.install(&rel.b2_plain).unwrap();
}

#[test]
fn an_active_slot_changed_during_an_install_fails_it_with_nothing_armed() {
    let rel = releases();
    let dir = tempfile::tempdir().unwrap();
    let r = robot_on_v1(dir.path());
    let active = r.slot_file("rootfs", r.booted());
    let mut client = r.client();
    // The writer opens after the plan was made: change the active slot then.
    let wrap = Arc::new(move |w: Box<dyn SlotWriter>| -> Box<dyn SlotWriter> {
        let mut bytes = std::fs::read(&active).unwrap();
        for x in bytes.iter_mut().step_by(4096) {
            *x ^= 0x5a;
        }
        std::fs::write(&active, bytes).unwrap();
        w
    });
    client.set_hooks(Hooks {
        crash_at: None,
        wrap_writer: Some(wrap),
    });
    let path = r.put("v2.otab", &rel.b2_plain);
    let err = client
        .install(
            &BundleSource::File(path),
            &InstallOptions::default(),
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "the active slot rootfs changed while the update read it (chunk at offset"
        ),
        "{err}"
    );
    assert_eq!(r.status().trial, None);
}

/// A chunked bundle from a URL is streamed first (its kind is unknown) and switched to ranges once its head
/// shows it is chunked; an install cut after its image was written and journalled, restarted from the same
/// URL, reads by ranges from its first request and fetches no frame again.
#[test]
fn a_restarted_install_from_the_same_url_reads_by_ranges_from_its_first_request() {
    let rel = releases();
    let served = Served::publish(&rel.b2_plain);
    let (proxy, source) = (&served.proxy, served.source());
    let robot_dir = tempfile::tempdir().unwrap();
    let r = robot_on_v1(robot_dir.path());
    let standby = r.booted().other();

    let mut client = r.client();
    client.set_hooks(Hooks {
        crash_at: Some(Arc::new(|name: &str| name == "install:rootfs-synced")),
        wrap_writer: None,
    });
    let err = client
        .install(&source, &InstallOptions::default(), &mut NoProgress)
        .unwrap_err();
    assert!(matches!(err, ClientError::PowerCut(_)), "{err}");
    let first = proxy.seen();
    assert_eq!(first[0].range, None, "a URL is streamed first: {first:?}");
    assert!(first.iter().any(|s| s.range.is_some()), "{first:?}");
    assert!(r.path("data/download.json").exists());

    let before = first.len();
    let mut phases = Phases::default();
    r.client()
        .install(&source, &InstallOptions::default(), &mut phases)
        .unwrap();
    let again = &proxy.seen()[before..];
    assert!(
        again
            .iter()
            .filter(|s| s.path.ends_with("/download"))
            .all(|s| s.range.is_some()),
        "the restarted install streamed: {again:?}"
    );
    assert!(
        phases.0.iter().any(|p| p.contains("(0 frames, 0 deltas)")),
        "{:?}",
        phases.0
    );
    assert_eq!(r.slot_bytes("rootfs", standby), rel.v2);
    assert!(!r.path("data/download.json").exists());
}

/// The daemon's path for a chunked offer: a robot on v1 asks by ranges from its first request (no streamed
/// bytes to drop), and the server sends little more than the index and the deltas.
#[test]
fn a_chunked_offer_is_read_by_ranges_from_the_first_request_and_sends_only_what_is_missing() {
    let rel = releases();
    let served = Served::publish(&rel.b2);
    let proxy = &served.proxy;
    let source = BundleSource::Http(served.request().ranges_first());
    let robot_dir = tempfile::tempdir().unwrap();
    let r = robot_on_v1(robot_dir.path());
    let standby = r.booted().other();
    r.client()
        .install(&source, &InstallOptions::default(), &mut NoProgress)
        .unwrap();
    let seen = proxy.seen();
    let downloads: Vec<_> = seen
        .iter()
        .filter(|s| s.path.ends_with("/download"))
        .collect();
    assert!(
        downloads.iter().all(|s| s.range.is_some()),
        "a request streamed: {downloads:?}"
    );
    let sent = proxy.download_bytes();
    assert!(
        sent < rel.b2.len() as u64 / 4,
        "the server sent {sent} of a {}-byte bundle",
        rel.b2.len()
    );
    assert_eq!(r.slot_bytes("rootfs", standby), rel.v2);
}
