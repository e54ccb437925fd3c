//! RFC 7512 PKCS#11 URIs naming one release key on a token, e.g.
//! `pkcs11:token=release;object=release-2026?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin`.
//!
//! Pure: parsing and printing only. Unknown or repeated attributes are refused rather than ignored, so a typo
//! (`objcet=`) never silently selects a different key.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::Pkcs11Error;

/// The scheme every PKCS#11 URI starts with; a `--key` argument starting with it is a token key.
pub const SCHEME: &str = "pkcs11:";

/// Whether `arg` is meant as a PKCS#11 URI (the scheme is case-insensitive) rather than a file name.
pub fn is_uri(arg: &str) -> bool {
    arg.get(..SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(SCHEME))
}

/// Where the user PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-value=`: the PIN itself (handy in CI; a file keeps it out of the process list).
    Value(Zeroizing<String>),
    /// `pin-source=file:/path` (or an absolute path): the file's first line.
    File(PathBuf),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A parsed PKCS#11 URI. Path attributes select the token and the key; query attributes say how to reach them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `manufacturer=`: the token's manufacturer id.
    pub manufacturer: Option<String>,
    /// `model=`: the token's model.
    pub model: Option<String>,
    /// `serial=`: the token's serial number.
    pub serial: Option<String>,
    /// `slot-id=`: the slot, as a decimal number.
    pub slot_id: Option<u64>,
    /// `object=`: the key's label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID bytes (percent-encoded in the URI).
    pub id: Option<Vec<u8>>,
    /// `module-path=`: the PKCS#11 module (shared library) to load.
    pub module_path: Option<PathBuf>,
    /// `pin-value=` or `pin-source=`.
    pub pin: Option<PinSource>,
}

/// Path attributes understood here (`type` is checked, not stored).
const PATH_ATTRS: &[&str] = &[
    "token",
    "manufacturer",
    "model",
    "serial",
    "slot-id",
    "object",
    "id",
    "type",
];
/// Query attributes understood here.
const QUERY_ATTRS: &[&str] = &["module-path", "pin-source", "pin-value"];

fn bad(detail: impl Into<String>) -> Pkcs11Error {
    Pkcs11Error::BadUri(detail.into())
}

/// `%XX` escapes to bytes; every other character stands for itself.
fn percent_decode(value: &str, name: &str) -> Result<Vec<u8>, Pkcs11Error> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "{name}: '%' must be followed by two hex digits (write %25 for '%')"
                    ))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn text(value: &str, name: &str) -> Result<String, Pkcs11Error> {
    String::from_utf8(percent_decode(value, name)?)
        .map_err(|_| bad(format!("{name}: not UTF-8 once decoded")))
}

