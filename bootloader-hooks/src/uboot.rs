//! The U-Boot environment as written by U-Boot's `saveenv` and libubootenv 0.3.x
//! (`fw_printenv`/`fw_setenv`), and the `fw_env.config` file that says where it lives.
//!
//! One copy is `CRC32 (little endian) | [flag byte, redundant only] | data`, where data is
//! `name=value\0` strings, an empty string (`\0`) ending the list, and padding up to the
//! environment size (we pad with `0xff`; `fw_setenv` leaves stray bytes there, which the CRC
//! covers but nobody reads). The CRC covers all of data, padding included.
//!
//! With two copies (redundant mode) the one whose CRC is valid wins; when both are valid
//! the higher flag wins, except that `0` beats `255` (the counter wrapped), and equal flags
//! pick the first copy. A write goes to the other copy with the active flag plus one
//! (wrapping), so a torn write leaves the old copy active. This is exactly what
//! libubootenv 0.3.2 and U-Boot's `env_import_redund` do (checked with the real tools).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{BootEnvError, CodecError};

/// Bytes of the CRC at the start of every copy.
pub const CRC_LEN: usize = 4;

/// Offset of the variable data in a copy: after the CRC, and after the flag byte in
/// redundant mode.
pub fn data_offset(redundant: bool) -> usize {
    if redundant {
        CRC_LEN + 1
    } else {
        CRC_LEN
    }
}

/// What one copy of the environment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    /// Erased flash or zeroed storage: all `0xff` or all `0x00`. Never written.
    Blank,
    /// Fails its CRC or is malformed; `String` says how.
    Invalid(String),
    /// A valid copy.
    Valid {
        /// The flag byte (0 for a single copy).
        flag: u8,
        /// The variables.
        vars: BTreeMap<String, String>,
    },
}

/// Checks that U-Boot can store `name=value` (U-Boot's setenv rules).
fn check_var(name: &str, value: &str) -> Result<(), CodecError> {
    let bad = |detail: &str| {
        Err(CodecError::BadVariable {
            name: name.into(),
            detail: detail.into(),
        })
    };
    if name.is_empty() {
        return bad("empty name");
    }
    if name.contains('=') {
        return bad("names cannot contain '='");
    }
    if name.contains('\0') || value.contains('\0') {
        return bad("names and values cannot contain NUL bytes");
    }
    Ok(())
}

