//! The manifest: what a bundle contains and the digests its payloads must match. Its exact bytes are what the
//! release keys sign, so it is parsed only after the signatures over those bytes have been checked.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::BundleError;
use crate::FORMAT_VERSION;

/// The only payload kind of format version 1: the whole image, compressed. Chunked and delta payloads will be new
/// kinds, so an old client refuses them by name instead of misreading them.
pub const PAYLOAD_FULL: &str = "full";
/// Content-defined chunks grouped into independently compressed frames, with an index and optional deltas
/// against a named base release (see [`crate::chunked`]).
pub const PAYLOAD_CHUNKED: &str = "chunked";
/// The only compression of format version 1.
pub const COMPRESSION_ZSTD: &str = "zstd";

/// The signed description of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format version; a reader refuses versions it does not know.
    pub format_version: u32,
    /// Release version of the software in the bundle.
    pub version: semver::Version,
    /// Product / hardware string; a robot installs only bundles whose `compatible` equals its own.
    pub compatible: String,
    /// Creation time, seconds since the Unix epoch (`SOURCE_DATE_EPOCH` for reproducible builds). Informational:
    /// robots without an RTC must not judge bundles by their clock.
    pub created: u64,
    /// Free-form release notes.
    #[serde(default)]
    pub description: String,
    /// The lowest version that may ever run on a robot after it committed this bundle: signed, so no
    /// server can forge it, and kept by the robot outside its A/B slots. Absent in most bundles; left
    /// out of the bytes when absent, so bundles without it are byte-identical to those written before
    /// the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_floor: Option<semver::Version>,
    /// The images, in the order their payloads follow the signatures.
    pub images: Vec<ImageEntry>,
}

/// One image in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// File name of the image (also its entry name under `images/`).
    pub name: String,
    /// Which slot pair the image is written to (`rootfs`, `model`, ...).
    pub slot_class: String,
    /// Payload kind; `full` in format version 1.
    pub payload: String,
    /// Compression of the payload; `zstd` in format version 1.
    pub compression: String,
    /// Exact size of the uncompressed image.
    pub size: u64,
    /// Exact size of the compressed payload entry.
    pub compressed_size: u64,
    /// SHA-256 of the compressed payload bytes, lowercase hex: what readers check while streaming.
    pub payload_sha256: String,
    /// SHA-256 of the uncompressed image, lowercase hex: the content's identity, checked by `verify`.
    pub sha256: String,
    /// The index and delta entries of a `chunked` payload; absent (and left out of the bytes) for `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkedInfo>,
}

/// What the manifest signs of a chunked payload: the index entry and the delta entry, by size and digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkedInfo {
    /// Exact size of the `index/<name>` entry.
    pub index_size: u64,
    /// SHA-256 of the index entry, lowercase hex.
    pub index_sha256: String,
    /// Exact size of the `delta/<name>` entry (present iff `base` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_size: Option<u64>,
    /// SHA-256 of the delta entry, lowercase hex (present iff `base` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_sha256: Option<String>,
    /// The release the deltas were computed against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DeltaBase>,
}

/// The base release of a delta: robots whose active slot holds exactly this image use the deltas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaBase {
    /// Bundle id (manifest digest) of the base bundle, as robots record it.
    pub bundle: String,
    /// Version of the base bundle (informational, for people).
    pub version: semver::Version,
    /// Size of the base image.
    pub size: u64,
    /// SHA-256 of the base image, lowercase hex.
    pub sha256: String,
}

impl ImageEntry {
    /// The tar entry path of this image's payload.
    pub fn entry_path(&self) -> String {
        format!("images/{}", self.name)
    }

    /// The tar entry path of a chunked image's index.
    pub fn index_path(&self) -> String {
        format!("index/{}", self.name)
    }

    /// The tar entry path of a chunked image's deltas.
    pub fn delta_path(&self) -> String {
        format!("delta/{}", self.name)
    }

    /// The chunked payload's index and delta facts, for a `chunked` image.
    pub fn chunked(&self) -> Option<&ChunkedInfo> {
        self.chunks
            .as_ref()
            .filter(|_| self.payload == PAYLOAD_CHUNKED)
    }

    /// The expected SHA-256 of the index entry as bytes.
    pub fn index_sha256_bytes(&self) -> Result<[u8; 32], BundleError> {
        let info = self.chunked().ok_or_else(|| {
            BundleError::BadManifest(format!("image '{}' is not chunked", self.name))
        })?;
        digest_bytes(&self.name, "chunks.index_sha256", &info.index_sha256)
    }

    /// The expected SHA-256 of the delta entry as bytes, when the image has deltas.
    pub fn delta_sha256_bytes(&self) -> Result<Option<[u8; 32]>, BundleError> {
        match self.chunked().and_then(|c| c.delta_sha256.as_deref()) {
            Some(hex) => digest_bytes(&self.name, "chunks.delta_sha256", hex).map(Some),
            None => Ok(None),
        }
    }

    /// The expected SHA-256 of the uncompressed content as bytes.
    pub fn sha256_bytes(&self) -> Result<[u8; 32], BundleError> {
        digest_bytes(&self.name, "sha256", &self.sha256)
    }

