//! Talking to a PKCS#11 module through `cryptoki`: load it, pick the token, log in, find the key pair, sign.
//! Every decision is made by the pure functions of the parent module; this file only carries them out.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::{
    check_ed25519_params, choose_token, ed25519_point, pin_from_file, resolve, PinSource,
    Pkcs11Error, Pkcs11Uri, TokenDesc,
};
use crate::{PublicKey, SignError, Signature, Signer};

/// A release key on a token: a logged-in session and the private key's handle. The public key was read once
/// when opening and every signature is checked against it before it is handed out.
pub struct Pkcs11Signer {
    session: Session,
    key: ObjectHandle,
    public: PublicKey,
    uri: Pkcs11Uri,
    token: String,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11Signer({}, {})", self.uri, self.public.key_id())
    }
}

impl Pkcs11Signer {
    /// Opens the key the URI names, taking the module and PIN from the environment when the URI lacks them.
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, Pkcs11Error> {
        Self::open_with_env(uri, |name| std::env::var(name).ok())
    }

    /// [`open`](Self::open) with the environment given as a lookup.
    pub fn open_with_env(
        uri: &Pkcs11Uri,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Pkcs11Error> {
        let (module, pin) = resolve(uri, env)?;
        let token = Token::open(uri, &module)?;
        token.login(pin.as_ref())?;
        let key = token.find(uri, ObjectClass::PRIVATE_KEY)?;
        token.check_key_type(uri, key)?;
        let public = token.public_key(uri)?;
        Ok(Self {
            session: token.session,
            key,
            public,
            uri: uri.clone(),
            token: token.label,
        })
    }

    fn err(&self, call: &str, error: &CkError) -> Pkcs11Error {
        call_error(call, &self.token, error)
    }
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SignError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let raw = self
            .session
            .sign(&mechanism, self.key, message)
            .map_err(|e| self.err("C_Sign", &e))?;
        let mismatch = || Pkcs11Error::SignatureMismatch {
            key: self.uri.key_name(),
            token: self.token.clone(),
        };
        let sig: [u8; 64] = raw.as_slice().try_into().map_err(|_| mismatch())?;
        let signature = Signature {
            key_id: self.public.key_id(),
            sig,
        };
        self.public
            .verify(message, &signature)
            .map_err(|_| mismatch())?;
        Ok(signature)
    }
}

