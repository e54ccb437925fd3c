//! The Debian packages as an operator meets them: `build-debs.sh` builds them (from the static release
//! binaries the VM tests build too), `dpkg -i` installs them on this machine, the files, units, man pages and
//! binaries work, and `dpkg --purge` leaves nothing behind. Needs root (it installs packages); refuses to touch a
//! machine where the packages are already installed. `OTA_DEBS_DIR=DIR`: test the .debs in DIR instead of
//! building them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ota_testkit::tools::{in_ci, missing, require_all};

const PACKAGES: [&str; 3] = ["ota-client", "ota-server", "ota-bundle"];
const UNITS: [&str; 3] = [
    "/lib/systemd/system/ota-client.service",
    "/lib/systemd/system/ota-health-confirm.service",
    "/lib/systemd/system/ota-server.service",
];
/// Exposure ceilings (`systemd-analyze security`, 0 safest .. 10): the client unit rated 9.6 "UNSAFE" before
/// it was sandboxed; the server needs almost nothing.
const MAX_EXPOSURE: [(&str, f64); 3] = [
    ("ota-client.service", 3.0),
    ("ota-health-confirm.service", 3.0),
    ("ota-server.service", 1.5),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("MANPAGER", "cat")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run(program, args).stdout).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The packages' .deb files: built by build-debs.sh, or taken from `OTA_DEBS_DIR`.
fn debs() -> Vec<PathBuf> {
    let dir = match std::env::var_os("OTA_DEBS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let out = repo_root().join("target/debian");
            let script = repo_root().join("packaging/build-debs.sh");
            run(script.to_str().unwrap(), &[out.to_str().unwrap()]);
            out
        }
    };
    PACKAGES
        .iter()
        .map(|p| {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let name = f.file_name().unwrap().to_string_lossy().into_owned();
                    name.starts_with(&format!("{p}_")) && name.ends_with(".deb")
                })
                .collect();
            found.sort();
            found
                .pop()
                .unwrap_or_else(|| panic!("no {p}_*.deb in {}", dir.display()))
        })
        .collect()
}

/// Purges the packages even when an assertion fails half-way, so a failed run leaves the machine clean.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").arg("--purge").args(PACKAGES).output();
    }
}

fn exposure(unit: &str) -> f64 {
    let text = stdout("systemd-analyze", &["security", "--offline=true", unit]);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{text}"));
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unparsable exposure line for {unit}: {line}"))
}

