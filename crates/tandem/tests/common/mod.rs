//! The library's test harness: how long a step may wait, random payloads,
//! tests written once for every layout, and a TLS identity with a blocking
//! client that trusts it. The binary's tests (`tests/common` at the root)
//! include these files too.

#![allow(dead_code)] // each test file uses its own part of this harness

mod basics;
#[cfg(feature = "tls")]
pub mod tls;

#[allow(unused_imports)] // not every test file has per-layout tests
pub(crate) use basics::per_layout;
#[allow(unused_imports)] // not every test file sends random payloads
pub use basics::{PATIENCE, at_once, in_turn, random_bytes};

/// The library's layout named `name`: what `per_layout!` passes the
/// library's tests.
pub fn layout(name: &str) -> tandem::Layout {
    match name {
        "split" => tandem::Layout::Split,
        "single" => tandem::Layout::Single,
        "sharded" => tandem::Layout::Sharded,
        other => panic!("no layout named {other:?}"),
    }
}
