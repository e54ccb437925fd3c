//! The stores' integration tests, one binary: behaviour on disk (`stores`) and
//! compatibility with the real bootloader tools (`real_tools`).

mod real_tools;
mod stores;
