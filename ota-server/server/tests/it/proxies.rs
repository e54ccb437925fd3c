//! HTTP_PROXY, HTTPS_PROXY and NO_PROXY (docs/proxies.md) for the command-line tools, which use the API client
//! robots use: through a forward proxy that counts what it carried, and around it when NO_PROXY names the
//! server. Run as child processes, since the variables are process-wide.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::*;
use ota_keys::SecretKey;
use ota_testkit::forward_proxy::ForwardProxy;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

async fn devices_list(
    base: String,
    ca: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ota-server"));
        cmd.args(["devices", "list", "--server", &base, "--token", ADMIN]);
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        cmd.env_remove("OTA_ADMIN_TOKEN")
            .env_remove("OTA_SERVER_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}

fn ok(out: &Output) -> bool {
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_proxy_is_used_and_no_proxy_goes_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start(settings(dir.path(), &trust(&[&SecretKey::generate()], 1))).await;
    let proxy = ForwardProxy::start();
    let out = devices_list(
        server.base.clone(),
        None,
        vec![("HTTP_PROXY", proxy.url.clone())],
    )
    .await;
    assert!(ok(&out));
    assert_eq!(proxy.carried(), 1, "{:?}", proxy.first_lines());
    assert!(
        proxy.first_lines()[0].starts_with("GET http://127.0.0.1:"),
        "{:?}",
        proxy.first_lines()
    );
    let out = devices_list(
        server.base.clone(),
        None,
        vec![
            ("http_proxy", proxy.url.clone()),
            ("NO_PROXY", "127.0.0.1".into()),
        ],
    )
    .await;
    assert!(ok(&out));
    assert_eq!(
        proxy.carried(),
        1,
        "NO_PROXY=127.0.0.1 still went through the proxy"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_tunnels_with_connect() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "proxy test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (cert_path, key_path, ca_path) = (
        pki.path().join("server.pem"),
        pki.path().join("server.key"),
        pki.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let tls = ota_server::tls::load_server_config(&cert_path, &key_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_tls(
        settings(dir.path(), &trust(&[&SecretKey::generate()], 1)),
        Some(tls),
    )
    .await;
    let base = format!("https://localhost:{}", server.addr.port());
    let proxy = ForwardProxy::start();
    let out = devices_list(
        base.clone(),
        Some(ca_path.clone()),
        vec![("HTTPS_PROXY", proxy.url.clone())],
    )
    .await;
    assert!(ok(&out));
    assert_eq!(proxy.carried(), 1);
    assert!(
        proxy.first_lines()[0].starts_with("CONNECT localhost:"),
        "{:?}",
        proxy.first_lines()
    );
    let out = devices_list(
        base,
        Some(ca_path),
        vec![
            ("HTTPS_PROXY", proxy.url.clone()),
            ("NO_PROXY", "localhost,127.0.0.1".into()),
        ],
    )
    .await;
    assert!(ok(&out));
    assert_eq!(
        proxy.carried(),
        1,
        "NO_PROXY=localhost still went through the proxy"
    );
    server.stop().await;
}
