//! The bootloader backend: the boot contract variables over one of `ota-boot-store`'s
//! environment stores, chosen once from the configuration.

use std::path::Path;

use ota_boot_store::{GrubEnvFile, StateFile, UBootEnv};
use ota_bootloader::{BootEnv, BootEnvError, EnvState, EnvStore};

use crate::config::BootloaderKind;

/// Reads and writes the boot contract variables.
pub struct BootBackend {
    store: Box<dyn EnvStore + Send>,
}

impl BootBackend {
    /// The backend configured in `[bootloader]`.
    pub fn from_config(kind: &BootloaderKind) -> Result<BootBackend, BootEnvError> {
        let store: Box<dyn EnvStore + Send> = match kind {
            BootloaderKind::Grub { grubenv } => Box::new(GrubEnvFile::new(grubenv)),
            BootloaderKind::File { state_file } => Box::new(StateFile::new(state_file)),
            BootloaderKind::UBoot {
                fw_env_config,
                default_env,
            } => {
                let env = UBootEnv::from_config_file(fw_env_config)?;
                Box::new(match default_env {
                    Some(p) => env.with_default_env_file(Path::new(p))?,
                    None => env,
                })
            }
        };
        Ok(BootBackend { store })
    }

    /// A backend over any store (tests wrap stores to inject faults).
    pub fn with_store(store: Box<dyn EnvStore + Send>) -> BootBackend {
        BootBackend { store }
    }

    /// Reads the contract. A never-written environment reads as primary A, no trial; a
    /// corrupt one is an error (never replaced by defaults).
    pub fn read(&self) -> Result<BootEnv, BootEnvError> {
        let vars = self.store.load()?.into_vars();
        Ok(BootEnv::from_vars(&vars))
    }

    /// Writes the contract variables, keeping every other variable. Re-reads first, so a
    /// corrupt environment is reported instead of overwritten.
    pub fn write(&mut self, new: BootEnv) -> Result<(), BootEnvError> {
        let vars = match self.store.load()? {
            EnvState::NeverWritten => Default::default(),
            EnvState::Vars(v) => v,
        };
        self.store.store(&new.applied_to(&vars))
    }

    /// "GRUB environment /boot/grub/grubenv" etc.
    pub fn describe(&self) -> String {
        self.store.describe()
    }
}
