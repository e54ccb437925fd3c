//! What the VM tests need from the machine: programs, firmware, GRUB's EFI modules, the guest kernel and
//! busybox. Checked with `ota_testkit::tools`, so a missing piece fails the tests under CI, naming it, and
//! prints a loud SKIPPED line elsewhere; nothing passes because QEMU was not there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;

use ota_testkit::tools::{require_all, require_file};

/// OVMF firmware (4 MiB build from Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template, copied per VM.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Programs the image build (`build-image.sh`) and the harness run.
pub const VM_TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "grub-mkstandalone",
    "grub-editenv",
    "grub-script-check",
    "mkfs.vfat",
    "fsck.fat",
    "mmd",
    "mcopy",
    "mdel",
    "mke2fs",
    "sgdisk",
    "cpio",
    "gzip",
    "strip",
];
/// GRUB's x86_64 EFI modules, which `grub-mkstandalone -O x86_64-efi` embeds.
pub const GRUB_EFI_MODULES: &str = "/usr/lib/grub/x86_64-efi/linux.mod";
/// The busybox copied into the guest's initramfs (the static build: the guest has no libc).
pub const BUSYBOX: &str = "/bin/busybox";

/// What `uboot/build-u-boot.sh` (U-Boot from Debian's source package) and the U-Boot image need beyond
/// [`VM_TOOLS`].
pub const UBOOT_TOOLS: &[&str] = &[
    "make", "gcc", "bison", "flex", "swig", "bc", "curl", "xz", "patch", "mkimage",
];

/// Whether everything the VM tests of `board` need is here (see [`vm_tools_present`]); the U-Boot board
/// also needs the tools that build U-Boot (`scripts/install-deps.sh uboot-build`, tried once).
pub fn tools_present(board: crate::Board) -> bool {
    static INSTALL: Once = Once::new();
    if !vm_tools_present() {
        return false;
    }
    match board {
        crate::Board::Grub => true,
        crate::Board::UBoot => {
            INSTALL.call_once(|| install_deps("uboot-build"));
            require_all(UBOOT_TOOLS)
        }
    }
}

/// Whether everything the VM tests need is here, after trying once per process to install it with
/// `scripts/install-deps.sh vm`. What is missing fails the test under CI, naming it, and prints a loud
/// SKIPPED line elsewhere (`ota_testkit::tools`).
pub fn vm_tools_present() -> bool {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| install_deps("vm"));
    let kernel = guest_kernel();
    require_all(VM_TOOLS)
        && require_file(Path::new(OVMF_CODE), "UEFI firmware (apt package ovmf)")
        && require_file(
            Path::new(OVMF_VARS),
            "UEFI variable store template (apt package ovmf)",
        )
        && require_file(
            Path::new(GRUB_EFI_MODULES),
            "GRUB EFI modules (apt package grub-efi-amd64-bin)",
        )
        && require_file(Path::new(BUSYBOX), "busybox (apt package busybox-static)")
        && require_file(&kernel, "the guest kernel (apt package linux-image-amd64)")
}

/// Runs `scripts/install-deps.sh GROUP`; a failure is only noted: the checks after it name what is missing.
fn install_deps(group: &str) {
    let install = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-deps.sh");
    match Command::new(&install)
        .arg(group)
        .stdout(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("note: {} {group} exited with {s}", install.display()),
        Err(e) => eprintln!("note: cannot run {}: {e}", install.display()),
    }
}

/// The kernel `build-image.sh` puts into the slots: `/boot/vmlinuz-$OTA_VM_KVER`, or of the newest
/// version under `/lib/modules` (the script's `ls /lib/modules | sort -V | tail -1`).
pub fn guest_kernel() -> PathBuf {
    let version = std::env::var("OTA_VM_KVER").ok().or_else(|| {
        fs::read_dir("/lib/modules")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by(|a, b| version_order(a, b))
    });
    PathBuf::from(format!("/boot/vmlinuz-{}", version.unwrap_or_default()))
}

/// Compares version strings as `sort -V` does for kernel versions: runs of digits by value, the rest
/// as text.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    /// Digit runs sort before text at the same place; numbers compare by length without leading zeros,
    /// then digit by digit, so no value overflows.
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Part<'a> {
        Number(usize, &'a str),
        Text(&'a str),
    }
    fn parts(mut rest: &str) -> Vec<Part<'_>> {
        let mut out = Vec::new();
        while let Some(c) = rest.chars().next() {
            let digit = c.is_ascii_digit();
            let end = rest
                .find(|ch: char| ch.is_ascii_digit() != digit)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            out.push(if digit {
                let n = run.trim_start_matches('0');
                Part::Number(n.len(), n)
            } else {
                Part::Text(run)
            });
            rest = tail;
        }
        out
    }
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_like_sort_v() {
        use std::cmp::Ordering::*;
        for (a, b, want) in [
            ("6.1.0-9-amd64", "6.1.0-18-amd64", Less),
            ("6.12.1-amd64", "6.9.0-amd64", Greater),
            ("6.1.0-18-amd64", "6.1.0-18-amd64", Equal),
            ("6.1.0-18-amd64", "6.1.0-18-cloud-amd64", Less),
            ("5.10.0-28-amd64", "6.1.0-1-amd64", Less),
        ] {
            assert_eq!(version_order(a, b), want, "{a} vs {b}");
        }
    }
}