    /// The expected SHA-256 of the compressed payload as bytes.
    pub fn payload_sha256_bytes(&self) -> Result<[u8; 32], BundleError> {
        digest_bytes(&self.name, "payload_sha256", &self.payload_sha256)
    }
}

/// Decodes a digest field, which must be exactly 64 lowercase hex digits (one spelling per digest keeps the
/// manifest canonical).
fn digest_bytes(image: &str, field: &str, hex_digits: &str) -> Result<[u8; 32], BundleError> {
    let lower_hex = hex_digits.len() == 64
        && hex_digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut out = [0u8; 32];
    if !lower_hex || hex::decode_to_slice(hex_digits, &mut out).is_err() {
        return Err(BundleError::BadManifest(format!(
            "image '{image}': {field} must be 64 lowercase hex digits"
        )));
    }
    Ok(out)
}

impl Manifest {
    /// The canonical bytes of this manifest: what is signed and stored in the bundle. Serialisation of the typed
    /// struct is deterministic (fixed field order), which keeps bundles reproducible.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serialises");
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates manifest bytes. Call this only on bytes whose signatures were verified.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        #[derive(Deserialize)]
        struct VersionProbe {
            format_version: serde_json::Value,
        }
        // Name an unknown format version before complaining about fields a newer format may have added.
        if let Ok(probe) = serde_json::from_slice::<VersionProbe>(bytes) {
            if probe.format_version != FORMAT_VERSION {
                return Err(BundleError::UnsupportedFormatVersion {
                    found: probe.format_version.to_string(),
                    supported: FORMAT_VERSION,
                });
            }
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BundleError::BadManifest(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |msg: String| Err(BundleError::BadManifest(msg));
        if self.format_version != FORMAT_VERSION {
            return Err(BundleError::UnsupportedFormatVersion {
                found: self.format_version.to_string(),
                supported: FORMAT_VERSION,
            });
        }
        if let Err(msg) = validate_compatible(&self.compatible) {
            return bad(msg);
        }
        if let Some(floor) = self.security_floor.as_ref().filter(|f| self.version < **f) {
            return bad(format!(
                "version {} is below the bundle's own security floor {floor}: no robot could ever run it",
                self.version
            ));
        }
        if self.images.is_empty() {
            return bad("the bundle lists no images".into());
        }
        let mut names = HashSet::new();
        let mut classes = HashSet::new();
        for image in &self.images {
            if let Err(msg) = validate_image_name(&image.name) {
                return bad(msg);
            }
            if let Err(msg) = validate_slot_class(&image.slot_class) {
                return bad(msg);
            }
            if !names.insert(image.name.as_str()) {
                return bad(format!("image name '{}' appears twice", image.name));
            }
            if !classes.insert(image.slot_class.as_str()) {
                return bad(format!(
                    "two images target slot class '{}'",
                    image.slot_class
                ));
            }
            match (image.payload.as_str(), &image.chunks) {
                (PAYLOAD_FULL, None) => {}
                (PAYLOAD_CHUNKED, Some(info)) => validate_chunked(image, info)?,
                (PAYLOAD_FULL, Some(_)) => {
                    return bad(format!(
                        "image '{}' is a full payload but lists chunks",
                        image.name
                    ))
                }
                (PAYLOAD_CHUNKED, None) => {
                    return bad(format!(
                        "image '{}' is chunked but its manifest entry has no chunks",
                        image.name
                    ))
                }
                (other, _) => {
                    return bad(format!(
                        "image '{}' has payload kind '{other}', which this version does not support (supported: {PAYLOAD_FULL}, {PAYLOAD_CHUNKED}); update the client",
                        image.name
                    ))
                }
            }
            if image.compression != COMPRESSION_ZSTD {
                return bad(format!(
                    "image '{}' uses compression '{}', which this version does not support (supported: {COMPRESSION_ZSTD})",
                    image.name, image.compression
                ));
            }
            image.payload_sha256_bytes()?;
            image.sha256_bytes()?;
        }
        Ok(())
    }

    /// The image for a slot class, if the bundle has one.
    pub fn image_for_class(&self, slot_class: &str) -> Option<&ImageEntry> {
        self.images.iter().find(|i| i.slot_class == slot_class)
    }
}

/// The rules of a chunked image's manifest entry: both digests well formed, the delta entry present exactly
/// when a base is named, and index sizes that a reader can hold.
fn validate_chunked(image: &ImageEntry, info: &ChunkedInfo) -> Result<(), BundleError> {
    let bad = |msg: String| {
        Err(BundleError::BadManifest(format!(
            "image '{}': {msg}",
            image.name
        )))
    };
    digest_bytes(&image.name, "chunks.index_sha256", &info.index_sha256)?;
    if info.index_size < crate::chunked::HEADER_LEN as u64
        || info.index_size > crate::chunked::MAX_INDEX
    {
        return bad(format!(
            "chunks.index_size {} is outside {}..={}",
            info.index_size,
            crate::chunked::HEADER_LEN,
            crate::chunked::MAX_INDEX
        ));
    }
    match (&info.base, info.delta_size, &info.delta_sha256) {
        (None, None, None) => Ok(()),
        (Some(base), Some(_), Some(sha)) => {
            digest_bytes(&image.name, "chunks.delta_sha256", sha)?;
            digest_bytes(&image.name, "chunks.base.sha256", &base.sha256)?;
            digest_bytes(&image.name, "chunks.base.bundle", &base.bundle)?;
            Ok(())
        }
        _ => bad("chunks.base, chunks.delta_size and chunks.delta_sha256 must be all present or all absent".into()),
    }
}

/// SHA-256 of the exact manifest bytes, lowercase hex: the bundle's identity as robots and the server record it
/// (it covers every payload digest, and unlike a hash of the whole file it does not change when a co-signer adds
/// a signature).
pub fn manifest_digest(manifest_bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(manifest_bytes))
}

