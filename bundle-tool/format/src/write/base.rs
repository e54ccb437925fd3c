//! The base of a delta bundle: an earlier chunked bundle, opened from any `Read + Seek`. Its signatures are not
//! checked (it is the release engineer's own earlier build), but every byte used is checked against the digest
//! that names it: the index against the manifest, each frame against the index. Base image bytes are read at any
//! offset by decoding the frames that hold them, a few decoded frames kept for the next read.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::chunked::{BundleLayout, ChunkIndex, FrameSpan, IndexLimits, Span, NO_BASE};
use crate::error::BundleError;
use crate::manifest::{manifest_digest, DeltaBase, ImageEntry, Manifest};
use crate::reader::UnverifiedBundle;

/// Decoded frames kept: neighbouring chunks' references mostly fall in the same few frames.
const CACHED_FRAMES: usize = 4;

/// An opened base bundle.
pub struct BaseBundle<R> {
    reader: R,
    manifest: Manifest,
    bundle_id: String,
    layout: BundleLayout,
}

impl<R: Read + Seek> BaseBundle<R> {
    /// Reads the head of the bundle at the start of `reader`.
    pub fn open(mut reader: R) -> Result<Self, BundleError> {
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| BundleError::io("reading the base bundle", e))?;
        let head = UnverifiedBundle::read(&mut reader)?;
        let manifest = head.manifest_unverified()?;
        let layout = BundleLayout::new(
            head.manifest_bytes().len() as u64,
            head.signatures_len(),
            &manifest,
        );
        let bundle_id = manifest_digest(head.manifest_bytes());
        drop(head);
        Ok(BaseBundle {
            reader,
            manifest,
            bundle_id,
            layout,
        })
    }

    /// The base bundle's manifest (unverified).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The base bundle's id (the digest of its manifest bytes).
    pub fn bundle_id(&self) -> &str {
        &self.bundle_id
    }

    /// The image a new image called `name` for `slot_class` is encoded against: the base's image of the same name,
    /// which must be chunked and of the same slot class.
    pub fn entry_for(&self, name: &str, slot_class: &str) -> Result<&ImageEntry, BundleError> {
        let refuse = |why: String| {
            Err(BundleError::Usage(format!(
                "cannot encode image '{name}' against the base bundle {}: {why}",
                self.manifest.version
            )))
        };
        let Some(entry) = self.manifest.images.iter().find(|i| i.name == name) else {
            return refuse("it has no image of that name".into());
        };
        if entry.chunked().is_none() {
            return refuse(format!(
                "its image is a '{}' payload; only a chunked bundle can be a delta base",
                entry.payload
            ));
        }
        if entry.slot_class != slot_class {
            return refuse(format!(
                "its image is for slot class '{}', not '{slot_class}'",
                entry.slot_class
            ));
        }
        Ok(entry)
    }

    /// Opens the base image for a new image `name` of `slot_class`: reads and checks its index.
    pub fn image(&mut self, name: &str, slot_class: &str) -> Result<BaseImage<'_, R>, BundleError> {
        let entry = self.entry_for(name, slot_class)?.clone();
        let info = entry.chunked().expect("checked by entry_for");
        let spans = self
            .layout
            .image(&self.manifest, name)
            .expect("the layout lists every image of its manifest");
        let index_span = spans.index.expect("a chunked image has an index");
        let bytes = read_span(&mut self.reader, index_span, "the base index")?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if digest != entry.index_sha256_bytes()? {
            return Err(BundleError::DigestMismatch {
                image: name.into(),
                what: "index of the base bundle",
                field: "chunks.index_sha256",
                expected: info.index_sha256.clone(),
                actual: hex::encode(digest),
            });
        }
        let index = ChunkIndex::decode(
            &bytes,
            &IndexLimits {
                image_size: entry.size,
                compressed_size: entry.compressed_size,
                delta_size: info.delta_size,
                base_size: info.base.as_ref().map(|b| b.size),
            },
        )?;
        let base = DeltaBase {
            bundle: self.bundle_id.clone(),
            version: self.manifest.version.clone(),
            size: entry.size,
            sha256: entry.sha256.clone(),
        };
        Ok(BaseImage {
            frames: index.frame_spans(),
            index,
            payload: spans.payload,
            base,
            name: name.into(),
            reader: &mut self.reader,
            cache: Vec::new(),
        })
    }
}

