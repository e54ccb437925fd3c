//! The configuration's parse and validation, through [`Config::parse`] as the client calls it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ota_protocol::fleet::WaitPhase;

use super::*;

const MINIMAL: &str = r#"
compatible = "acme-robot-v2"
trust_root = "/etc/ota/trust.json"
[slots.rootfs]
a = "/dev/mmcblk0p2"
b = "/dev/mmcblk0p3"
[bootloader]
backend = "grub"
grubenv = "/boot/grub/grubenv"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/ota/client.toml"))
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/ota"));
    assert_eq!(c.bootloader.tries, 3);
    assert_eq!(
        c.booted_slot,
        BootedSlotConfig::Cmdline("/proc/cmdline".into())
    );
    assert_eq!(c.reboot_command, vec!["systemctl", "reboot"]);
    assert_eq!(c.boot_classes(), vec!["rootfs"]);
    assert_eq!(c.http, HttpConfig::default());
    assert_eq!(c.server, None);
}

#[test]
fn server_section() {
    let c = parse(&format!(
            "{MINIMAL}[server]\nurl = \"https://ota.example.com/\"\nenrollment_secret_file = \"/etc/ota/secret\"\ntags = {{ site = \"w1\" }}\n"
        ))
        .unwrap();
    let s = c.server.unwrap();
    assert_eq!(s.url, "https://ota.example.com");
    assert_eq!(s.device_id, None);
    assert_eq!(
        s.enrollment_secret,
        SecretSource::File("/etc/ota/secret".into())
    );
    assert_eq!(s.tags["site"], "w1");
    assert_eq!(s.backoff_initial, Duration::from_secs(1));
    assert_eq!(s.backoff_max, Duration::from_secs(300));
    let e = err(&format!(
        "{MINIMAL}[server]\nurl = \"ota.example.com\"\nenrollment_secret = \"s\"\n"
    ));
    assert!(e.contains("server.url"), "{e}");
    let e = err(&format!("{MINIMAL}[server]\nurl = \"http://x\"\n"));
    assert!(e.contains("server.enrollment_secret"), "{e}");
    let e = err(&format!(
        "{MINIMAL}[server]\nurl = \"http://x\"\nenrollment_secret = \"s\"\ndevice_id = \"a b\"\n"
    ));
    assert!(e.contains("server.device_id"), "{e}");
    let e = err(&format!(
            "{MINIMAL}[server]\nurl = \"http://x\"\nenrollment_secret = \"s\"\nbackoff_initial_ms = 0\n"
        ));
    assert!(e.contains("server.backoff_initial_ms"), "{e}");
    assert!(!format!("{:?}", SecretSource::Inline("hunter2".into())).contains("hunter2"));
}

#[test]
fn freeze_detection_settings() {
    let server = "[server]\nurl = \"http://x\"\nenrollment_secret = \"s\"\n";
    let s = parse(&format!("{MINIMAL}{server}"))
        .unwrap()
        .server
        .unwrap();
    assert_eq!(s.max_metadata_age, DEFAULT_MAX_METADATA_AGE);
    assert_eq!(s.build_time, None);
    let s = parse(&format!(
        "{MINIMAL}{server}max_metadata_age_secs = 3600\nbuild_time = 1796083200\n"
    ))
    .unwrap()
    .server
    .unwrap();
    assert_eq!(s.max_metadata_age, Duration::from_secs(3600));
    assert_eq!(s.build_time, Some(1_796_083_200));
    let e = err(&format!("{MINIMAL}{server}max_metadata_age_secs = 0\n"));
    assert!(e.contains("server.max_metadata_age_secs"), "{e}");
}

#[test]
fn the_shipped_example_parses() {
    let text = include_str!("../../../examples/client.toml");
    let c = parse(text).unwrap();
    assert!(c.slots["model"].is_live());
    assert!(!c.slots["rootfs"].is_live());
    assert_eq!(
        c.slots["model"].service_restart,
        vec!["systemctl", "restart", "inference"]
    );
    assert!(!c.health_checks.is_empty());
    let server = c.server.unwrap();
    assert_eq!(server.url, "https://ota.example.com:8443");
    assert_eq!(server.tags["site"], "warehouse-3");
    assert!(server.telemetry_command.is_some());
    assert_eq!(c.http.low_speed_limit, 1024);
    assert_eq!(c.http.low_speed_time, Duration::from_secs(60));
    // The readiness check ships commented out (a missing program would hold every update); uncommented, it
    // is the documented one.
    assert!(c.readiness.is_none());
    let uncommented = text.replace("# [readiness]", "[readiness]").replace(
        "# command = \"/usr/bin/robot-ready\"",
        "command = \"/usr/bin/robot-ready\"",
    );
    let readiness = parse(&uncommented).unwrap().readiness.unwrap();
    assert_eq!(readiness.command, vec!["/usr/bin/robot-ready"]);
    assert_eq!(readiness.phases, WaitPhase::ALL);
}

