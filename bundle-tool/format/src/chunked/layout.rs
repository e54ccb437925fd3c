//! Where each entry's data lies in a bundle file. The container is canonical (fixed headers, fixed order, zero
//! padding to 512 bytes), so the offsets follow from the manifest and the signature block's length alone: a
//! robot that fetched and verified the head of a bundle can ask for any entry by byte range.

use crate::framing::{
    format_marker, padding_len, BLOCK, FORMAT_ENTRY, MANIFEST_ENTRY, SIGNATURES_ENTRY,
};
use crate::manifest::Manifest;

/// A byte range of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Span {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The entries of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpans {
    /// `index/<name>` (chunked images only).
    pub index: Option<Span>,
    /// `images/<name>`: the payload.
    pub payload: Span,
    /// `delta/<name>` (chunked images with a base only).
    pub delta: Option<Span>,
}

/// Every entry's data span, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleLayout {
    entries: Vec<(String, Span)>,
    total: u64,
}

impl BundleLayout {
    /// The layout of a bundle with this manifest (of `manifest_len` bytes) and a signature block of
    /// `signatures_len` bytes.
    pub fn new(manifest_len: u64, signatures_len: u64, manifest: &Manifest) -> BundleLayout {
        let mut sizes = vec![
            (FORMAT_ENTRY.to_string(), format_marker().len() as u64),
            (MANIFEST_ENTRY.to_string(), manifest_len),
            (SIGNATURES_ENTRY.to_string(), signatures_len),
        ];
        for image in &manifest.images {
            match image.chunked() {
                Some(info) => {
                    sizes.push((image.index_path(), info.index_size));
                    sizes.push((image.entry_path(), image.compressed_size));
                    if let Some(delta) = info.delta_size {
                        sizes.push((image.delta_path(), delta));
                    }
                }
                None => sizes.push((image.entry_path(), image.compressed_size)),
            }
        }
        let mut at = 0u64;
        let entries = sizes
            .into_iter()
            .map(|(path, len)| {
                let span = Span {
                    offset: at + BLOCK as u64,
                    len,
                };
                at = span.end() + padding_len(len) as u64;
                (path, span)
            })
            .collect();
        BundleLayout {
            entries,
            total: at + 2 * BLOCK as u64,
        }
    }

    /// Every entry's path and data span, in file order.
    pub fn entries(&self) -> &[(String, Span)] {
        &self.entries
    }

    /// The data span of an entry.
    pub fn entry(&self, path: &str) -> Option<Span> {
        self.entries
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, s)| *s)
    }

    /// The entries of the image called `name`.
    pub fn image(&self, manifest: &Manifest, name: &str) -> Option<ImageSpans> {
        let image = manifest.images.iter().find(|i| i.name == name)?;
        Some(ImageSpans {
            index: self.entry(&image.index_path()),
            payload: self.entry(&image.entry_path())?,
            delta: self.entry(&image.delta_path()),
        })
    }

    /// Length of the whole bundle file.
    pub fn total_len(&self) -> u64 {
        self.total
    }

    /// Where the payloads start: everything before is the head a robot fetches first.
    pub fn head_len(&self) -> u64 {
        self.entries
            .get(3)
            .map_or(self.total, |(_, s)| s.offset - BLOCK as u64)
    }
}
