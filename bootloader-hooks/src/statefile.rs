//! The `file` backend's text format, for custom bootloaders and tests:
//!
//! ```text
//! # ota boot state v1
//! OTA_PRIMARY=A
//! OTA_TRIAL=
//! OTA_TRIES=0
//! # crc32 1a2b3c4d
//! ```
//!
//! One `NAME=VALUE` line per variable in name order; in values `\` is written `\\` and a
//! newline `\n`. The last line is the CRC32 (lowercase hex) of every byte before it, so a
//! truncated or hand-mangled file is detected instead of silently read as "no trial".

use std::collections::BTreeMap;

use crate::error::CodecError;

/// First line of every state file.
pub const HEADER: &str = "# ota boot state v1\n";
const CRC_PREFIX: &str = "# crc32 ";

fn check_name(name: &str) -> Result<(), CodecError> {
    let ok =
        !name.is_empty() && !name.starts_with('#') && !name.contains(['=', '\n', '\r', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(CodecError::BadVariable {
            name: name.into(),
            detail: "names must be non-empty, not start with '#' and not contain '=', '\\', NUL or line breaks".into(),
        })
    }
}

/// Encodes `vars` as a complete state file.
pub fn encode(vars: &BTreeMap<String, String>) -> Result<Vec<u8>, CodecError> {
    let mut out = String::from(HEADER);
    for (name, value) in vars {
        check_name(name)?;
        if value.contains('\0') {
            return Err(CodecError::BadVariable {
                name: name.clone(),
                detail: "values cannot contain NUL bytes".into(),
            });
        }
        out.push_str(name);
        out.push('=');
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    let crc = crc32fast::hash(out.as_bytes());
    out.push_str(&format!("{CRC_PREFIX}{crc:08x}\n"));
    Ok(out.into_bytes())
}

fn unescape(value: &str, line: usize) -> Result<String, CodecError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => {
                return Err(CodecError::Corrupt(format!(
                    "line {line}: bad escape \\{}",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
}

/// Parses a state file, checking header, CRC and every line.
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, String>, CodecError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| CodecError::Corrupt("not valid UTF-8".into()))?;
    if !text.starts_with(HEADER) {
        return Err(CodecError::Corrupt(format!(
            "first line is not {:?}",
            HEADER.trim_end()
        )));
    }
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| CodecError::Corrupt("truncated: no final newline".into()))?;
    let crc_start = body
        .rfind('\n')
        .map(|i| i + 1)
        .ok_or_else(|| CodecError::Corrupt("no CRC line".into()))?;
    let crc_hex = body[crc_start..]
        .strip_prefix(CRC_PREFIX)
        .filter(|h| h.len() == 8)
        .ok_or_else(|| CodecError::Corrupt("last line is not '# crc32 XXXXXXXX'".into()))?;
    let stored = u32::from_str_radix(crc_hex, 16)
        .map_err(|_| CodecError::Corrupt(format!("bad CRC {crc_hex:?}")))?;
    let actual = crc32fast::hash(&bytes[..crc_start]);
    if stored != actual {
        return Err(CodecError::Corrupt(format!(
            "CRC mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    let mut vars = BTreeMap::new();
    for (i, line) in text[HEADER.len()..crc_start]
        .split_terminator('\n')
        .enumerate()
    {
        let n = i + 2;
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| CodecError::Corrupt(format!("line {n} has no '='")))?;
        check_name(name)
            .map_err(|_| CodecError::Corrupt(format!("line {n}: bad name {name:?}")))?;
        // `encode` refuses NUL in values: a file it could not write again is corrupt, not a state.
        if value.contains('\0') {
            return Err(CodecError::Corrupt(format!(
                "line {n}: NUL byte in the value"
            )));
        }
        vars.insert(name.to_string(), unescape(value, n)?);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let v = crate::env_from_pairs(&[("OTA_TRIAL", ""), ("OTA_PRIMARY", "A"), ("x", "a\\b\nc")]);
        let b = encode(&v).unwrap();
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text
            .starts_with("# ota boot state v1\nOTA_PRIMARY=A\nOTA_TRIAL=\nx=a\\\\b\\nc\n# crc32 "));
        assert_eq!(parse(&b).unwrap(), v);
    }

    #[test]
    fn detects_damage() {
        let v = BTreeMap::from([("OTA_TRIES".to_string(), "3".to_string())]);
        let b = encode(&v).unwrap();
        for cut in 0..b.len() {
            assert!(parse(&b[..cut]).is_err(), "truncated at {cut}");
        }
        let mut flipped = b.clone();
        flipped[HEADER.len() + 10] = b'4';
        assert!(parse(&flipped).is_err());
        assert!(parse(b"# ota boot state v1\nA\n# crc32 00000000\n").is_err());
    }

    /// Found by the `statefile` fuzz target: parse took a NUL in a value that `encode` then refused, so a
    /// state read could not be written back.
    #[test]
    fn refuses_nul_in_a_value_as_encode_does() {
        let mut file = format!("{HEADER}OTA_PRIMARY=# toos 41e207\0\0\n").into_bytes();
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(format!("{CRC_PREFIX}{crc:08x}\n").as_bytes());
        let err = parse(&file).unwrap_err();
        assert!(err.to_string().contains("line 2: NUL byte"), "{err}");
    }

    proptest! {
        #[test]
        fn round_trip(v in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_.]{0,12}", "[ -~\n\r\\\\é]{0,24}", 0..12)) {
            prop_assert_eq!(parse(&encode(&v).unwrap()).unwrap(), v);
        }
    }
}
