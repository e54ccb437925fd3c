//! Writes the seed corpus under `fuzz/corpus/<target>/` with the project's own encoders: bundles built by the
//! format crate's writer and signed with the fuzzing test key, their manifests and chunk indexes, boot
//! environments from the env codecs, and protocol bodies serialized from the wire types. Small on purpose (the
//! whole corpus stays well under 2 MB). Run after a format change:
//!
//! ```text
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use ota_bootloader::{grubenv, statefile, uboot};
use ota_bundle_format::chunked::{BundleLayout, ChunkParams};
use ota_bundle_format::write::BaseBundle;
use ota_bundle_format::writer::sign_manifest;
use ota_bundle_format::{
    build_bundle_to_vec, build_chunked_bundle, rewrite_head, BundleSpec, ImageInput, SeekableImage,
    UnverifiedBundle,
};
use ota_keys::{SignedTrustRoot, TrustRoot};
use ota_protocol::admin::CreateRolloutRequest;
use ota_protocol::device::{
    EnrollRequest, EnrollResponse, PollRequest, PollResponse, ReportRequest, ReportResponse,
    ReportStatus, Telemetry, UpdateOffer,
};
use ota_protocol::fleet::{DeviceLabels, GroupSettings};
use ota_protocol::ErrorBody;

/// Small chunks, so a few KiB of image make several chunks and frames.
const SMALL_PARAMS: ChunkParams = ChunkParams {
    min: 256,
    avg: 1024,
    max: 4096,
};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let spec = BundleSpec {
        version: "1.2.3".parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        created: 1_700_000_000,
        description: "fuzz seed".into(),
        security_floor: None,
        level: 3,
        workers: 1,
    };

    // Bundles: full (one and two images), chunked, chunked with a delta against the chunked one.
    let mut bundles = Vec::new();
    let full = |images: Vec<(&str, &str, Vec<u8>)>| {
        let inputs = images
            .into_iter()
            .map(|(name, class, data)| ImageInput {
                name: name.into(),
                slot_class: class.into(),
                reader: Box::new(Cursor::new(data)),
            })
            .collect();
        build_bundle_to_vec(&spec, inputs, &[ota_fuzz::test_key()])
            .unwrap()
            .1
    };
    bundles.push((
        "full-one",
        full(vec![("rootfs.img", "rootfs", text(1, 6000))]),
    ));
    bundles.push((
        "full-two",
        full(vec![
            ("rootfs.img", "rootfs", text(2, 3000)),
            ("model.bin", "model", text(3, 700)),
        ]),
    ));
    let v1 = text(4, 24_000);
    let chunked = |data: &[u8], base: Option<&[u8]>| {
        let inputs = vec![SeekableImage {
            name: "rootfs.img".into(),
            slot_class: "rootfs".into(),
            reader: Box::new(Cursor::new(data.to_vec())),
        }];
        let mut base = base.map(|b| BaseBundle::open(Cursor::new(b.to_vec())).unwrap());
        build_chunked_bundle(
            Cursor::new(Vec::new()),
            &spec,
            SMALL_PARAMS,
            inputs,
            base.as_mut(),
            &[ota_fuzz::test_key()],
            |_| {},
        )
        .unwrap()
        .1
        .into_inner()
    };
    let chunked_v1 = chunked(&v1, None);
    let mut v2 = v1.clone();
    v2.splice(9000..9000, text(5, 1500));
    v2[20_000..20_100].fill(b'x');
    let delta_v2 = chunked(&v2, Some(&chunked_v1));
    // The same bundles carrying the test trust chain, signed only by the key its newest root trusts.
    let full_chain = carrying_chain(&bundles[0].1);
    bundles.push(("full-one-chain", full_chain));
    bundles.push(("chunked-chain", carrying_chain(&chunked_v1)));
    bundles.push(("chunked", chunked_v1));
    bundles.push(("chunked-delta", delta_v2));

    let trust = ota_fuzz::trust_root();
    for (name, bundle) in &bundles {
        // Every seed must pass the real reader (through its carried chain, as a robot reads it): a seed the
        // reader refuses teaches the fuzzer nothing past it.
        let head = UnverifiedBundle::read(bundle.as_slice()).unwrap();
        let reached = ota_fuzz::bundle_trust(&trust, head.trust_chain()).unwrap();
        let mut reader = head.verify(&reached).unwrap();
        reader.verify_remaining_images().unwrap();
        reader.finish().unwrap();
        write(&root, "bundle_stream", name, bundle);

        let head = UnverifiedBundle::read(bundle.as_slice()).unwrap();
        let manifest_bytes = head.manifest_bytes().to_vec();
        write(&root, "manifest", name, &manifest_bytes);
        let manifest = head.manifest_unverified().unwrap();
        let layout = BundleLayout::new(
            manifest_bytes.len() as u64,
            head.signatures_len(),
            &manifest,
        );
        // The range client's view: the head and every index, without the payloads.
        let end = layout
            .entries()
            .iter()
            .filter(|(path, _)| path.starts_with("index/"))
            .map(|(_, span)| span.end())
            .max()
            .unwrap_or(layout.head_len());
        write(&root, "bundle_head", name, &bundle[..end as usize]);
        write(
            &root,
            "bundle_head",
            &format!("{name}-short"),
            &bundle[..1024],
        );

        for image in &manifest.images {
            let (Some(info), Some(spans)) = (image.chunked(), layout.image(&manifest, &image.name))
            else {
                continue;
            };
            let index = spans.index.unwrap();
            let mut seed = Vec::new();
            seed.extend_from_slice(&image.size.to_le_bytes());
            seed.extend_from_slice(&image.compressed_size.to_le_bytes());
            seed.extend_from_slice(&info.delta_size.unwrap_or(u64::MAX).to_le_bytes());
            let base_size = info.base.as_ref().map_or(u64::MAX, |b| b.size);
            seed.extend_from_slice(&base_size.to_le_bytes());
            seed.extend_from_slice(&bundle[index.offset as usize..index.end() as usize]);
            write(&root, "chunk_index", name, &seed);
        }
    }

    // Boot environments: never armed, armed, counting down, committed, with other variables beside.
    let envs: Vec<(&str, BTreeMap<String, String>)> = vec![
        ("empty", BTreeMap::new()),
        (
            "primary-a",
            vars(&[("OTA_PRIMARY", "A"), ("OTA_TRIAL", ""), ("OTA_TRIES", "0")]),
        ),
        (
            "trial-b",
            vars(&[("OTA_PRIMARY", "A"), ("OTA_TRIAL", "B"), ("OTA_TRIES", "3")]),
        ),
        (
            "last-try",
            vars(&[("OTA_PRIMARY", "B"), ("OTA_TRIAL", "A"), ("OTA_TRIES", "1")]),
        ),
        (
            "others",
            vars(&[
                ("OTA_PRIMARY", "B"),
                ("bootargs", "console=ttyS0 quiet\\path"),
                ("saved_entry", "ota"),
                ("multi", "line one\nline two"),
            ]),
        ),
    ];
    for (name, vars) in &envs {
        write(&root, "grubenv", name, &grubenv::encode(vars).unwrap());
        write(&root, "statefile", name, &statefile::encode(vars).unwrap());
        let single = vars
            .iter()
            .filter(|(_, v)| !v.contains('\n'))
            .map(|(k, v)| (k.clone(), v.clone()));
        let single: BTreeMap<_, _> = single.collect();
        write(
            &root,
            "uboot_env",
            name,
            &uboot::encode_copy(&single, 512, None).unwrap(),
        );
        let redundant = uboot::encode_copy(&single, 512, Some(7)).unwrap();
        write(&root, "uboot_env", &format!("{name}-redundant"), &redundant);
    }
    let text_env = b"# fw_setenv -f\nOTA_PRIMARY=A\nOTA_TRIAL=\nbootdelay=0\n";
    write(&root, "uboot_env", "text", text_env);

    // Protocol bodies, first byte = the type the targets' `match` picks.
    let enroll = EnrollRequest {
        enrollment_secret: "fleet-secret".into(),
        device_id: "robot-0001".into(),
        compatible: "acme-robot-v2".into(),
        tags: vars(&[("site", "warehouse-3")]),
        request_id: "4f1c2a".into(),
        public_key: Some("ab".repeat(32)),
        challenge: Some("c1.0000019a2b3c4d5e.0123456789abcdef.00".into()),
        signature: Some("cd".repeat(64)),
    };
    let mut poll = PollRequest {
        compatible: "acme-robot-v2".into(),
        current_version: Some("1.2.3".parse().unwrap()),
        booted_slot: Some("A".into()),
        slots: vars(&[("A", "1.2.3"), ("B", "1.2.2")]),
        telemetry: Telemetry {
            battery_percent: Some(81.5),
            uptime_secs: Some(3600),
            ..Telemetry::default()
        },
        ..PollRequest::default()
    };
    poll.telemetry
        .metrics
        .insert("inference_latency_ms".into(), 12.25);
    let report = ReportRequest {
        report_id: "r-1".into(),
        rollout_id: Some(7),
        version: Some("1.2.4".parse().unwrap()),
        manifest_digest: Some("ab".repeat(32)),
        status: ReportStatus::Failure,
        progress_percent: Some(40),
        error: Some("disk full".into()),
        log_tail: Some("line\nline\n".into()),
        reason: None,
    };
    let rollout = CreateRolloutRequest {
        bundle_id: "cd".repeat(32),
        tags: vars(&[("site", "warehouse-3")]),
        stages: Some(vec![5, 25, 100]),
        failure_threshold: Some(0.2),
        name: Some("spring".into()),
        ..CreateRolloutRequest::default()
    };
    let labels = DeviceLabels {
        tags: vars(&[("site", "lab")]),
        group: Some("night-shift".into()),
    };
    let server: Vec<(&str, u8, Vec<u8>)> = vec![
        ("enroll", 0, json(&enroll)),
        ("poll", 1, json(&poll)),
        ("report", 2, json(&report)),
        ("rollout", 3, json(&rollout)),
        ("labels", 4, json(&labels)),
        ("group", 5, json(&GroupSettings::default())),
    ];
    for (name, kind, body) in server {
        write(
            &root,
            "protocol_server",
            name,
            &[&[kind][..], &body].concat(),
        );
    }
    let offer = UpdateOffer {
        rollout_id: 7,
        bundle_id: "ef".repeat(32),
        version: "1.2.4".parse().unwrap(),
        compatible: "acme-robot-v2".into(),
        manifest_digest: "ab".repeat(32),
        size: 123_456,
        download_url: "/api/bundles/x/download".into(),
        install_allowed: true,
        revert: false,
        require_confirmation: false,
        chunked: true,
    };
    let poll_response = PollResponse {
        poll_interval_secs: 60,
        poll_jitter_secs: 30,
        update: Some(offer),
        trust_version: None,
        timestamp: None,
    };
    let client: Vec<(&str, u8, Vec<u8>)> = vec![
        ("poll", 0, json(&poll_response)),
        (
            "enroll",
            1,
            json(&EnrollResponse {
                device_id: "robot-0001".into(),
                token: "t0k3n".into(),
                poll_interval_secs: 60,
                poll_jitter_secs: 30,
            }),
        ),
        (
            "report",
            2,
            json(&ReportResponse {
                accepted: true,
                duplicate: false,
            }),
        ),
        (
            "error",
            3,
            json(&ErrorBody {
                error: "device_id is not enrolled".into(),
            }),
        ),
        ("retry-after", 8, b"120".to_vec()),
    ];
    for (name, kind, body) in client {
        write(
            &root,
            "protocol_client",
            name,
            &[&[kind][..], &body].concat(),
        );
    }
    // Trust chains from the test root: the walk as in `test_chain`, one root alone, and a replay.
    let chain = test_chain();
    let start = ota_fuzz::trust_root();
    assert_eq!(ota_keys::chain::walk(&start, &chain).unwrap().version, 3);
    write(
        &root,
        "trust_chain",
        "chain",
        ota_keys::chain::chain_to_json(&chain).as_bytes(),
    );
    write(
        &root,
        "trust_chain",
        "one-root",
        chain[0].to_json_pretty().as_bytes(),
    );
    let replay = vec![chain[1].clone(), chain[0].clone(), chain[1].clone()];
    write(
        &root,
        "trust_chain",
        "replay",
        ota_keys::chain::chain_to_json(&replay).as_bytes(),
    );

    println!("seed corpus written under {}", root.display());
}