/// `file:/p`, `file:///p` or an absolute path; anything else (a command, a URL) is refused.
fn pin_file(value: &str) -> Result<PathBuf, Pkcs11Error> {
    let path = value
        .strip_prefix("file://")
        .or_else(|| value.strip_prefix("file:"))
        .unwrap_or(value);
    if !path.starts_with('/') {
        return Err(bad(format!(
            "pin-source={value}: expected file:/ABSOLUTE/PATH of a file holding the PIN"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Splits `name=value` pairs, refusing unknown and repeated names.
fn pairs<'a>(
    part: &'a str,
    separator: char,
    known: &[&str],
    seen: &mut Vec<&'a str>,
) -> Result<Vec<(&'a str, &'a str)>, Pkcs11Error> {
    let mut out = Vec::new();
    for item in part.split(separator).filter(|s| !s.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(bad(format!("'{item}' is not NAME=VALUE")));
        };
        if name == "module-name" {
            return Err(bad(
                "module-name= is not supported: give the module's file with module-path=",
            ));
        }
        if !known.contains(&name) {
            return Err(bad(format!(
                "unknown attribute '{name}' (known: {}; {})",
                PATH_ATTRS.join(", "),
                QUERY_ATTRS.join(", ")
            )));
        }
        if seen.contains(&name) {
            return Err(bad(format!("'{name}' is given twice")));
        }
        seen.push(name);
        out.push((name, value));
    }
    Ok(out)
}

impl Pkcs11Uri {
    /// Parses a URI that names one key: it must have `object=` or `id=`.
    pub fn parse(uri: &str) -> Result<Self, Pkcs11Error> {
        if !is_uri(uri) {
            return Err(bad(format!("does not start with '{SCHEME}'")));
        }
        let rest = &uri[SCHEME.len()..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut seen = Vec::new();
        let mut parsed = Self::default();
        for (name, value) in pairs(path, ';', PATH_ATTRS, &mut seen)? {
            match name {
                "token" => parsed.token = Some(text(value, name)?),
                "manufacturer" => parsed.manufacturer = Some(text(value, name)?),
                "model" => parsed.model = Some(text(value, name)?),
                "serial" => parsed.serial = Some(text(value, name)?),
                "slot-id" => {
                    let n = text(value, name)?;
                    parsed.slot_id = Some(n.parse().map_err(|_| {
                        bad(format!("slot-id={n}: expected a decimal slot number"))
                    })?);
                }
                "object" => parsed.object = Some(text(value, name)?),
                "id" => parsed.id = Some(percent_decode(value, name)?),
                _ => {
                    let kind = text(value, name)?;
                    if kind != "private" && kind != "public" {
                        return Err(bad(format!(
                            "type={kind}: a release key is a key pair (type=private or type=public)"
                        )));
                    }
                }
            }
        }
        for (name, value) in pairs(query, '&', QUERY_ATTRS, &mut seen)? {
            match name {
                "module-path" => parsed.module_path = Some(PathBuf::from(text(value, name)?)),
                "pin-value" => {
                    parsed.pin = Some(PinSource::Value(Zeroizing::new(text(value, name)?)))
                }
                _ => parsed.pin = Some(PinSource::File(pin_file(&text(value, name)?)?)),
            }
        }
        if seen.contains(&"pin-value") && seen.contains(&"pin-source") {
            return Err(bad("give pin-value= or pin-source=, not both"));
        }
        if parsed.object.is_none() && parsed.id.is_none() {
            return Err(bad("names no key: add object=LABEL or id=%XX..."));
        }
        Ok(parsed)
    }

    /// The URI with every attribute (percent-encoded where needed) except a `pin-value`, which is shown as
    /// `pin-value=(hidden)`. Parsing the result of a URI without `pin-value` gives the same URI back.
    pub fn to_uri_string(&self) -> String {
        let mut out = SCHEME.to_owned();
        let mut path = Vec::new();
        let mut push = |name: &str, value: &[u8]| path.push(format!("{name}={}", encode(value)));
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
        ] {
            if let Some(v) = value {
                push(name, v.as_bytes());
            }
        }
        if let Some(slot) = self.slot_id {
            push("slot-id", slot.to_string().as_bytes());
        }
        if let Some(object) = &self.object {
            push("object", object.as_bytes());
        }
        if let Some(id) = &self.id {
            // CKA_ID is binary: every byte escaped, as RFC 7512's examples write it.
            path.push(format!(
                "id={}",
                id.iter().fold(String::new(), |mut s, b| {
                    let _ = write!(s, "%{b:02X}");
                    s
                })
            ));
        }
        out.push_str(&path.join(";"));
        let mut query = Vec::new();
        if let Some(module) = &self.module_path {
            query.push(format!(
                "module-path={}",
                encode(module.as_os_str().as_encoded_bytes())
            ));
        }
        match &self.pin {
            Some(PinSource::File(file)) => query.push(format!(
                "pin-source=file://{}",
                encode(file.as_os_str().as_encoded_bytes())
            )),
            Some(PinSource::Value(_)) => query.push("pin-value=(hidden)".to_owned()),
            None => {}
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }

    /// What selects the key, for messages: `object=release-2026`, `id=%01` or both.
    pub fn key_name(&self) -> String {
        let only = Self {
            object: self.object.clone(),
            id: self.id.clone(),
            ..Self::default()
        };
        only.to_uri_string()[SCHEME.len()..].to_owned()
    }

    /// What selects the token, for messages: `token=release` (or the other token attributes), or `any token`.
    pub fn token_name(&self) -> String {
        let only = Self {
            token: self.token.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            serial: self.serial.clone(),
            slot_id: self.slot_id,
            ..Self::default()
        };
        let text = only.to_uri_string()[SCHEME.len()..].to_owned();
        if text.is_empty() {
            "any token".to_owned()
        } else {
            text
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, `/` and `:` (harmless in both parts).
fn encode(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl fmt::Display for Pkcs11Uri {
    /// The key as an operator names it, without how to reach it: `pkcs11:token=release;object=release-2026`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let only = Self {
            module_path: None,
            pin: None,
            ..self.clone()
        };
        f.write_str(&only.to_uri_string())
    }
}
