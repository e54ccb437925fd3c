//! `--key` arguments, in one place for every subcommand: a PEM key file, or a key on a PKCS#11 token named by an
//! RFC 7512 URI (`pkcs11:token=release;object=release-2026?module-path=...&pin-source=file:...`; without
//! `module-path` / a PIN, `OTA_PKCS11_MODULE` / `OTA_PKCS11_PIN` are used). A file whose name starts with
//! `pkcs11:` is written `./pkcs11:...`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser;
use ota_keys::pkcs11::{self, Pkcs11Error, Pkcs11Signer, Pkcs11Uri};
use ota_keys::{PublicKey, SecretKey, Signer};

/// A key as the command line names it.
#[derive(Clone, Debug)]
pub enum KeySpec {
    /// A PEM file: a PKCS#8 secret key or, where only the public half is needed, a SubjectPublicKeyInfo.
    File(PathBuf),
    /// A key pair on a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
}

impl KeySpec {
    /// A `pkcs11:` argument is parsed as a URI (so a malformed one is refused before any work); anything else is a
    /// file path.
    pub fn parse(arg: &OsStr) -> Result<Self, Pkcs11Error> {
        match arg.to_str() {
            Some(text) if pkcs11::is_uri(text) => Ok(Self::Pkcs11(Pkcs11Uri::parse(text)?)),
            _ => Ok(Self::File(PathBuf::from(arg))),
        }
    }

    /// Something that signs with this key: the secret key read from the file, or a logged-in token session.
    pub fn signer(&self) -> Result<Box<dyn Signer>> {
        Ok(match self {
            Self::File(path) => Box::new(ota_keys::load_secret_key(path)?),
            Self::Pkcs11(uri) => Box::new(Pkcs11Signer::open(uri)?),
        })
    }

    /// The public half: from a secret or public PEM file, or the token's public key object (no PIN needed
    /// unless the token hides it).
    pub fn public_key(&self) -> Result<PublicKey> {
        match self {
            Self::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let at = || path.display().to_string();
                if text.contains("PRIVATE KEY") {
                    Ok(SecretKey::from_pem(&text).with_context(at)?.public_key())
                } else if text.contains("PUBLIC KEY") {
                    Ok(PublicKey::from_pem(&text).with_context(at)?)
                } else {
                    bail!("{}: not a PEM key file", path.display())
                }
            }
            Self::Pkcs11(uri) => Ok(pkcs11::public_key(uri, |name| std::env::var(name).ok())?),
        }
    }
}

/// The clap parser of a `--key` value (keeps non-UTF-8 file names working).
pub fn value_parser() -> impl TypedValueParser<Value = KeySpec> {
    clap::builder::OsStringValueParser::new().try_map(|arg: OsString| KeySpec::parse(&arg))
}

/// Opens every key before any work starts, so a wrong PIN or a missing key stops the command at once.
pub fn signers(keys: &[KeySpec]) -> Result<Vec<Box<dyn Signer>>> {
    keys.iter().map(KeySpec::signer).collect()
}
