//! End to end: a real `ota-server` (in process, SQLite, HTTP on 127.0.0.1) and real `ota-client daemon` loops
//! on simulated robots that boot through the shipped GRUB script. Every wait is bounded.

mod aim;
mod common;
mod fleet;
mod processes;
mod resume;
mod s3_bundles;
mod watch;
