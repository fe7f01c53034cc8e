//! The library's test harness: how long a step may wait, random payloads,
//! and a TLS identity with a blocking client that trusts it. The binary's
//! tests (`tests/common` at the root) include these files too.

#![allow(dead_code)] // each test file uses its own part of this harness

mod basics;
pub mod tls;

#[allow(unused_imports)] // not every test file sends random payloads
pub use basics::{PATIENCE, random_bytes};
