//! A bundle file opened for random access, as `info` and `download-size` look at it: the head (read, not
//! authenticated), where every entry lies, and each chunked image's index checked against the manifest's digest
//! (the same check the robot makes), read by offset instead of streaming the whole file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ota_bundle_format::chunked::{BundleLayout, ChunkIndex, ImageSpans, Span};
use ota_bundle_format::reader::verify_index;
use ota_bundle_format::{manifest_digest, ImageEntry, Manifest, UnverifiedBundle};
use ota_keys::SignedTrustRoot;

use super::describe;

/// An opened bundle file.
pub struct BundleFile {
    path: PathBuf,
    file: File,
    /// The manifest (unverified).
    pub manifest: Manifest,
    /// The bundle id: SHA-256 of the manifest bytes.
    pub bundle_id: String,
    /// Where every entry lies.
    pub layout: BundleLayout,
    /// Length of the head (format marker, manifest, signatures).
    pub head_len: u64,
    /// Length of the file.
    pub len: u64,
    /// Key ids of the signatures (unchecked).
    pub key_ids: Vec<String>,
    /// The trust chain the bundle carries (not walked).
    pub trust_chain: Vec<SignedTrustRoot>,
}

impl BundleFile {
    /// Reads the head of the bundle at `path`.
    pub fn open(path: &Path) -> Result<BundleFile> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open bundle {}", path.display()))?;
        let len = file.metadata()?.len();
        let (manifest, manifest_bytes, signatures_len, head_len, key_ids, trust_chain) = {
            let head =
                UnverifiedBundle::read(BufReader::new(&mut file)).map_err(|e| describe(path, e))?;
            let manifest = head.manifest_unverified().map_err(|e| describe(path, e))?;
            let key_ids = head
                .signatures()
                .iter()
                .map(|s| s.key_id.to_string())
                .collect();
            (
                manifest,
                head.manifest_bytes().to_vec(),
                head.signatures_len(),
                head.position(),
                key_ids,
                head.trust_chain().to_vec(),
            )
        };
        let layout = BundleLayout::new(manifest_bytes.len() as u64, signatures_len, &manifest);
        Ok(BundleFile {
            path: path.to_path_buf(),
            file,
            bundle_id: manifest_digest(&manifest_bytes),
            manifest,
            layout,
            head_len,
            len,
            key_ids,
            trust_chain,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries of image `image`.
    pub fn spans(&self, image: &ImageEntry) -> ImageSpans {
        self.layout
            .image(&self.manifest, &image.name)
            .expect("the layout lists every image of its manifest")
    }

    /// The bytes of one span of the file.
    fn read_span(&mut self, span: Span) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; span.len as usize];
        self.file
            .seek(SeekFrom::Start(span.offset))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .with_context(|| {
                format!(
                    "{}: cannot read bytes {}..{} (is the file truncated?)",
                    self.path.display(),
                    span.offset,
                    span.end()
                )
            })?;
        Ok(bytes)
    }

    /// A chunked image's index, checked against the manifest; `None` for a full payload.
    pub fn index(&mut self, image: &ImageEntry) -> Result<Option<ChunkIndex>> {
        let Some(span) = self
            .spans(image)
            .index
            .filter(|_| image.chunked().is_some())
        else {
            return Ok(None);
        };
        let bytes = self.read_span(span)?;
        let index = verify_index(image, &bytes).map_err(|e| describe(&self.path, e))?;
        Ok(Some(index))
    }

    /// A reader of an image's compressed payload (frames, or the full zstd stream: both decode as one stream).
    pub fn payload(&mut self, image: &ImageEntry) -> Result<impl Read + '_> {
        let span = self.spans(image).payload;
        self.file.seek(SeekFrom::Start(span.offset))?;
        Ok(BufReader::with_capacity(
            1 << 20,
            (&mut self.file).take(span.len),
        ))
    }
}
