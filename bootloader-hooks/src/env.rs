//! What a boot environment store holds, and the trait every store implements.
//!
//! The trait lives with the contract so that anything reading or writing the variables (the
//! client, the script simulator, a test's fault-injecting wrapper) shares one definition; the
//! stores that touch files and devices live in `ota-boot-store`.
//!
//! Every store follows the same rules: a missing/blank environment is
//! [`EnvState::NeverWritten`] (boot A, accept the first update); a damaged one is an error
//! and is never overwritten with defaults; writes are atomic wherever the medium allows.
//! Stores do not lock: the caller serialises load-modify-store cycles.

use std::collections::BTreeMap;

use crate::error::BootEnvError;

/// What a store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvState {
    /// Nothing was ever written (missing file, blank flash, empty grubenv): a factory
    /// image. The bootloader boots slot A.
    NeverWritten,
    /// The variables currently stored.
    Vars(BTreeMap<String, String>),
}

impl EnvState {
    /// The variables, empty when never written.
    pub fn into_vars(self) -> BTreeMap<String, String> {
        match self {
            EnvState::NeverWritten => BTreeMap::new(),
            EnvState::Vars(v) => v,
        }
    }
}

/// A boot environment the OTA client reads and writes.
pub trait EnvStore {
    /// Reads the environment. Corrupt data is an error, never "defaults".
    fn load(&self) -> Result<EnvState, BootEnvError>;
    /// Replaces the whole environment by `vars` (callers keep foreign variables by
    /// loading, changing and storing the full map).
    fn store(&mut self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError>;
    /// A human-readable name for logs ("GRUB environment /boot/grub/grubenv").
    fn describe(&self) -> String;
}

/// An environment from literal `(name, value)` pairs: factory defaults, tools and tests.
pub fn env_from_pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
