//! What the library's tests share with the binary's (`tests/common` at the
//! root): how long a step may wait, random payloads, and a TLS identity
//! with a blocking client that trusts it.

#![allow(dead_code)] // each test file uses its own part of this harness

#[path = "../../../../tests/common/basics.rs"]
mod basics;
#[path = "../../../../tests/common/tls.rs"]
pub mod tls;

#[allow(unused_imports)] // not every test file sends random payloads
pub use basics::{PATIENCE, random_bytes};
