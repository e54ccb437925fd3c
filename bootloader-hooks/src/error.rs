//! The one error type of the boot environment, shared by the codecs here and the stores in
//! `ota-boot-store`: every message names the file or device it is about, because the operator
//! reading it is usually looking at a robot's journal, not the code.

use std::path::PathBuf;

/// Why a boot environment could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum BootEnvError {
    /// An I/O call failed on `path`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing ("reading", "writing", "renaming", ...).
        op: &'static str,
        /// The file, directory or device.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The stored data fails its own consistency checks (size, header, CRC, syntax).
    /// Never repaired automatically: a rewrite with defaults could wipe boot variables.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// What is corrupt, naming the file or device.
        what: String,
        /// What exactly is wrong with it.
        detail: String,
    },
    /// The variables do not fit into the fixed-size environment.
    #[error("{what}: variables need {needed} bytes but only {capacity} are available")]
    TooLarge {
        /// The environment, naming the file or device.
        what: String,
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes the environment can hold.
        capacity: usize,
    },
    /// A configuration file (such as `fw_env.config`) is malformed.
    #[error("{}:{line}: {detail}", path.display())]
    BadConfig {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line number (0 when the problem is the file as a whole).
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// A variable name or value cannot be stored in this environment format.
    #[error("{what}: cannot store variable {name:?}: {detail}")]
    BadVariable {
        /// The environment format or file.
        what: String,
        /// The variable name.
        name: String,
        /// Why not (e.g. it contains '=' or a NUL byte).
        detail: String,
    },
    /// Writing a U-Boot environment that was never written needs the board's default
    /// environment: U-Boot replaces its built-in defaults (bootcmd, ...) by whatever the
    /// stored copy contains, so a copy holding only our variables would stop the board.
    #[error(
        "{what} was never written and no default environment is configured; \
         writing only the OTA variables would replace U-Boot's built-in defaults \
         (bootcmd, ...): configure the board's default environment (u-boot-initial-env)"
    )]
    NoDefaultEnv {
        /// The environment device.
        what: String,
    },
    /// The environment lives on a device type this crate does not write.
    #[error("{}: {detail}", path.display())]
    Unsupported {
        /// The device.
        path: PathBuf,
        /// Why and what to use instead.
        detail: String,
    },
}

impl BootEnvError {
    /// Shorthand for [`BootEnvError::Io`] (for the stores).
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BootEnvError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`BootEnvError::Corrupt`] (for the stores).
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        BootEnvError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// A format error found by one of the pure codecs; the store that called the codec
/// turns it into a [`BootEnvError`] naming the file ([`CodecError::context`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid encoding.
    #[error("{0}")]
    Corrupt(String),
    /// The variables do not fit.
    #[error("variables need {needed} bytes but only {capacity} are available")]
    TooLarge {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
    /// A name or value the format cannot represent.
    #[error("cannot store variable {name:?}: {detail}")]
    BadVariable {
        /// The variable name.
        name: String,
        /// Why not.
        detail: String,
    },
}

impl CodecError {
    /// Names the environment (`what`, e.g. "GRUB environment /boot/grub/grubenv").
    pub fn context(self, what: impl Into<String>) -> BootEnvError {
        let what = what.into();
        match self {
            CodecError::Corrupt(detail) => BootEnvError::Corrupt { what, detail },
            CodecError::TooLarge { needed, capacity } => BootEnvError::TooLarge {
                what,
                needed,
                capacity,
            },
            CodecError::BadVariable { name, detail } => {
                BootEnvError::BadVariable { what, name, detail }
            }
        }
    }
}
