//! `ota-server` on failing inputs: each error is one line that says each thing once (the edge prints an error's
//! causes only where its message does not already say them).

use std::process::Command;

use ota_testkit::errors::assert_said_once;

#[test]
fn error_lines_say_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a-file"), "x").unwrap();
    std::fs::write(d.join("junk.json"), "{ not json").unwrap();
    let data = d.join("data");
    let data = data.to_str().unwrap();
    let runs: Vec<Vec<&str>> = vec![
        vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", "a-file"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--trust-root",
            "missing.json",
        ],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--trust-root",
            "junk.json",
        ],
        vec!["serve", "--config", "missing.toml"],
        vec!["serve", "--config", "junk.json"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--trust-root",
            "a-file",
            "--tls-cert",
            "a-file",
            "--tls-key",
            "a-file",
        ],
    ];
    for args in runs {
        let out = Command::new(env!("CARGO_BIN_EXE_ota-server"))
            .args(&args)
            .current_dir(d)
            .env_remove("OTA_SERVER_CONFIG")
            .env_remove("OTA_ADMIN_TOKEN")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with("ota-server: error:"))
            .unwrap_or_else(|| panic!("{args:?}: {stderr}"));
        assert_said_once(line);
    }
}
