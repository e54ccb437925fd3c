//! Release keys kept on a PKCS#11 token (an HSM, a smart card, SoftHSM in tests), named by an RFC 7512 URI.
//!
//! The token signs with CKM_EDDSA over exactly the bytes a PEM key signs, and the key id comes from the token's
//! public key (CKA_EC_POINT) exactly as for a PEM key, so a bundle or root signed on a token is indistinguishable
//! from one signed with the same key in a file. This module holds the URI ([`Pkcs11Uri`]) and the pure decisions
//! (which module, which PIN, which token, is it ed25519); talking to the module (crate feature `pkcs11`, which only
//! the release tools enable, so robots never link a module loader) is in `token`.

mod uri;

#[cfg(feature = "pkcs11")]
mod token;

use std::path::PathBuf;

use zeroize::Zeroizing;

pub use uri::{is_uri, PinSource, Pkcs11Uri, SCHEME};

#[cfg(feature = "pkcs11")]
pub use token::{public_key, Pkcs11Signer};

/// The module to load when the URI has no `module-path=`.
pub const MODULE_ENV: &str = "OTA_PKCS11_MODULE";
/// The user PIN when the URI has neither `pin-value=` nor `pin-source=`.
pub const PIN_ENV: &str = "OTA_PKCS11_PIN";

/// Why a token key could not be used. One line each, naming the token or key and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The URI does not parse or names no key.
    #[error("invalid PKCS#11 URI: {0}")]
    BadUri(String),
    /// Neither the URI nor the environment names a module.
    #[error(
        "no PKCS#11 module: add ?module-path=/path/to/module.so to the URI or set {MODULE_ENV}"
    )]
    NoModule,
    /// The module file is not there.
    #[error("PKCS#11 module {} not found: install the token's module or fix module-path", path.display())]
    ModuleNotFound {
        /// The module path.
        path: PathBuf,
    },
    /// The module is there but does not load or initialise.
    #[error("PKCS#11 module {} cannot be used: {detail}", path.display())]
    Module {
        /// The module path.
        path: PathBuf,
        /// The loader's or the module's complaint.
        detail: String,
    },
    /// No token matches the URI.
    #[error(
        "PKCS#11 token not found: no token matches {wanted} (tokens present: {})",
        list(present)
    )]
    TokenNotFound {
        /// The URI's token attributes.
        wanted: String,
        /// Labels of the tokens the module shows.
        present: Vec<String>,
    },
    /// Several tokens match the URI.
    #[error(
        "{wanted} matches several PKCS#11 tokens ({}): add serial= or slot-id=",
        list(present)
    )]
    AmbiguousToken {
        /// The URI's token attributes.
        wanted: String,
        /// Labels of the matching tokens.
        present: Vec<String>,
    },
    /// A PIN is needed and none was given.
    #[error(
        "no PIN for PKCS#11 token '{token}': add pin-source=file:/PATH or pin-value= to the URI, \
         or set {PIN_ENV}"
    )]
    NoPin {
        /// The token label.
        token: String,
    },
    /// The PIN file could not be read.
    #[error("PIN file {}: {detail}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        detail: String,
    },
    /// The token refused the PIN.
    #[error("wrong PIN for PKCS#11 token '{token}'")]
    WrongPin {
        /// The token label.
        token: String,
    },
    /// Too many wrong PINs: the token no longer accepts the user PIN.
    #[error("the user PIN of PKCS#11 token '{token}' is locked (too many wrong PINs): unlock it with the SO PIN")]
    PinLocked {
        /// The token label.
        token: String,
    },
    /// No (private) key with that label/id on the token.
    #[error("PKCS#11 object not found: no {what} {key} on token '{token}'")]
    ObjectNotFound {
        /// `private key` when signing, `key` when only the public half was looked for.
        what: &'static str,
        /// The URI's key attributes.
        key: String,
        /// The token label.
        token: String,
    },
    /// The private key has no public key object beside it, so its key id cannot be known.
    #[error(
        "PKCS#11 key {key} on token '{token}' has no public key object with the same label/id: \
         import the public key next to it"
    )]
    NoPublicKey {
        /// The URI's key attributes.
        key: String,
        /// The token label.
        token: String,
    },
    /// Several keys match.
    #[error("{key} names {count} private keys on token '{token}': add id= to pick one")]
    AmbiguousObject {
        /// The URI's key attributes.
        key: String,
        /// The token label.
        token: String,
        /// How many matched.
        count: usize,
    },
    /// The key is RSA, P-256, ed448...
    #[error(
        "PKCS#11 key {key} on token '{token}' is not ed25519 ({detail}); release keys are ed25519"
    )]
    NotEd25519 {
        /// The URI's key attributes.
        key: String,
        /// The token label.
        token: String,
        /// What was found instead.
        detail: String,
    },
    /// The token's signature does not verify under its own public key: a broken module or mismatched objects.
    #[error(
        "PKCS#11 key {key} on token '{token}' made a signature its public key does not verify: \
         the public and private objects do not belong together"
    )]
    SignatureMismatch {
        /// The URI's key attributes.
        key: String,
        /// The token label.
        token: String,
    },
    /// Any other failure of a PKCS#11 call.
    #[error("PKCS#11 {call} failed on token '{token}': {detail}")]
    Call {
        /// The PKCS#11 function.
        call: String,
        /// The token label (empty before a token was chosen).
        token: String,
        /// The return value.
        detail: String,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The module to load and where the PIN comes from: the URI's own attributes first, then the environment.
pub fn resolve(
    uri: &Pkcs11Uri,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(PathBuf, Option<PinSource>), Pkcs11Error> {
    let module = match &uri.module_path {
        Some(path) => path.clone(),
        None => env(MODULE_ENV)
            .filter(|m| !m.is_empty())
            .map(PathBuf::from)
            .ok_or(Pkcs11Error::NoModule)?,
    };
    let pin = uri.pin.clone().or_else(|| {
        env(PIN_ENV)
            .filter(|p| !p.is_empty())
            .map(|p| PinSource::Value(Zeroizing::new(p)))
    });
    Ok((module, pin))
}

/// The PIN in a PIN file: its first line, without the line end.
pub fn pin_from_file(content: &[u8]) -> Result<Zeroizing<String>, String> {
    let text = std::str::from_utf8(content).map_err(|_| "not UTF-8 text".to_owned())?;
    let pin = text.split(['\n', '\r']).next().unwrap_or_default();
    if pin.is_empty() {
        return Err("empty: the PIN must be on its first line".to_owned());
    }
    Ok(Zeroizing::new(pin.to_owned()))
}

/// What a slot's token says about itself (labels as the module reports them, padding trimmed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenDesc {
    /// The slot id.
    pub slot: u64,
    /// CKA token label.
    pub label: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
}

/// Whether `token` has every token attribute the URI gives.
pub fn token_matches(uri: &Pkcs11Uri, token: &TokenDesc) -> bool {
    let same = |wanted: &Option<String>, have: &str| {
        wanted
            .as_deref()
            .map_or(true, |w| w.trim_end() == have.trim_end())
    };
    same(&uri.token, &token.label)
        && same(&uri.manufacturer, &token.manufacturer)
        && same(&uri.model, &token.model)
        && same(&uri.serial, &token.serial)
        && uri.slot_id.map_or(true, |s| s == token.slot)
}

/// The one token the URI selects among `tokens`.
pub fn choose_token<'a>(
    uri: &Pkcs11Uri,
    tokens: &'a [TokenDesc],
) -> Result<&'a TokenDesc, Pkcs11Error> {
    let matching: Vec<&TokenDesc> = tokens.iter().filter(|t| token_matches(uri, t)).collect();
    let labels = |ts: &[&TokenDesc]| ts.iter().map(|t| t.label.trim_end().to_owned()).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(Pkcs11Error::TokenNotFound {
            wanted: uri.token_name(),
            present: labels(&tokens.iter().collect::<Vec<_>>()),
        }),
        many => Err(Pkcs11Error::AmbiguousToken {
            wanted: uri.token_name(),
            present: labels(many),
        }),
    }
}

