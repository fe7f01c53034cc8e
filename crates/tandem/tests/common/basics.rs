//! What every test harness shares, the binary's too (`tests/common` at the
//! root includes this file): how long a step may wait, random payloads, and
//! tests written once for every layout.

use std::time::Duration;

/// Longest any single step of a test may wait before it counts as a hang.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::fill(&mut bytes[..]);
    bytes
}

/// The three layouts, by the names `--layout` takes. `per_layout!` names
/// its tests after them, in this order.
pub const LAYOUTS: [&str; 3] = ["split", "single", "sharded"];

/// A test that must hold in every layout, written once: `per_layout!(name)`
/// above `fn name(layout: …)` makes `name::split`, `name::single` and
/// `name::sharded`, one `#[test]` each, so that a failure names its layout
/// and the test runner runs them side by side with the other tests. Each
/// calls `name` with what the harness's `layout(name)` makes of the
/// layout's name: the name itself for the binary's tests, the library's
/// `Layout` for the library's.
///
/// Attributes before the name (`#[ignore = "…"]`) go on every test made.
/// Two forms make a single test, `name::layouts_in_turn` or
/// `name::layouts_at_once`, that runs `name` in every layout on a thread
/// named after the layout, so that a failure still names it:
/// - `per_layout!(name, in_turn)`: one layout after another, for tests that
///   must have the machine, or a resource of the process, to themselves;
///   the call says why;
/// - `per_layout!(name, at_once)`: all three at the same time, for tests
///   that mostly wait on a clock, which would take three times as long one
///   after another.
#[allow(unused_macros)] // not every test file has per-layout tests
macro_rules! per_layout {
    ($(#[$attr:meta])* $test:ident) => {
        mod $test {
            $(#[$attr])*
            #[test]
            fn split() {
                super::$test(crate::common::layout("split"));
            }

            $(#[$attr])*
            #[test]
            fn single() {
                super::$test(crate::common::layout("single"));
            }

            $(#[$attr])*
            #[test]
            fn sharded() {
                super::$test(crate::common::layout("sharded"));
            }
        }
    };
    ($(#[$attr:meta])* $test:ident, in_turn) => {
        mod $test {
            $(#[$attr])*
            #[test]
            fn layouts_in_turn() {
                crate::common::in_turn(|name| super::$test(crate::common::layout(name)));
            }
        }
    };
    ($(#[$attr:meta])* $test:ident, at_once) => {
        mod $test {
            $(#[$attr])*
            #[test]
            fn layouts_at_once() {
                crate::common::at_once(|name| super::$test(crate::common::layout(name)));
            }
        }
    };
}
#[allow(unused_imports)] // not every test file has per-layout tests
pub(crate) use per_layout;

/// Runs `test` for each layout in turn, each on a thread named after the
/// layout; a failure ends the test there, as a failing layout would.
pub fn in_turn(test: impl Fn(&'static str) + Sync) {
    std::thread::scope(|scope| {
        for name in LAYOUTS {
            let ran = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn_scoped(scope, || test(name))
                .expect("spawn a thread for a layout")
                .join();
            if let Err(panic) = ran {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// Runs `test` for every layout at the same time, each on a thread named
/// after the layout; fails once all have ended if any failed.
pub fn at_once(test: impl Fn(&'static str) + Sync) {
    std::thread::scope(|scope| {
        for name in LAYOUTS {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn_scoped(scope, || test(name))
                .expect("spawn a thread for a layout");
        }
    });
}