/// One image of a base bundle, readable at any offset.
pub struct BaseImage<'a, R> {
    reader: &'a mut R,
    name: String,
    index: ChunkIndex,
    frames: Vec<FrameSpan>,
    payload: Span,
    base: DeltaBase,
    /// Most recently used last.
    cache: Vec<(usize, Vec<u8>)>,
}

impl<R: Read + Seek> BaseImage<'_, R> {
    /// What the new image's manifest entry says of this base.
    pub fn delta_base(&self) -> &DeltaBase {
        &self.base
    }

    /// The base image's size.
    pub fn size(&self) -> u64 {
        self.base.size
    }

    /// The first offset of every chunk digest of the base image.
    pub fn chunk_offsets(&self) -> HashMap<[u8; 32], u64> {
        let mut hints = HashMap::with_capacity(self.index.chunks.len());
        for (chunk, offset) in self.index.chunks.iter().zip(self.index.chunk_offsets()) {
            hints.entry(chunk.sha256).or_insert(offset);
        }
        debug_assert!(hints.values().all(|&o| o != NO_BASE));
        hints
    }

    /// Reads `len` bytes of the base image at `offset` (which must lie inside it).
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, BundleError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.base.size)
        {
            return Err(BundleError::Usage(format!(
                "read of {len} bytes at {offset} past the end of base image '{}'",
                self.name
            )));
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while out.len() < len {
            let frame = self
                .frames
                .partition_point(|f| f.image_offset + f.raw_size <= at);
            let span = self.frames[frame];
            let raw = self.frame(frame)?;
            let from = (at - span.image_offset) as usize;
            let take = (len - out.len()).min(raw.len() - from);
            out.extend_from_slice(&raw[from..from + take]);
            at += take as u64;
        }
        Ok(out)
    }

    /// The decoded frame `i`, from the cache or read, checked and decoded.
    fn frame(&mut self, i: usize) -> Result<&[u8], BundleError> {
        if let Some(pos) = self.cache.iter().position(|(f, _)| *f == i) {
            let hit = self.cache.remove(pos);
            self.cache.push(hit);
        } else {
            let span = self.frames[i];
            let compressed = read_span(
                self.reader,
                Span {
                    offset: self.payload.offset + span.payload_offset,
                    len: span.compressed_size,
                },
                "a frame of the base image",
            )?;
            let digest: [u8; 32] = Sha256::digest(&compressed).into();
            let corrupt = |detail: String| BundleError::CorruptPayload {
                image: self.name.clone(),
                detail: format!("base bundle frame {i}: {detail}"),
            };
            if digest != self.index.frames[i].sha256 {
                return Err(corrupt("its digest differs from the index".into()));
            }
            let raw = zstd::bulk::decompress(&compressed, span.raw_size as usize)
                .map_err(|e| corrupt(e.to_string()))?;
            if raw.len() as u64 != span.raw_size {
                return Err(corrupt(format!(
                    "it decodes to {} bytes, the index says {}",
                    raw.len(),
                    span.raw_size
                )));
            }
            if self.cache.len() == CACHED_FRAMES {
                self.cache.remove(0);
            }
            self.cache.push((i, raw));
        }
        Ok(&self.cache.last().expect("just pushed").1)
    }
}

fn read_span<R: Read + Seek>(
    reader: &mut R,
    span: Span,
    what: &str,
) -> Result<Vec<u8>, BundleError> {
    let mut bytes = vec![0u8; span.len as usize];
    reader
        .seek(SeekFrom::Start(span.offset))
        .and_then(|_| reader.read_exact(&mut bytes))
        .map_err(|e| BundleError::io(format!("reading {what}"), e))?;
    Ok(bytes)
}