/// A trust chain from the test root (version 0, the first key): a rotation to both keys, then to the second
/// alone; each link signed by the previous root's keys and its own.
fn test_chain() -> Vec<SignedTrustRoot> {
    let [first, second] = ota_fuzz::test_keys();
    let link = |version: u64,
                threshold: u32,
                keys: Vec<ota_keys::PublicKey>,
                signers: &[&ota_keys::SecretKey]| {
        let mut root = SignedTrustRoot::new(TrustRoot::new(version, threshold, keys).unwrap());
        for key in signers {
            root.sign(key);
        }
        root
    };
    vec![
        link(1, 1, vec![first.public_key()], &[&first]),
        link(
            2,
            2,
            vec![first.public_key(), second.public_key()],
            &[&first, &second],
        ),
        link(3, 1, vec![second.public_key()], &[&first, &second]),
    ]
}

/// `bundle` signed by the second test key alone (trusted only by the chain's version 3), carrying the chain.
fn carrying_chain(bundle: &[u8]) -> Vec<u8> {
    let head = UnverifiedBundle::read(bundle).unwrap();
    let [_, second] = ota_fuzz::test_keys();
    let signatures = sign_manifest(head.manifest_bytes(), &[second]);
    rewrite_head(head, Vec::new(), &signatures, &test_chain()).unwrap()
}

/// Text-like content: compressible, with enough entropy for content-defined cuts.
fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "robot ", "wheel ", "lidar ", "motor ", "map ", "slot ", "boot ", "kernel ",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 8) as usize].as_bytes());
        if x.is_multiple_of(13) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}