#[test]
fn packages_install_work_and_purge_without_a_trace() {
    let tools = [
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "systemd-analyze",
        "man",
        "cargo",
        "strip",
        "gzip",
    ];
    if !require_all(&tools) {
        return;
    }
    if !is_root()
        && !missing(
            "root (dpkg -i)",
            "packages_install_work_and_purge_without_a_trace",
        )
    {
        return;
    }
    if let Some(p) = PACKAGES.iter().find(|p| installed(p)) {
        let why =
            format!("{p} is installed on this machine and this test purges it: remove it first");
        assert!(!in_ci(), "{why}");
        eprintln!("SKIPPED packages_install_work_and_purge_without_a_trace: {why}");
        return;
    }
    assert!(
        !user_exists("ota-server"),
        "a user ota-server exists before the install"
    );
    let debs = debs();

    // Contents, before anything is installed.
    let listing = |deb: &Path| stdout("dpkg-deb", &["-c", deb.to_str().unwrap()]);
    let client = listing(&debs[0]);
    for want in [
        "./usr/bin/ota-client",
        "./etc/ota/client.toml",
        "./lib/systemd/system/ota-client.service",
        "./lib/systemd/system/ota-health-confirm.service",
        "./usr/share/ota-client/grub/ota.cfg",
        "./usr/share/ota-client/u-boot/boot.cmd",
        "./usr/share/man/man1/ota-client.1.gz",
        "./usr/share/man/man1/ota-client-daemon.1.gz",
        "./usr/share/bash-completion/completions/ota-client",
        "./usr/share/zsh/vendor-completions/_ota-client",
        "./usr/share/fish/vendor_completions.d/ota-client.fish",
    ] {
        assert!(
            client.contains(want),
            "ota-client package lacks {want}:\n{client}"
        );
    }
    let control = stdout("dpkg-deb", &["-I", debs[0].to_str().unwrap(), "conffiles"]);
    assert_eq!(control.trim(), "/etc/ota/client.toml");
    let server = listing(&debs[1]);
    for want in [
        "./usr/bin/ota-server",
        "./lib/systemd/system/ota-server.service",
        "./usr/share/man/man1/ota-server-serve.1.gz",
        "./usr/share/bash-completion/completions/ota-server",
        "./etc/ota-server/config.toml",
    ] {
        assert!(
            server.contains(want),
            "ota-server package lacks {want}:\n{server}"
        );
    }
    let control = stdout("dpkg-deb", &["-I", debs[1].to_str().unwrap(), "conffiles"]);
    assert_eq!(control.trim(), "/etc/ota-server/config.toml");
    let bundle = listing(&debs[2]);
    for want in [
        "./usr/bin/ota-bundle",
        "./usr/share/man/man1/ota-bundle-create.1.gz",
    ] {
        assert!(
            bundle.contains(want),
            "ota-bundle package lacks {want}:\n{bundle}"
        );
    }

    // Installed.
    let _purge = Purge;
    let mut args = vec!["-i"];
    args.extend(debs.iter().map(|d| d.to_str().unwrap()));
    run("dpkg", &args);
    let files: Vec<String> = PACKAGES
        .iter()
        .flat_map(|p| {
            stdout("dpkg", &["-L", p])
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    for unit in UNITS {
        assert!(Path::new(unit).is_file(), "{unit} not installed");
    }
    assert!(
        user_exists("ota-server"),
        "postinst created no user ota-server"
    );
    assert!(
        Path::new("/var/lib/ota-server").is_dir(),
        "postinst created no /var/lib/ota-server"
    );
    assert!(
        Path::new("/var/lib/ota").is_dir(),
        "postinst created no /var/lib/ota"
    );
    run("systemd-analyze", &["verify", UNITS[0], UNITS[1], UNITS[2]]);
    for (unit, lines) in [
        (
            UNITS[0],
            &[
                "Type=notify",
                "WatchdogSec=",
                "ExecStart=/usr/bin/ota-client daemon",
            ][..],
        ),
        (
            UNITS[2],
            &[
                "Type=notify",
                "WatchdogSec=",
                "User=ota-server",
                "StateDirectory=ota-server",
            ][..],
        ),
    ] {
        let text = std::fs::read_to_string(unit).unwrap();
        for line in lines {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "{unit} lacks {line}"
            );
        }
    }
    for (unit, max) in MAX_EXPOSURE {
        let score = exposure(&format!("/lib/systemd/system/{unit}"));
        println!("systemd-analyze security {unit}: {score}");
        assert!(
            score <= max,
            "{unit} exposure {score} > {max}: its sandboxing was loosened"
        );
    }
    let page = stdout("man", &["-P", "cat", "ota-client"]);
    assert!(
        page.contains("ota-client - A/B over-the-air updates"),
        "{page}"
    );
    assert!(page.contains("ota-client-daemon(1)"), "{page}");
    let page = stdout("man", &["-P", "cat", "ota-server-serve"]);
    assert!(
        page.contains("--data-dir") || page.contains("--data\u{2010}dir"),
        "{page}"
    );
    for p in PACKAGES {
        let version = stdout(&format!("/usr/bin/{p}"), &["--version"]);
        assert!(
            version.starts_with(&format!("{p} ")),
            "{p} --version: {version}"
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    crate::notify::server_and_daemon_notify_systemd(Path::new("/usr/bin"), scratch.path());

    // Purged: no file, directory, conffile or user left.
    run(
        "dpkg",
        &["--purge", "ota-client", "ota-server", "ota-bundle"],
    );
    let left: Vec<&String> = files
        .iter()
        .filter(|f| {
            let p = Path::new(f.as_str());
            p.exists() && !p.is_dir()
        })
        .collect();
    assert!(left.is_empty(), "files left after purge: {left:?}");
    for dir in [
        "/var/lib/ota",
        "/var/lib/ota-server",
        "/etc/ota",
        "/usr/share/ota-client",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} left after purge");
    }
    assert!(
        !user_exists("ota-server"),
        "user ota-server left after purge"
    );
    for p in PACKAGES {
        assert!(!installed(p), "{p} still installed");
    }
}