/// Encodes one copy of `env_size` bytes. `flag` is `Some` in redundant mode.
pub fn encode_copy(
    vars: &BTreeMap<String, String>,
    env_size: usize,
    flag: Option<u8>,
) -> Result<Vec<u8>, CodecError> {
    let header = data_offset(flag.is_some());
    let mut data = Vec::new();
    for (name, value) in vars {
        check_var(name, value)?;
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    let capacity = env_size.saturating_sub(header);
    if data.len() > capacity {
        return Err(CodecError::TooLarge {
            needed: data.len(),
            capacity,
        });
    }
    data.resize(capacity, 0xff);
    let mut out = Vec::with_capacity(env_size);
    out.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    if let Some(f) = flag {
        out.push(f);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Decodes one copy (the whole `env_size` bytes read from the device).
pub fn decode_copy(bytes: &[u8], redundant: bool) -> CopyState {
    if bytes.iter().all(|&b| b == 0xff) || bytes.iter().all(|&b| b == 0) {
        return CopyState::Blank;
    }
    let header = data_offset(redundant);
    if bytes.len() <= header {
        return CopyState::Invalid(format!("only {} bytes", bytes.len()));
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[header..];
    let actual = crc32fast::hash(data);
    if stored != actual {
        return CopyState::Invalid(format!(
            "CRC mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    let flag = if redundant { bytes[CRC_LEN] } else { 0 };
    match decode_data(data) {
        Ok(vars) => CopyState::Valid { flag, vars },
        Err(e) => CopyState::Invalid(e),
    }
}

/// Reads `name=value\0` strings up to the empty one, as libubootenv does: strings without
/// `=` are skipped, a later duplicate wins.
fn decode_data(data: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    let mut p = 0;
    loop {
        let Some(len) = data[p..].iter().position(|&b| b == 0) else {
            return Err(format!(
                "variable list is not terminated (string at byte {p} runs to the end)"
            ));
        };
        if len == 0 {
            return Ok(vars);
        }
        let entry = std::str::from_utf8(&data[p..p + len])
            .map_err(|_| format!("variable at data byte {p} is not valid UTF-8"))?;
        if let Some((name, value)) = entry.split_once('=') {
            vars.insert(name.to_string(), value.to_string());
        }
        p += len + 1;
    }
}

/// Which copy is active, by libubootenv's rule (see the module docs); `None` if no copy
/// is valid. `copies` has one or two entries.
pub fn active_copy(copies: &[CopyState]) -> Option<usize> {
    let flag = |i: usize| match copies.get(i) {
        Some(CopyState::Valid { flag, .. }) => Some(*flag),
        _ => None,
    };
    match (flag(0), flag(1)) {
        (None, None) => None,
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (Some(0xff), Some(0)) => Some(1),
        (Some(0), Some(0xff)) => Some(0),
        (Some(f0), Some(f1)) => Some(if f1 > f0 { 1 } else { 0 }),
    }
}

/// The flag to write with the next copy when `active` is the active copy's flag.
pub fn next_flag(active: u8) -> u8 {
    active.wrapping_add(1)
}

/// Parses a default environment in the `fw_setenv -f` / `u-boot-initial-env` text format:
/// `name=value` lines, `#` comments and blank lines ignored, an empty value removes the
/// variable, lines without `=` ignored (as libubootenv does).
pub fn parse_env_text(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            if value.is_empty() {
                vars.remove(name);
            } else {
                vars.insert(name.to_string(), value.to_string());
            }
        }
    }
    vars
}

/// One line of `fw_env.config`: where one copy of the environment lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvDevice {
    /// Device or file holding the copy.
    pub path: PathBuf,
    /// Byte offset of the copy in it.
    pub offset: u64,
    /// Size of the copy in bytes (the environment size, `CONFIG_ENV_SIZE`).
    pub env_size: usize,
    /// Flash erase-sector size, if given (only meaningful for MTD devices).
    pub sector_size: Option<u64>,
    /// Number of sectors, if given (only meaningful for NAND).
    pub sectors: Option<u64>,
}

/// A parsed `fw_env.config`: one device line (single copy) or two (redundant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwEnvConfig {
    /// The copies, in file order (copy 0 first).
    pub devices: Vec<FwEnvDevice>,
}

/// Parses a number the way libubootenv's `%lli` does for the offset, except that a leading
/// `0` (octal to `sscanf`, a classic trap) and negative values are refused.
fn parse_offset(field: &str) -> Result<u64, String> {
    if let Some(hex) = field
        .strip_prefix("0x")
        .or_else(|| field.strip_prefix("0X"))
    {
        return u64::from_str_radix(hex, 16).map_err(|_| format!("bad hex offset {field:?}"));
    }
    if field.starts_with('-') {
        return Err(format!(
            "negative offset {field:?} (counted from the device end) is not supported"
        ));
    }
    if field.len() > 1 && field.starts_with('0') {
        return Err(format!(
            "offset {field:?} has a leading 0, which libubootenv reads as octal: write 0x... or plain decimal"
        ));
    }
    field
        .parse()
        .map_err(|_| format!("bad offset {field:?}: expected 0x-prefixed hex or decimal"))
}

/// Parses a size field: always hexadecimal, with or without `0x`, as libubootenv's `%zx`
/// reads it (so `4000` means 16 KiB, not 4000 bytes).
fn parse_hex(field: &str, what: &str) -> Result<u64, String> {
    let digits = field
        .strip_prefix("0x")
        .or_else(|| field.strip_prefix("0X"))
        .unwrap_or(field);
    u64::from_str_radix(digits, 16).map_err(|_| {
        format!("bad {what} {field:?}: fw_env.config sizes are hexadecimal (e.g. 0x4000)")
    })
}

impl FwEnvConfig {
    /// Parses the text of `fw_env.config`; `path` is only used in error messages.
    ///
    /// Per line: `device offset env_size [sector_size [sectors [disable_lock]]]`, separated
    /// by spaces or tabs; `#` starts a comment. The offset is `0x` hex or decimal, the sizes
    /// are hexadecimal. Stricter than libubootenv, which silently skips lines with fewer
    /// than three fields: here they are an error, as are more than two device lines and
    /// copies of different sizes.
    pub fn parse(text: &str, path: &Path) -> Result<FwEnvConfig, BootEnvError> {
        let mut devices = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |detail: String| BootEnvError::BadConfig {
                path: path.to_path_buf(),
                line,
                detail,
            };
            let fields: Vec<&str> = raw
                .split_whitespace()
                .take_while(|f| !f.starts_with('#'))
                .collect();
            if fields.is_empty() {
                continue;
            }
            if fields.len() < 3 {
                return Err(bad(format!(
                    "expected 'device offset env_size [sector_size [sectors]]', got {raw:?}"
                )));
            }
            if fields.len() > 6 {
                return Err(bad(format!("too many fields in {raw:?}")));
            }
            let offset = parse_offset(fields[1]).map_err(&bad)?;
            let env_size = parse_hex(fields[2], "environment size").map_err(&bad)?;
            let env_size = usize::try_from(env_size)
                .ok()
                .filter(|&s| s > data_offset(true) && s <= 64 << 20)
                .ok_or_else(|| {
                    bad(format!(
                        "environment size {} is out of range (6 bytes to 64 MiB)",
                        fields[2]
                    ))
                })?;
            let sector_size = fields
                .get(3)
                .map(|f| parse_hex(f, "sector size"))
                .transpose()
                .map_err(&bad)?;
            let sectors = fields
                .get(4)
                .map(|f| parse_hex(f, "number of sectors"))
                .transpose()
                .map_err(&bad)?;
            if devices.len() == 2 {
                return Err(bad("more than two device lines (at most two copies)".into()));
            }
            if let Some(first) = devices.first() {
                let first: &FwEnvDevice = first;
                if first.env_size != env_size {
                    return Err(bad(format!(
                        "redundant copies must have the same size ({:#x} and {env_size:#x})",
                        first.env_size
                    )));
                }
            }
            devices.push(FwEnvDevice {
                path: PathBuf::from(fields[0]),
                offset,
                env_size,
                sector_size,
                sectors,
            });
        }
        if devices.is_empty() {
            return Err(BootEnvError::BadConfig {
                path: path.to_path_buf(),
                line: 0,
                detail: "no device line".into(),
            });
        }
        Ok(FwEnvConfig { devices })
    }

    /// Two copies with flag bytes?
    pub fn redundant(&self) -> bool {
        self.devices.len() == 2
    }

    /// The environment size (the same for both copies).
    pub fn env_size(&self) -> usize {
        self.devices[0].env_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env_from_pairs as vars;
    use proptest::prelude::*;

    #[test]
    fn single_copy_layout() {
        let c = encode_copy(&vars(&[("foo", "bar")]), 64, None).unwrap();
        assert_eq!(c.len(), 64);
        assert_eq!(&c[4..13], b"foo=bar\0\0");
        assert!(c[13..].iter().all(|&b| b == 0xff));
        assert_eq!(&c[..4], &crc32fast::hash(&c[4..]).to_le_bytes());
        assert_eq!(
            decode_copy(&c, false),
            CopyState::Valid {
                flag: 0,
                vars: vars(&[("foo", "bar")])
            }
        );
    }

    #[test]
    fn redundant_layout_and_crc() {
        let c = encode_copy(&vars(&[("a", "1")]), 32, Some(7)).unwrap();
        assert_eq!(c[4], 7);
        assert_eq!(&c[..4], &crc32fast::hash(&c[5..]).to_le_bytes());
        let mut bad = c.clone();
        bad[6] ^= 1;
        assert!(matches!(decode_copy(&bad, true), CopyState::Invalid(_)));
        // The flag byte is not covered by the CRC.
        let mut reflag = c.clone();
        reflag[4] = 9;
        assert!(matches!(
            decode_copy(&reflag, true),
            CopyState::Valid { flag: 9, .. }
        ));
    }

    #[test]
    fn blank_copies() {
        assert_eq!(decode_copy(&[0xff; 64], true), CopyState::Blank);
        assert_eq!(decode_copy(&[0; 64], false), CopyState::Blank);
        // An empty but written environment is valid, not blank.
        let c = encode_copy(&BTreeMap::new(), 64, None).unwrap();
        assert_eq!(
            decode_copy(&c, false),
            CopyState::Valid {
                flag: 0,
                vars: BTreeMap::new()
            }
        );
    }

    #[test]
    fn stray_padding_and_entries_without_equals() {
        // what fw_setenv leaves: stray bytes after the terminating empty string
        let mut data = b"baz=qux\0junk\0init=1\0\0init\x001\0\0".to_vec();
        data.resize(60, 0xff);
        let mut c = crc32fast::hash(&data).to_le_bytes().to_vec();
        c.extend_from_slice(&data);
        assert_eq!(
            decode_copy(&c, false),
            CopyState::Valid {
                flag: 0,
                vars: vars(&[("baz", "qux"), ("init", "1")])
            }
        );
    }

    #[test]
    fn unterminated_data_is_invalid() {
        let data = vec![b'a'; 60];
        let mut c = crc32fast::hash(&data).to_le_bytes().to_vec();
        c.extend_from_slice(&data);
        assert!(matches!(decode_copy(&c, false), CopyState::Invalid(_)));
    }

    #[test]
    fn too_large_and_bad_names() {
        assert!(matches!(
            encode_copy(&vars(&[("a", &"x".repeat(100))]), 64, None),
            Err(CodecError::TooLarge {
                needed: 104,
                capacity: 60
            })
        ));
        // exactly full: "a=" + 56 + "\0" + "\0" = 60
        assert!(encode_copy(&vars(&[("a", &"x".repeat(56))]), 64, None).is_ok());
        assert!(encode_copy(&vars(&[("a", &"x".repeat(57))]), 64, None).is_err());
        assert!(encode_copy(&vars(&[("a=b", "1")]), 64, None).is_err());
        assert!(encode_copy(&vars(&[("", "1")]), 64, None).is_err());
        assert!(encode_copy(&vars(&[("a", "1\0")]), 64, None).is_err());
    }

    fn valid(flag: u8) -> CopyState {
        CopyState::Valid {
            flag,
            vars: BTreeMap::new(),
        }
    }

    #[test]
    fn active_copy_matches_libubootenv() {
        // (flag0, flag1) -> active, as measured with fw_printenv 0.3.2
        for (f0, f1, want) in [
            (0, 0, 0),
            (1, 0, 0),
            (0, 1, 1),
            (255, 0, 1),
            (0, 255, 0),
            (254, 255, 1),
            (255, 254, 0),
            (5, 3, 0),
            (3, 5, 1),
            (1, 255, 1),
            (255, 1, 0),
            (128, 0, 0),
            (0, 128, 1),
            (129, 0, 0),
            (0, 129, 1),
        ] {
            assert_eq!(
                active_copy(&[valid(f0), valid(f1)]),
                Some(want),
                "{f0} {f1}"
            );
        }
        assert_eq!(active_copy(&[CopyState::Blank, valid(3)]), Some(1));
        assert_eq!(
            active_copy(&[CopyState::Invalid("x".into()), valid(3)]),
            Some(1)
        );
        assert_eq!(active_copy(&[valid(3), CopyState::Blank]), Some(0));
        assert_eq!(active_copy(&[CopyState::Blank, CopyState::Blank]), None);
        assert_eq!(next_flag(255), 0);
        assert_eq!(next_flag(4), 5);
    }

    #[test]
    fn env_text() {
        let v = parse_env_text("# comment\nbootcmd=run a; run b\r\n\nnoeq\nx=1\nx=\ny=a=b\n");
        assert_eq!(v, vars(&[("bootcmd", "run a; run b"), ("y", "a=b")]));
    }

    #[test]
    fn config_parsing() {
        let p = Path::new("/etc/fw_env.config");
        let c = FwEnvConfig::parse(
            "# Device  offset  size\n/dev/mmcblk0 0x400000 0x4000\n\t/dev/mmcblk0\t4210688 4000 200 # second\n",
            p,
        )
        .unwrap();
        assert!(c.redundant());
        assert_eq!(c.env_size(), 0x4000);
        assert_eq!(c.devices[0].offset, 0x400000);
        assert_eq!(c.devices[1].offset, 4210688);
        assert_eq!(c.devices[1].sector_size, Some(0x200));
        let single = FwEnvConfig::parse("/tmp/env 0 0x2000 0x2000 1\n", p).unwrap();
        assert!(!single.redundant());
        assert_eq!(single.devices[0].sectors, Some(1));
    }

    #[test]
    fn config_errors_name_file_and_line() {
        let p = Path::new("/etc/fw_env.config");
        for (text, line) in [
            ("", 0),
            ("# only comments\n", 0),
            ("/dev/x 0x0\n", 1),
            ("\n/dev/x 010 0x4000\n", 2),
            ("/dev/x -0x4000 0x4000\n", 1),
            ("/dev/x 0 zz\n", 1),
            ("/dev/x 0 0\n", 1),
            ("/dev/x 0 0x4000\n/dev/x 0x4000 0x2000\n", 2),
            ("/a 0 10\n/b 0 10\n/c 0 10\n", 3),
            ("/a 0 10 1 1 0 extra\n", 1),
        ] {
            match FwEnvConfig::parse(text, p) {
                Err(BootEnvError::BadConfig { path, line: l, .. }) => {
                    assert_eq!((path.as_path(), l), (p, line), "{text:?}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let msg = FwEnvConfig::parse("/dev/x 010 0x4000\n", p)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("/etc/fw_env.config:1: "), "{msg}");
    }

    proptest! {
        #[test]
        fn round_trip(
            v in proptest::collection::btree_map("[A-Za-z_.][A-Za-z0-9_]{0,10}", "[ -~]{0,20}", 0..10),
            flag in proptest::option::of(any::<u8>()),
        ) {
            let c = encode_copy(&v, 512, flag).unwrap();
            prop_assert_eq!(c.len(), 512);
            prop_assert_eq!(decode_copy(&c, flag.is_some()), CopyState::Valid { flag: flag.unwrap_or(0), vars: v });
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80), redundant in any::<bool>()) {
            let _ = decode_copy(&bytes, redundant);
        }
    }
}
