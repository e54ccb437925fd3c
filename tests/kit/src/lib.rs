//! The test kit: what the tests, the demo and the benchmarks share. No product binary links it.
//!
//! * [`tools`]: outside tools a test needs (grub-editenv, openssl, QEMU, Chromium...): a test fails naming the
//!   tool when `CI` is set, and prints a loud SKIPPED line elsewhere, so no test passes because a tool was missing.
//! * [`wait`]: bounded waits for an event, instead of sleeping and hoping.
//! * [`sim`]: interpreters for the subset of GRUB script and U-Boot hush that the shipped
//!   `bootloader-hooks/grub/ota.cfg` and `u-boot/boot.cmd` use, so simulated robots boot through the real scripts.
//! * [`robot`]: a simulated robot in a directory (file slots, a boot env, a fake /proc/cmdline), its images and
//!   signed bundles, and a daemon run that reboots it through [`sim`].
//! * [`server`]: an `ota-server` in this process on a loopback port, with API clients for it.
//! * [`release`]: release keys and trust roots.
//! * [`fleet`]: robots running the real daemon in threads against a server, their logs, and waits on rollouts.
//! * [`proxy`]: a fault-injecting HTTP proxy between robots and a server.
//! * [`forward_proxy`]: a site's forward proxy (CONNECT and absolute-form), counting what it carried.
//! * [`s3`]: a real S3-compatible server (s3s-fs) on a loopback port with one bucket, stopped on drop.
//! * [`postgres`]: a throwaway PostgreSQL cluster per test process, a fresh database per call.
//! * [`errors`]: checks that a failing command's error line says each thing once.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod errors;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod forward_proxy;
pub mod postgres;
#[cfg(feature = "fleet")]
pub mod proxy;
#[cfg(feature = "fleet")]
pub mod release;
#[cfg(feature = "fleet")]
pub mod robot;
pub mod s3;
#[cfg(feature = "fleet")]
pub mod server;
pub mod sim;
pub mod tools;
pub mod wait;