/// Image names become file names on extraction and entry names in the archive, so they are kept to a safe,
/// portable alphabet.
pub fn validate_image_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image name '{name}' is not allowed: use 1-100 characters from A-Z a-z 0-9 . _ - + not starting with '.'"
        ))
    }
}

/// Slot classes name config sections and slot pairs.
pub fn validate_slot_class(class: &str) -> Result<(), String> {
    let ok = !class.is_empty()
        && class.len() <= 64
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "slot class '{class}' is not allowed: use 1-64 characters from A-Z a-z 0-9 _ -"
        ))
    }
}

/// A compatible string must be non-empty printable ASCII without spaces at its ends.
pub fn validate_compatible(compatible: &str) -> Result<(), String> {
    let ok = !compatible.is_empty()
        && compatible.len() <= 200
        && compatible
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ')
        && compatible.trim() == compatible;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "compatible string '{compatible}' is not allowed: use 1-200 printable ASCII characters"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            version: semver::Version::new(1, 2, 3),
            compatible: "acme-robot-v2".into(),
            created: 1_700_000_000,
            description: "test".into(),
            security_floor: None,
            images: vec![ImageEntry {
                name: "rootfs.ext4".into(),
                slot_class: "rootfs".into(),
                payload: PAYLOAD_FULL.into(),
                compression: COMPRESSION_ZSTD.into(),
                size: 10,
                compressed_size: 20,
                payload_sha256: "cd".repeat(32),
                sha256: "ab".repeat(32),
                chunks: None,
            }],
        }
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let m = sample();
        let bytes = m.to_bytes();
        assert_eq!(bytes, m.to_bytes());
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn security_floor_is_optional_and_bounds_the_version() {
        let m = sample();
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(
            !text.contains("security_floor"),
            "absent floor written: {text}"
        );
        let mut floored = sample();
        floored.security_floor = Some(semver::Version::new(1, 2, 0));
        let bytes = floored.to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("\"security_floor\": \"1.2.0\""));
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), floored);
        floored.security_floor = Some(semver::Version::new(1, 2, 3));
        assert!(
            Manifest::from_bytes(&floored.to_bytes()).is_ok(),
            "a floor equal to the version is allowed"
        );
        floored.security_floor = Some(semver::Version::new(1, 3, 0));
        let err = Manifest::from_bytes(&floored.to_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("version 1.2.3 is below the bundle's own security floor 1.3.0"),
            "{err}"
        );
    }

    #[test]
    fn unknown_format_version_is_named() {
        let mut m = sample();
        m.format_version = 2;
        let err = Manifest::from_bytes(&m.to_bytes()).unwrap_err();
        assert!(
            matches!(err, BundleError::UnsupportedFormatVersion { ref found, .. } if found == "2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_payload_kinds_are_refused() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let extra = text.replacen(
            "\"compatible\"",
            "\"encrypted\": true,\n  \"compatible\"",
            1,
        );
        assert!(matches!(
            Manifest::from_bytes(extra.as_bytes()),
            Err(BundleError::BadManifest(_))
        ));
        let mut m = sample();
        m.images[0].payload = "delta".into();
        let err = Manifest::from_bytes(&m.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("payload kind 'delta'"), "{err}");
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in ["../etc/passwd", "/abs", ".hidden", "a/b", "", "sp ace"] {
            let mut m = sample();
            m.images[0].name = name.into();
            assert!(
                matches!(
                    Manifest::from_bytes(&m.to_bytes()),
                    Err(BundleError::BadManifest(_))
                ),
                "{name} accepted"
            );
        }
    }

    #[test]
    fn duplicate_images_and_bad_digests_are_refused() {
        let mut m = sample();
        m.images.push(m.images[0].clone());
        assert!(Manifest::from_bytes(&m.to_bytes())
            .unwrap_err()
            .to_string()
            .contains("twice"));
        for (field, bad) in [
            ("sha256", "AB".repeat(32)),
            ("payload_sha256", "ab".repeat(31)),
        ] {
            let mut m = sample();
            if field == "sha256" {
                m.images[0].sha256 = bad;
            } else {
                m.images[0].payload_sha256 = bad;
            }
            let err = Manifest::from_bytes(&m.to_bytes()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{field} must be 64 lowercase hex digits")),
                "{err}"
            );
        }
    }
}
