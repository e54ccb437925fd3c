//! The test kit: what the tests, the demo and the benchmarks share. No product binary links it.
//!
//! * [`tools`]: outside tools a test needs (grub-editenv, openssl, QEMU, Chromium...): a test fails naming the
//!   tool when `CI` is set, and prints a loud SKIPPED line elsewhere, so no test passes because a tool was missing.
//! * [`sim`]: interpreters for the subset of GRUB script and U-Boot hush that the shipped
//!   `bootloader-hooks/grub/ota.cfg` and `u-boot/boot.cmd` use, so simulated robots boot through the real scripts.
//! * [`robot`]: a simulated robot in a directory (file slots, a boot env, a fake /proc/cmdline), its images and
//!   signed bundles, and a daemon run that reboots it through [`sim`].

pub mod robot;
pub mod sim;
pub mod tools;
