//! The simulated robot lives in the test kit (`ota_testkit::robot`) so the demo fleet and the
//! end-to-end tests use the same one.

pub use ota_testkit::robot::*;