/// DER of OID 1.3.101.112 (id-Ed25519), one of the two CKA_EC_PARAMS spellings PKCS#11 3.0 allows for ed25519.
const ED25519_OID_DER: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519", the other spelling (SoftHSM's).
const EDWARDS25519_DER: &[u8] = b"\x13\x0cedwards25519";

/// Checks that CKA_EC_PARAMS names the ed25519 curve; the error says what it names instead.
pub fn check_ed25519_params(params: &[u8]) -> Result<(), String> {
    if params == ED25519_OID_DER || params == EDWARDS25519_DER {
        return Ok(());
    }
    let named = match params {
        [0x06, 0x03, 0x2b, 0x65, 0x71] => "ed448".to_owned(),
        [0x13, n, rest @ ..] if usize::from(*n) == rest.len() => {
            format!("curve {}", String::from_utf8_lossy(rest))
        }
        _ => format!("curve parameters {}", hex::encode(params)),
    };
    Err(named)
}

/// The 32-byte public key in CKA_EC_POINT: a DER OCTET STRING (PKCS#11 3.0) or, from older modules, the raw bytes.
pub fn ed25519_point(point: &[u8]) -> Result<[u8; 32], String> {
    let raw = match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => {
            return Err(format!(
                "a {}-byte public key point, not a 32-byte ed25519 key",
                point.len()
            ))
        }
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(raw);
    Ok(out)
}

#[cfg(test)]
mod tests;
