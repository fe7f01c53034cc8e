//! Where a suite run's results go, claimed before anything is measured.
//!
//! Ad-hoc runs land under the cargo target directory (`target/suite/`, or
//! `$CARGO_TARGET_DIR/suite/`), which git ignores, so that running the suite
//! leaves the work tree clean; results meant to be kept, such as those
//! BENCHMARKS.md cites, are written where `--out` says.
//!
//! A run never overwrites another's results. The folder is created, not
//! reused, before the first sample: a default name (the kind of run and the
//! time to the second) that is taken gets `-2`, `-3`, ... appended, and a
//! `--name` that is taken is refused at once rather than after minutes of
//! measuring.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::error::SuiteError;

/// Where result folders go without `--out`: `suite` under `target_dir`
/// (`$CARGO_TARGET_DIR`), else under `./target`.
pub fn default_out(target_dir: Option<&Path>) -> PathBuf {
    target_dir.unwrap_or(Path::new("target")).join("suite")
}

/// The default name of a run: `quick-2026-11-27T06-12-30` (UTC).
pub fn default_name(quick: bool, now: std::time::SystemTime) -> String {
    let kind = if quick { "quick" } else { "full" };
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let stamp = stamp.trim_end_matches('Z').replace(':', "-");
    format!("{kind}-{stamp}")
}

/// Creates the results folder `out/name` and returns it. A `name` the user
/// chose (`chosen`) that is taken is an error; a default one that is taken
/// gets the first free suffix.
pub fn claim(out: &Path, name: &str, chosen: bool) -> Result<PathBuf, SuiteError> {
    let write_error = |path: &Path, cause| SuiteError::Write {
        path: path.to_owned(),
        cause,
    };
    std::fs::create_dir_all(out).map_err(|cause| write_error(out, cause))?;
    for attempt in 1u32.. {
        let dir = match attempt {
            1 => out.join(name),
            n => out.join(format!("{name}-{n}")),
        };
        // create_dir, not create_dir_all: it fails if the folder exists, so
        // two runs started at once cannot both claim it.
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == ErrorKind::AlreadyExists && !chosen => continue,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                return Err(SuiteError::Invalid(format!(
                    "{} already holds results: choose another --name, or remove it",
                    dir.display()
                )));
            }
            Err(cause) => return Err(write_error(&dir, cause)),
        }
    }
    unreachable!("u32 attempts run out only after four billion folders")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn ad_hoc_results_go_under_the_cargo_target_directory() {
        assert_eq!(default_out(None), Path::new("target/suite"));
        assert_eq!(
            default_out(Some(Path::new("/tmp/build"))),
            Path::new("/tmp/build/suite")
        );
    }

    #[test]
    fn a_default_name_says_the_kind_of_run_and_the_second_it_started() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_759_950);
        assert_eq!(default_name(true, now), "quick-2026-11-27T06-12-30");
        assert_eq!(default_name(false, now), "full-2026-11-27T06-12-30");
    }

    #[test]
    fn runs_with_the_same_default_name_get_folders_of_their_own() {
        let out = tempfile::tempdir().unwrap();
        let first = claim(out.path(), "quick-x", false).unwrap();
        std::fs::write(first.join("results.json"), "{}").unwrap();
        let second = claim(out.path(), "quick-x", false).unwrap();
        let third = claim(out.path(), "quick-x", false).unwrap();
        assert_eq!(first, out.path().join("quick-x"));
        assert_eq!(second, out.path().join("quick-x-2"));
        assert_eq!(third, out.path().join("quick-x-3"));
        assert_eq!(
            std::fs::read_to_string(first.join("results.json")).unwrap(),
            "{}"
        );
    }

    #[test]
    fn a_chosen_name_that_is_taken_is_refused_and_left_as_it_was() {
        let out = tempfile::tempdir().unwrap();
        let taken = out.path().join("full-2026-11-24");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("report.md"), "kept").unwrap();
        let err = claim(out.path(), "full-2026-11-24", true).unwrap_err();
        assert!(err.to_string().contains("already holds results"), "{err}");
        assert_eq!(
            std::fs::read_to_string(taken.join("report.md")).unwrap(),
            "kept"
        );
        assert!(!out.path().join("full-2026-11-24-2").exists());
    }

    #[test]
    fn the_out_folder_is_made_when_missing() {
        let out = tempfile::tempdir().unwrap();
        let nested = out.path().join("a").join("b");
        assert_eq!(claim(&nested, "run", true).unwrap(), nested.join("run"));
    }
}
