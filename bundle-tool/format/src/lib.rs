//! The OTA bundle format (version 1): types, framing, signing and the verifying stream reader.
//!
//! A bundle is one file, read front to back exactly once:
//!
//! ```text
//! ustar entry "ota-bundle"        "ota-bundle-format 1\n"           names the container version
//! ustar entry "manifest.json"     the manifest, <= 1 MiB            the bytes the release keys sign
//! ustar entry "signatures.json"   {"signatures":[{key_id,sig}]}     ed25519 over the exact manifest bytes,
//!                                 (+ optional "trust_chain":[roots])  and the roots a robot walks first
//! ustar entry "images/<name>"     zstd payload, one per image       in manifest order, sizes as in the manifest
//! two zero blocks, then end of file                                  nothing may follow
//! ```
//!
//! A `chunked` image (see [`chunked`]) has three entries instead of one: `index/<name>` (the chunk index, whose
//! digest the manifest signs), `images/<name>` (independently compressed frames of content-defined chunks) and,
//! when built against a base release, `delta/<name>` (chunks encoded against the base image). Robots that hold
//! most of an image fetch only what they lack, by byte range ([`head`], [`chunked::layout`], [`chunked::plan`]).
//!
//! Because the manifest and its signatures come first, a reader authenticates the manifest before it has read a
//! byte of payload, then checks each payload's exact compressed size, uncompressed size and SHA-256 while it
//! streams. The reader accepts only this exact entry sequence: no links, no tar extensions, no extra, missing,
//! duplicate or reordered entries, no trailing bytes. See `docs/bundle-format.md` for the normative description.
//!
//! This crate does no file or network I/O of its own: it reads from any `Read` and writes to any `Write`, so the
//! client streams an HTTP body straight into a partition through it and the server checks uploads with it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chunked;
pub mod error;
pub mod framing;
mod hash_thread;
pub mod head;
pub mod manifest;
pub mod reader;
pub mod trust_chain;
pub mod write;
pub mod writer;

pub use error::BundleError;
pub use manifest::{manifest_digest, ChunkedInfo, DeltaBase, ImageEntry, Manifest};
pub use reader::{BundleReader, ImageReader, UnverifiedBundle};
pub use writer::{
    build_bundle, build_bundle_signed, build_bundle_to_vec, build_chunked_bundle,
    build_chunked_bundle_signed, compress_image, rewrite_head, sign_manifest, BundleSpec,
    BundleWriter, ImageInput, ReadSeek, SeekableImage, Signing,
};

/// The bundle format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Default zstd level. Robots download over slow, metered links while bundles are built once on a build server:
/// level 19 makes payloads about a quarter smaller than level 3 (18 % vs 25 % of a typical rootfs) while robots
/// decode it nearly as fast and with an 8 MiB window, well inside the client's memory budget.
pub const DEFAULT_LEVEL: i32 = 19;
