//! What the agent's tests share beyond the test kit's robots (`ota_testkit::robot`): a small
//! misbehaving HTTP server ([`http`]), simulated power cuts ([`cut`]) and a bundle served by the kit's server
//! behind its proxy ([`served`]).

pub mod cut;
pub mod http;
pub mod served;

use std::io::Cursor;

use ota_bundle_format::chunked::ChunkParams;
use ota_bundle_format::write::BaseBundle;
use ota_bundle_format::{build_chunked_bundle, BundleSpec, SeekableImage};
use ota_keys::SecretKey;
use ota_testkit::robot::{release_key, COMPATIBLE};

/// A chunked bundle of `version` with `rootfs` (against `base`'s image when given), signed by the release key.
pub fn chunked_bundle(
    version: &str,
    rootfs: &[u8],
    base: Option<&[u8]>,
    params: ChunkParams,
) -> Vec<u8> {
    let spec = BundleSpec {
        version: version.parse().unwrap(),
        compatible: COMPATIBLE.into(),
        created: 1_700_000_000,
        description: String::new(),
        security_floor: None,
        level: 3,
        workers: 1,
    };
    let images = vec![SeekableImage {
        name: "rootfs.img".into(),
        slot_class: "rootfs".into(),
        reader: Box::new(Cursor::new(rootfs.to_vec())),
    }];
    let mut base = base.map(|b| BaseBundle::open(Cursor::new(b.to_vec())).expect("a base bundle"));
    let key = SecretKey::from_pem(&release_key().to_pem()).unwrap();
    let (_, out) = build_chunked_bundle(
        Cursor::new(Vec::new()),
        &spec,
        params,
        images,
        base.as_mut(),
        &[key],
        |_| {},
    )
    .expect("the bundle builds");
    out.into_inner()
}