/// The public key of the key pair the URI names. Logs in only when a PIN is at hand (public objects are usually
/// readable without), so `ota-bundle key-id` works without one.
pub fn public_key(
    uri: &Pkcs11Uri,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PublicKey, Pkcs11Error> {
    let (module, pin) = resolve(uri, env)?;
    let token = Token::open(uri, &module)?;
    if pin.is_some() {
        token.login(pin.as_ref())?;
    }
    token.public_key(uri)
}

fn call_error(call: &str, token: &str, error: &CkError) -> Pkcs11Error {
    let detail = match error {
        CkError::Pkcs11(rv, _) => format!("{rv:?}"),
        other => other.to_string(),
    };
    Pkcs11Error::Call {
        call: call.to_owned(),
        token: token.to_owned(),
        detail,
    }
}

/// A read-only session on the chosen token.
struct Token {
    session: Session,
    label: String,
    protected_path: bool,
}

impl Token {
    fn open(uri: &Pkcs11Uri, module: &Path) -> Result<Self, Pkcs11Error> {
        let context = Pkcs11::new(module).map_err(|e| {
            if module.exists() {
                Pkcs11Error::Module {
                    path: module.to_path_buf(),
                    detail: e.to_string(),
                }
            } else {
                Pkcs11Error::ModuleNotFound {
                    path: module.to_path_buf(),
                }
            }
        })?;
        // A second key from the same module in one process finds it initialised already.
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(())
            | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
            Err(e) => {
                return Err(Pkcs11Error::Module {
                    path: module.to_path_buf(),
                    detail: call_error("C_Initialize", "", &e).to_string(),
                })
            }
        }
        // An uninitialised token (SoftHSM always shows a free one) holds no keys.
        let slots = context
            .get_slots_with_initialized_token()
            .map_err(|e| call_error("C_GetSlotList", "", &e))?;
        let mut tokens = Vec::with_capacity(slots.len());
        for slot in &slots {
            let info = context
                .get_token_info(*slot)
                .map_err(|e| call_error("C_GetTokenInfo", "", &e))?;
            tokens.push((
                TokenDesc {
                    slot: slot.id(),
                    label: info.label().trim_end().to_owned(),
                    manufacturer: info.manufacturer_id().trim_end().to_owned(),
                    model: info.model().trim_end().to_owned(),
                    serial: info.serial_number().trim_end().to_owned(),
                },
                info.protected_authentication_path(),
            ));
        }
        let descs: Vec<TokenDesc> = tokens.iter().map(|(d, _)| d.clone()).collect();
        let chosen = choose_token(uri, &descs)?;
        let (slot, protected_path) = slots
            .iter()
            .zip(&tokens)
            .find(|(_, (d, _))| d == chosen)
            .map(|(slot, (_, protected))| (*slot, *protected))
            .expect("the chosen token is one of the slots");
        let label = chosen.label.clone();
        let session = context
            .open_ro_session(slot)
            .map_err(|e| call_error("C_OpenSession", &label, &e))?;
        Ok(Self {
            session,
            label,
            protected_path,
        })
    }

    fn login(&self, pin: Option<&PinSource>) -> Result<(), Pkcs11Error> {
        let pin = match pin {
            Some(PinSource::Value(value)) => Some(value.clone()),
            Some(PinSource::File(path)) => Some(read_pin(path)?),
            None if self.protected_path => None,
            None => {
                return Err(Pkcs11Error::NoPin {
                    token: self.label.clone(),
                })
            }
        };
        let pin = pin.map(|p| AuthPin::new(p.as_str().into()));
        match self.session.login(UserType::User, pin.as_ref()) {
            // Login is per token and process: a second key of the same token finds it done.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => Err(Pkcs11Error::WrongPin {
                token: self.label.clone(),
            }),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
                token: self.label.clone(),
            }),
            Err(e) => Err(call_error("C_Login", &self.label, &e)),
        }
    }

    /// The one object of `class` the URI's `object=` / `id=` name.
    fn find(&self, uri: &Pkcs11Uri, class: ObjectClass) -> Result<ObjectHandle, Pkcs11Error> {
        let mut template = vec![Attribute::Class(class)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        let found = self
            .session
            .find_objects(&template)
            .map_err(|e| call_error("C_FindObjects", &self.label, &e))?;
        let key = uri.key_name();
        let token = self.label.clone();
        match found.as_slice() {
            [one] => Ok(*one),
            [] if class == ObjectClass::PRIVATE_KEY => Err(Pkcs11Error::ObjectNotFound {
                what: "private key",
                key,
                token,
            }),
            // Only the public half was looked for: "no public key" only when the private one is there.
            [] if self.find(uri, ObjectClass::PRIVATE_KEY).is_ok() => {
                Err(Pkcs11Error::NoPublicKey { key, token })
            }
            [] => Err(Pkcs11Error::ObjectNotFound {
                what: "key",
                key,
                token,
            }),
            many => Err(Pkcs11Error::AmbiguousObject {
                key,
                token,
                count: many.len(),
            }),
        }
    }

    fn not_ed25519(&self, uri: &Pkcs11Uri, detail: String) -> Pkcs11Error {
        Pkcs11Error::NotEd25519 {
            key: uri.key_name(),
            token: self.label.clone(),
            detail,
        }
    }

    fn attributes(
        &self,
        object: ObjectHandle,
        types: &[AttributeType],
    ) -> Result<Vec<Attribute>, Pkcs11Error> {
        self.session
            .get_attributes(object, types)
            .map_err(|e| call_error("C_GetAttributeValue", &self.label, &e))
    }

    fn check_key_type(&self, uri: &Pkcs11Uri, object: ObjectHandle) -> Result<(), Pkcs11Error> {
        for attribute in self.attributes(object, &[AttributeType::KeyType])? {
            if let Attribute::KeyType(kind) = attribute {
                if kind != KeyType::EC_EDWARDS {
                    return Err(self.not_ed25519(uri, format!("key type {kind}")));
                }
            }
        }
        Ok(())
    }

    fn public_key(&self, uri: &Pkcs11Uri) -> Result<PublicKey, Pkcs11Error> {
        let object = self.find(uri, ObjectClass::PUBLIC_KEY)?;
        self.check_key_type(uri, object)?;
        let mut point = None;
        for attribute in
            self.attributes(object, &[AttributeType::EcParams, AttributeType::EcPoint])?
        {
            match attribute {
                Attribute::EcParams(params) => {
                    check_ed25519_params(&params).map_err(|d| self.not_ed25519(uri, d))?
                }
                Attribute::EcPoint(bytes) => point = Some(bytes),
                _ => {}
            }
        }
        let point = point.ok_or_else(|| self.not_ed25519(uri, "no CKA_EC_POINT".to_owned()))?;
        let raw = ed25519_point(&point).map_err(|d| self.not_ed25519(uri, d))?;
        PublicKey::from_bytes(&raw).map_err(|e| self.not_ed25519(uri, e.to_string()))
    }
}

fn read_pin(path: &Path) -> Result<Zeroizing<String>, Pkcs11Error> {
    let content = Zeroizing::new(std::fs::read(path).map_err(|e| Pkcs11Error::PinFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?);
    pin_from_file(&content).map_err(|detail| Pkcs11Error::PinFile {
        path: path.to_path_buf(),
        detail,
    })
}
