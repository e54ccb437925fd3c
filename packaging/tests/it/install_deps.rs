//! scripts/install-deps.sh never removes, downgrades or replaces a package the machine has: its decision
//! (`to_install`, sourced from the script) against dpkg-query output, and the apt flags it runs with.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use proptest::prelude::*;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-deps.sh")
}

/// `to_install WANTED...` with `status` (dpkg-query's `Package\tStatus` lines) on stdin.
fn to_install(status: &str, wanted: &[&str]) -> Vec<String> {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(r#"script=$1; shift; source "$script" && to_install "$@""#)
        .arg("bash")
        .arg(script())
        .args(wanted)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(status.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "to_install failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_package_on_the_machine_at_any_version_or_state_is_left_alone() {
    let status = "qemu-system-x86\tinstalled\n\
                  ovmf\thalf-configured\n\
                  zstd\tconfig-files\n\
                  tar\tnot-installed\n\
                  openssl\tunpacked\n";
    // qemu (say a newer build from elsewhere, or held: still `installed`) and the half-set-up ones stay as they
    // are; removed-but-config and unknown packages are installed; each once, in the order asked.
    assert_eq!(
        to_install(
            status,
            &[
                "qemu-system-x86",
                "zstd",
                "ovmf",
                "tar",
                "mtools",
                "openssl",
                "zstd"
            ]
        ),
        ["zstd", "tar", "mtools"]
    );
    assert!(to_install(status, &["qemu-system-x86"]).is_empty());
    assert_eq!(to_install("", &["a", "b"]), ["a", "b"]);
}

#[test]
fn apt_runs_so_that_nothing_is_removed_or_downgraded() {
    let text = std::fs::read_to_string(script()).unwrap();
    let apt: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .collect();
    assert!(!apt.is_empty());
    for line in apt {
        assert!(line.contains("--no-remove"), "{line}");
        assert!(!line.contains("--allow-downgrades"), "{line}");
        assert!(!line.contains("--allow-remove-essential"), "{line}");
        assert!(!line.contains("--allow-change-held-packages"), "{line}");
    }
}

const STATES: [&str; 6] = [
    "installed",
    "half-configured",
    "unpacked",
    "triggers-pending",
    "config-files",
    "not-installed",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn installs_exactly_the_wanted_packages_dpkg_does_not_have(
        have in proptest::collection::btree_map("[a-e]", 0usize..STATES.len(), 0..5),
        wanted in proptest::collection::vec("[a-g]", 0..8),
    ) {
        let status: String = have.iter().map(|(p, s)| format!("{p}\t{}\n", STATES[*s])).collect();
        let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let mut expected: Vec<String> = Vec::new();
        for w in &wanted {
            let present = have.get(*w).is_some_and(|s| STATES[*s] != "config-files" && STATES[*s] != "not-installed");
            if !present && !expected.iter().any(|e| e == w) {
                expected.push(w.to_string());
            }
        }
        prop_assert_eq!(to_install(&status, &wanted), expected);
    }
}