#[test]
fn readiness_section() {
    assert_eq!(
        parse(MINIMAL).unwrap().readiness,
        None,
        "no section: always ready"
    );
    let c = parse(&format!(
        "{MINIMAL}[readiness]\ncommand = \"/usr/bin/ready\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.readiness,
        Some(ReadinessConfig {
            command: vec!["/usr/bin/ready".into()],
            timeout: DEFAULT_READINESS_TIMEOUT,
            phases: WaitPhase::ALL.to_vec(),
        })
    );
    let c = parse(&format!(
        "{MINIMAL}[readiness]\ncommand = [\"ready\", \"--battery\", \"30\"]\ntimeout_secs = 3\nphases = [\"reboot\", \"download\"]\n"
    ))
    .unwrap();
    let r = c.readiness.unwrap();
    assert_eq!(r.command, vec!["ready", "--battery", "30"]);
    assert_eq!(r.timeout, Duration::from_secs(3));
    assert_eq!(r.phases, vec![WaitPhase::Reboot, WaitPhase::Download]);
    for (bad, key) in [
        ("command = \"\"", "readiness.command"),
        ("command = []", "readiness.command"),
        (
            "command = \"x\"\ntimeout_secs = 0",
            "readiness.timeout_secs",
        ),
        ("command = \"x\"\nphases = []", "readiness.phases"),
        (
            "command = \"x\"\nphases = [\"reboot\", \"reboot\"]",
            "readiness.phases",
        ),
        (
            "command = \"x\"\nphases = [\"mission\"]",
            "readiness.phases",
        ),
        ("command = \"x\"\nbattery = 3", "battery"),
    ] {
        let e = err(&format!("{MINIMAL}[readiness]\n{bad}\n"));
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[test]
fn low_speed_limit() {
    let c = parse(&format!(
        "{MINIMAL}[http]\nlow_speed_limit = 0\nlow_speed_time_secs = 5\n"
    ))
    .unwrap();
    assert_eq!(c.http.low_speed_limit, 0);
    assert_eq!(c.http.low_speed_time, Duration::from_secs(5));
    let e = err(&format!("{MINIMAL}[http]\nlow_speed_time_secs = 0\n"));
    assert!(e.contains("http.low_speed_time_secs"), "{e}");
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_file_and_key() {
    let e = err(&MINIMAL.replace("compatible = \"acme-robot-v2\"\n", ""));
    assert!(
        e.contains("/etc/ota/client.toml") && e.contains("compatible"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}\nbogus = 1\n"));
    assert!(e.contains("line") && e.contains("bogus"), "{e}");
    let e = err(&MINIMAL.replace("backend = \"grub\"", "backend = \"lilo\""));
    assert!(
        e.contains("bootloader.backend") && e.contains("lilo"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("grubenv = \"/boot/grub/grubenv\"", ""));
    assert!(e.contains("bootloader.grubenv"), "{e}");
    let e = err(&MINIMAL.replace("/dev/mmcblk0p3", "/dev/mmcblk0p2"));
    assert!(e.contains("slots.rootfs"), "{e}");
    let e = err(&format!("{MINIMAL}tries = 10\n"));
    assert!(e.contains("bootloader.tries"), "{e}");
    let e = err(&format!("{MINIMAL}[booted_slot]\nsource = \"file\"\n"));
    assert!(e.contains("booted_slot.path"), "{e}");
    let e = err(&format!(
        "{MINIMAL}[[health_check]]\nname = \"x\"\ncommand = []\n"
    ));
    assert!(e.contains("health_check[0].command"), "{e}");
    let e = err(&MINIMAL.replace("a = \"/dev/mmcblk0p2\"", "a = 5"));
    assert!(
        e.contains("line 5") && e.contains("key `slots.rootfs.a`"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one-line messages: {e}");
}

#[test]
fn backends_and_sources() {
    let c = parse(&MINIMAL.replace(
        "backend = \"grub\"\ngrubenv = \"/boot/grub/grubenv\"",
        "backend = \"file\"\nstate_file = \"/tmp/x\"\ntries = 5",
    ))
    .unwrap();
    assert_eq!(
        c.bootloader.kind,
        BootloaderKind::File {
            state_file: "/tmp/x".into()
        }
    );
    assert_eq!(c.bootloader.tries, 5);
    let c = parse(&format!(
        "{MINIMAL}[booted_slot]\nsource = \"file\"\npath = \"/run/slot\"\n"
    ))
    .unwrap();
    assert_eq!(c.booted_slot, BootedSlotConfig::File("/run/slot".into()));
}
