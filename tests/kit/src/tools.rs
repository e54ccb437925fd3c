//! Outside tools that tests run.
//!
//! Under CI (the `CI` variable set to anything but `false`/`0`) a missing tool is a failure that names it; on a
//! developer's machine the test prints a loud SKIPPED line and returns early. A test never passes silently
//! because what it needed was not there.

use std::path::{Path, PathBuf};

/// Whether this run is CI, where every tool must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Where `program` is on `PATH` (or the path itself when it contains a `/` and exists).
pub fn find(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Decides what a test does about a missing requirement named `what`: panics under CI, otherwise prints a
/// SKIPPED line naming the test's `context` and returns `false`.
pub fn missing(what: &str, context: &str) -> bool {
    let message = format!(
        "{context}: needs {what}, which is not installed (scripts/install-deps.sh browser vm installs it)"
    );
    if in_ci() {
        panic!("{message}");
    }
    eprintln!("\n**** SKIPPED **** {message}\n");
    false
}

/// `true` when `program` is on `PATH`. Otherwise fails under CI, or prints SKIPPED and returns `false`:
/// `if !require("grub-editenv") { return; }`.
pub fn require(program: &str) -> bool {
    find(program).is_some() || missing(program, &current_test())
}

/// Like [`require`] for a file a test needs (firmware, a kernel image...), named by what it is.
pub fn require_file(path: &Path, what: &str) -> bool {
    path.exists() || missing(&format!("{what} ({})", path.display()), &current_test())
}

/// Every one of `programs`, checked in order (all are reported missing before a CI failure).
pub fn require_all(programs: &[&str]) -> bool {
    let absent: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find(p).is_none())
        .collect();
    absent.is_empty() || missing(&absent.join(", "), &current_test())
}

/// The running test's name (the test harness names its threads after the tests).
fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_on_path() {
        assert!(find("sh").is_some());
        assert!(find("/bin/sh").is_some());
        assert!(find("no-such-program-ota-kit").is_none());
    }

    #[test]
    fn a_present_tool_is_required_without_output() {
        assert!(require("sh"));
        assert!(require_all(&["sh", "true"]));
    }

    #[test]
    fn a_missing_tool_fails_under_ci_and_names_it() {
        // Runs the check in a child process with CI set, so this test's own environment is untouched.
        if std::env::var_os("OTA_KIT_CHILD").is_some() {
            require("no-such-program-ota-kit");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        for (ci, should_fail) in [("true", true), ("", false)] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "tools::tests::a_missing_tool_fails_under_ci_and_names_it",
                    "--nocapture",
                ])
                .env("OTA_KIT_CHILD", "1")
                .env("CI", ci)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(!out.status.success(), should_fail, "CI={ci:?}: {stderr}");
            assert!(
                stderr.contains("no-such-program-ota-kit"),
                "CI={ci:?}: {stderr}"
            );
            if !should_fail {
                assert!(stderr.contains("SKIPPED"), "{stderr}");
            }
        }
    }
}
