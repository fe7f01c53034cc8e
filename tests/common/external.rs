//! The programs the tests run beside tandem (curl, promtool, HAProxy,
//! openssl, ...), as `tests/programs.txt` lists them with their packages.
//!
//! A test that needs one asks for it here, so that where it is missing the
//! test fails with the program's name and the package to install, rather
//! than with a bare "No such file or directory" from spawn.

use std::path::PathBuf;
use std::process::Command;

/// `program package` lines; `./test.sh` reads the same file.
const PROGRAMS: &str = include_str!("../programs.txt");

/// Searched after PATH: HAProxy installs to /usr/sbin, which a user's PATH
/// often lacks.
const SBIN: &str = "/usr/local/sbin:/usr/sbin:/sbin";

/// The Debian package that installs `program`, from `tests/programs.txt`.
fn package_of(program: &str) -> &'static str {
    PROGRAMS
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(' '))
        .find(|(name, _)| *name == program)
        .map(|(_, package)| package.trim())
        .unwrap_or_else(|| panic!("{program} is not listed in tests/programs.txt"))
}

/// Where `program` is on PATH; fails the test, naming the program and its
/// package, if it is not installed.
pub fn require(program: &str) -> PathBuf {
    let package = package_of(program);
    let path = match std::env::var("PATH") {
        Ok(path) => format!("{path}:{SBIN}"),
        Err(_) => SBIN.to_owned(),
    };
    which::which_in(program, Some(path), "/").unwrap_or_else(|_| {
        panic!(
            "this test runs `{program}`, which is not installed: install the \
             `{package}` package (`sudo apt-get install {package}`), or run \
             ./test.sh, which installs what the tests need"
        )
    })
}

/// A command that runs `program`, which must be installed.
pub fn command(program: &str) -> Command {
    Command::new(require(program))
}
