//! The container: a strict subset of POSIX ustar, so `tar tvf bundle.otab` works for a curious human, while the
//! reader accepts only the one exact entry sequence this format defines (no links, no extensions, no reordering).

use crate::error::BundleError;
use crate::FORMAT_VERSION;

/// Tar block size.
pub const BLOCK: usize = 512;
/// First entry: names the container format so an old reader can say "unsupported version" instead of guessing.
pub const FORMAT_ENTRY: &str = "ota-bundle";
/// Second entry: the signed manifest.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Third entry: the signatures over the manifest bytes.
pub const SIGNATURES_ENTRY: &str = "signatures.json";
/// Upper bound of the format entry.
pub const MAX_FORMAT_ENTRY_LEN: u64 = 64;
/// Upper bound of the manifest, read into memory before anything is trusted.
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;
/// Upper bound of the signature block: the signatures and a carried trust chain of up to
/// [`crate::trust_chain::MAX_CHAIN_ROOTS`] roots (a root of a few keys takes 1-2 KiB).
pub const MAX_SIGNATURES_LEN: u64 = 256 << 10;

/// Content of the format entry.
pub fn format_marker() -> Vec<u8> {
    format!("ota-bundle-format {FORMAT_VERSION}\n").into_bytes()
}

/// Checks the format entry's content.
pub fn check_format_marker(content: &[u8]) -> Result<(), BundleError> {
    let text = std::str::from_utf8(content)
        .map_err(|_| BundleError::NotABundle("format entry is not text".into()))?;
    let version = text
        .strip_prefix("ota-bundle-format ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .ok_or_else(|| BundleError::NotABundle("format entry is malformed".into()))?;
    if version != FORMAT_VERSION.to_string() {
        return Err(BundleError::UnsupportedFormatVersion {
            found: version.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Bytes of zero padding after an entry of `size` bytes.
pub fn padding_len(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// A deterministic ustar header: owner root, mode 0644, fixed mtime, no user or group names.
pub fn entry_header(path: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], BundleError> {
    let mut header = tar::Header::new_ustar();
    header
        .set_path(path)
        .map_err(|e| BundleError::Usage(format!("entry path '{path}': {e}")))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut block = [0u8; BLOCK];
    block.copy_from_slice(header.as_bytes());
    Ok(block)
}

/// A regular-file entry as the reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Entry path.
    pub path: String,
    /// Content size.
    pub size: u64,
}

/// Parses a header block at `offset`. `Ok(None)` is an all-zero block (end of archive).
pub fn parse_header(block: &[u8; BLOCK], offset: u64) -> Result<Option<EntryHeader>, BundleError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let corrupt = |detail: String| BundleError::CorruptHeader { offset, detail };
    let header = tar::Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|_| corrupt("unreadable checksum field".into()))?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err(corrupt(format!(
            "checksum {stored} does not match the header's bytes ({computed})"
        )));
    }
    if header.as_ustar().is_none() {
        return Err(corrupt("not a POSIX ustar header".into()));
    }
    let path = String::from_utf8(header.path_bytes().into_owned())
        .map_err(|_| corrupt("entry path is not UTF-8".into()))?;
    let kind = header.entry_type();
    let kind_name = match kind {
        tar::EntryType::Regular => None,
        tar::EntryType::Symlink => Some("symbolic link"),
        tar::EntryType::Link => Some("hard link"),
        tar::EntryType::Directory => Some("directory"),
        tar::EntryType::Char | tar::EntryType::Block => Some("device node"),
        tar::EntryType::Fifo => Some("FIFO"),
        tar::EntryType::XHeader
        | tar::EntryType::XGlobalHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => Some("tar extension header"),
        _ => Some("non-regular entry"),
    };
    if path_escapes(&path) {
        return Err(BundleError::PathTraversal { path });
    }
    if let Some(kind) = kind_name {
        return Err(BundleError::NotARegularFile {
            path,
            kind: kind.to_string(),
        });
    }
    let size = header
        .size()
        .map_err(|_| corrupt(format!("entry '{path}' has an unreadable size field")))?;
    let mtime = header
        .mtime()
        .map_err(|_| corrupt(format!("entry '{path}' has an unreadable mtime field")))?;
    // Only this format's writer makes bundles, and it writes one canonical header per (path, size, mtime). Any
    // other byte (a stray terminator in the checksum field, an owner name) means the header was altered.
    if entry_header(&path, size, mtime)?.as_slice() != block.as_slice() {
        return Err(corrupt(format!(
            "header of entry '{path}' is not in the canonical form this format writes"
        )));
    }
    Ok(Some(EntryHeader { path, size }))
}

/// True for paths that are absolute or climb with `..`.
pub fn path_escapes(path: &str) -> bool {
    path.starts_with('/') || path.split(['/', '\\']).any(|part| part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let block = entry_header(MANIFEST_ENTRY, 1234, 99).unwrap();
        let parsed = parse_header(&block, 0).unwrap().unwrap();
        assert_eq!(
            parsed,
            EntryHeader {
                path: MANIFEST_ENTRY.into(),
                size: 1234
            }
        );
    }

    #[test]
    fn checksum_is_enforced() {
        let mut block = entry_header(MANIFEST_ENTRY, 1234, 99).unwrap();
        block[0] ^= 1;
        assert!(matches!(
            parse_header(&block, 512),
            Err(BundleError::CorruptHeader { offset: 512, .. })
        ));
    }

    #[test]
    fn links_and_traversal_are_refused() {
        let mut header = tar::Header::new_ustar();
        header.set_path("images/rootfs").unwrap();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_link_name("/dev/sda").unwrap();
        header.set_cksum();
        let block: [u8; BLOCK] = header.as_bytes().to_owned();
        assert!(matches!(
            parse_header(&block, 0),
            Err(BundleError::NotARegularFile { .. })
        ));

        let mut block = [0u8; BLOCK];
        block.copy_from_slice(entry_header("images/x", 1, 0).unwrap().as_slice());
        // tar::Header::set_path refuses "..", so forge the name field directly.
        block[..16].copy_from_slice(b"../../etc/passwd");
        let header = tar::Header::from_byte_slice(&block);
        let mut header = header.clone();
        header.set_cksum();
        let forged: [u8; BLOCK] = header.as_bytes().to_owned();
        assert!(matches!(
            parse_header(&forged, 0),
            Err(BundleError::PathTraversal { .. })
        ));
    }

    #[test]
    fn format_marker_versions() {
        check_format_marker(&format_marker()).unwrap();
        assert!(matches!(
            check_format_marker(b"ota-bundle-format 7\n"),
            Err(BundleError::UnsupportedFormatVersion { .. })
        ));
        assert!(matches!(
            check_format_marker(b"hello"),
            Err(BundleError::NotABundle(_))
        ));
    }
}
