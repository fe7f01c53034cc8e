//! The workspace's promise to a server built on the library: depending on
//! `tandem` pulls in neither the command line nor the load generator, as
//! `cargo tree` resolves it from the lockfile.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates of the command line, the load generator and the suite's report,
/// which a server built on the library must not compile.
const NOT_IN_THE_LIBRARY: [&str; 8] = [
    "clap",
    "toml",
    "plotters",
    "indicatif",
    "rcgen",
    "hdrhistogram",
    "prometheus-parse",
    "tandem-bench",
];

/// The crates `package` builds with, itself included: its normal
/// dependencies, as a dependent compiles them.
fn normal_tree(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args(["--package", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_library_builds_without_the_command_line_or_the_load_generator() {
    let library = normal_tree("tandem");
    assert!(library.contains("tokio"), "{library:?}");
    for name in NOT_IN_THE_LIBRARY {
        assert!(
            !library.contains(name),
            "the library depends on {name}: {library:?}"
        );
    }
    // The same look at the binary finds them, so the check can see them.
    let binary = normal_tree("tandem-cli");
    for name in NOT_IN_THE_LIBRARY {
        assert!(binary.contains(name), "tandem-cli lacks {name}");
    }
}
