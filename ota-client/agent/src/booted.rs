//! Which slot is running: read at every start, never remembered, because only the kernel
//! command line (set by the bootloader script) knows what actually booted.

use std::path::PathBuf;

use ota_client_core::Slot;

use crate::config::BootedSlotConfig;

/// The booted slot cannot be determined.
#[derive(Debug, thiserror::Error)]
pub enum BootedError {
    /// The file cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// No slot is named.
    #[error("cannot tell which slot is booted: {} {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// What was expected.
        what: &'static str,
    },
}

/// Reads the booted slot as configured.
pub fn detect(config: &BootedSlotConfig) -> Result<Slot, BootedError> {
    let (path, cmdline) = match config {
        BootedSlotConfig::Cmdline(p) => (p, true),
        BootedSlotConfig::File(p) => (p, false),
    };
    let text = std::fs::read_to_string(path).map_err(|error| BootedError::Read {
        path: path.clone(),
        error,
    })?;
    parse(&text, cmdline).ok_or_else(|| BootedError::Missing {
        path: path.clone(),
        what: if cmdline {
            "has no ota.slot=A or ota.slot=B (is the bootloader running the OTA boot script?)"
        } else {
            "does not contain A or B"
        },
    })
}

/// Parses a kernel command line (`ota.slot=X`, last one wins like the kernel) or a file
/// holding just `A` or `B`.
pub fn parse(text: &str, cmdline: bool) -> Option<Slot> {
    if cmdline {
        Slot::from_cmdline(text)
    } else {
        Slot::from_env_value(text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_parsing() {
        assert_eq!(
            parse(
                "BOOT_IMAGE=/vmlinuz root=/dev/x ro ota.slot=B quiet\n",
                true
            ),
            Some(Slot::B)
        );
        assert_eq!(parse("ota.slot=A ota.slot=B", true), Some(Slot::B));
        assert_eq!(parse("root=/dev/x ota.slot=b", true), None);
        assert_eq!(parse("root=/dev/x xota.slot=A", true), None);
        assert_eq!(parse("", true), None);
        assert_eq!(parse("A\n", false), Some(Slot::A));
        assert_eq!(parse(" B ", false), Some(Slot::B));
        assert_eq!(parse("C", false), None);
    }

    #[test]
    fn detection_reads_the_configured_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cmdline");
        std::fs::write(&p, "root=/dev/sda ota.slot=B\n").unwrap();
        assert_eq!(
            detect(&BootedSlotConfig::Cmdline(p.clone())).unwrap(),
            Slot::B
        );
        std::fs::write(&p, "root=/dev/sda\n").unwrap();
        let e = detect(&BootedSlotConfig::Cmdline(p.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ota.slot") && e.contains(&p.display().to_string()),
            "{e}"
        );
        let e = detect(&BootedSlotConfig::File(dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::write(&p, "A\n").unwrap();
        assert_eq!(detect(&BootedSlotConfig::File(p)).unwrap(), Slot::A);
    }
}
