//! Installs from a URL over a real HTTP server on 127.0.0.1: resume after a dropped
//! connection, permanent errors, a changed file, a stalled body.

use std::time::{Duration, Instant};

use ota_client::{BundleSource, InstallOptions, NoProgress, Slot};
use ota_testkit::robot::*;

use crate::common::http::{Behaviour, Server};

fn install_url(r: &Robot, url: &str) -> Result<ota_client::InstallReport, ota_client::ClientError> {
    r.client().install(
        &BundleSource::parse(url),
        &InstallOptions::default(),
        &mut NoProgress,
    )
}

#[test]
fn extra_headers_go_with_every_request_including_resumes() {
    let body = rootfs_bundle("2.0.0");
    let behaviour = Behaviour {
        drop_first_after: Some(body.len() / 3),
        body: body.clone(),
        etag: "v2".into(),
        require_authorization: Some("Bearer ota1.robot".into()),
        ..Default::default()
    };
    let r = Robot::new(Backend::Grub);
    let without = Server::start(behaviour.clone());
    let err = install_url(&r, &without.url("/bundle.otab")).unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert_eq!(without.requests().len(), 1, "401 is not retried");

    let server = Server::start(behaviour);
    let source = BundleSource::Http(ota_client::source::HttpRequest::bearer(
        &server.url("/bundle.otab"),
        "ota1.robot",
    ));
    r.client()
        .install(&source, &InstallOptions::default(), &mut NoProgress)
        .unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer ota1.robot")));
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={}-", body.len() / 3).as_str())
    );
    assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
}

#[test]
fn dropped_connection_resumes_with_range_and_succeeds() {
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        drop_first_after: Some(body.len() / 2),
        body: body.clone(),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    install_url(&r, &server.url("/bundle.otab")).unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={}-", body.len() / 2).as_str())
    );
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v2\""));
    assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
    let (booted, confirm) = r.reboot_and_confirm();
    assert_eq!(booted, Slot::B);
    confirm.unwrap();
}

#[test]
fn not_found_stops_at_once() {
    let server = Server::start(Behaviour {
        body: vec![1],
        etag: "x".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let before = r.snapshot();
    let start = Instant::now();
    let err = install_url(&r, &server.url("/missing.otab"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("check the URL"),
        "{err}"
    );
    assert_eq!(
        server.requests().len(),
        1,
        "no retries on a permanent error"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(r.snapshot(), before);
}

#[test]
fn a_file_changed_on_the_server_is_not_spliced() {
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        drop_first_after: Some(body.len() / 2),
        body: body.clone(),
        etag: "v2".into(),
        replaced_by: Some(rootfs_bundle("2.0.1")),
        ..Default::default()
    });
    let r = Robot::new(Backend::Grub);
    let err = install_url(&r, &server.url("/bundle.otab"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot resume"), "{err}");
    assert_eq!(r.status().trial, None, "nothing armed");
    assert_eq!(r.slot_state("rootfs", Slot::B), "writing");
    assert_eq!(r.reboot(), Slot::A);
}

#[test]
fn a_stalled_body_times_out_and_resumes() {
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        drop_first_after: Some(body.len() / 3),
        stall_first: Some(Duration::from_secs(6)),
        body: body.clone(),
        etag: "v2".into(),
        ..Default::default()
    });
    let r = Robot::new(Backend::File);
    let start = Instant::now();
    install_url(&r, &server.url("/bundle.otab")).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "the 2 s read timeout fired: {:?}",
        start.elapsed()
    );
    assert_eq!(server.requests().len(), 2);
    assert_eq!(r.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
}

#[test]
fn an_unreachable_server_gives_up_after_bounded_retries() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = Robot::new(Backend::Grub);
    let err = install_url(&r, &format!("http://127.0.0.1:{port}/bundle.otab"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("failed after 5 attempts"), "{err}");
}

/// `ota-client install URL` honours `HTTP_PROXY` (the bundle's requests go through the proxy) and `NO_PROXY` (they go
/// around it), as docs/proxies.md says. The proxy settings are the process's environment, so the robot runs as a
/// child process.
#[test]
fn the_robot_downloads_through_http_proxy_and_around_it_with_no_proxy() {
    let body = rootfs_bundle("2.0.0");
    let server = Server::start(Behaviour {
        body,
        etag: "v2".into(),
        ..Default::default()
    });
    let proxy = ota_testkit::forward_proxy::ForwardProxy::start();
    let install = |r: &Robot, env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ota-client"));
        cmd.arg("--config").arg(&r.config_path);
        cmd.args(["install", &server.url("/bundle.otab")]);
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        cmd.env_remove("NO_PROXY").env_remove("no_proxy");
        cmd.envs(env.iter().copied());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let via = Robot::new(Backend::Grub);
    install(&via, &[("HTTP_PROXY", proxy.url.as_str())]);
    assert_eq!(via.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
    let carried = proxy.carried();
    assert!(carried >= 1, "the download did not go through HTTP_PROXY");
    assert!(
        proxy
            .first_lines()
            .iter()
            .all(|l| l.starts_with("GET http://127.0.0.1:")),
        "{:?}",
        proxy.first_lines()
    );
    let around = Robot::new(Backend::Grub);
    install(
        &around,
        &[
            ("http_proxy", proxy.url.as_str()),
            ("NO_PROXY", "127.0.0.1"),
        ],
    );
    assert_eq!(around.slot_bytes("rootfs", Slot::B), rootfs_image("2.0.0"));
    assert_eq!(
        proxy.carried(),
        carried,
        "NO_PROXY=127.0.0.1 still went through the proxy"
    );
}
