//! A real S3-compatible server for tests: `s3s-fs` (a file-system-backed S3 implementation with SigV4 auth,
//! presigned URLs, ranges and multipart uploads) on 127.0.0.1 with a port it picks, one bucket and one key
//! pair, stopped when dropped. `scripts/install-s3s-fs.sh` installs it under `~/.cache/ota-tools/s3s-fs`
//! (Garage, the suggestion, builds in more than 6 minutes of a fresh 2-core machine; s3s-fs in about 2).
//!
//! `if let Some(s3) = S3Server::start() { ... }`: `None` follows [`crate::tools::require`] (a failure under
//! CI, SKIPPED elsewhere).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools;

/// The program's name, and where the install script caches it.
pub const PROGRAM: &str = "s3s-fs";

/// Where `scripts/install-s3s-fs.sh` puts the binary.
pub fn cached_binary() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/ota-tools/s3s-fs/bin/s3s-fs"))
}

/// The S3 server binary: on `PATH`, else the install script's cache.
pub fn binary() -> Option<PathBuf> {
    tools::find(PROGRAM).or_else(|| cached_binary().filter(|p| p.exists()))
}

/// A running S3 server with one bucket.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket created for this server.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Region to sign with (any: s3s-fs does not check it).
    pub region: String,
    root: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl S3Server {
    /// Starts the server with bucket `ota-bundles`; `None` when it is not installed (see the module doc).
    pub fn start() -> Option<S3Server> {
        let Some(program) = binary() else {
            tools::missing(
                &format!("{PROGRAM} (scripts/install-s3s-fs.sh installs it)"),
                std::thread::current().name().unwrap_or("this test"),
            );
            return None;
        };
        Some(Self::start_with(&program).expect("starting the S3 server"))
    }

    fn start_with(program: &Path) -> anyhow::Result<S3Server> {
        let root = tempfile::tempdir()?;
        let bucket = "ota-bundles".to_string();
        std::fs::create_dir(root.path().join(&bucket))?;
        let (access_key_id, secret_access_key) = (
            "OTATESTKEY".to_string(),
            "ota-test-secret-key-0123456789".to_string(),
        );
        // A port picked here and taken by the server a moment later: retried if another process won it.
        for _ in 0..5 {
            let port = free_port()?;
            let mut child = Command::new(program)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--access-key",
                    &access_key_id,
                    "--secret-key",
                    &secret_access_key,
                ])
                .arg(root.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    anyhow::ensure!(
                        port_taken(port),
                        "{} exited at start: {status}",
                        program.display()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(S3Server {
                        child,
                        endpoint: format!("http://{addr}"),
                        bucket,
                        access_key_id,
                        secret_access_key,
                        region: "us-east-1".into(),
                        root,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        anyhow::bail!("{} did not start listening", program.display())
    }

    /// The `--bundle-store` URL for this server's bucket under `prefix` (may be empty).
    pub fn bundle_store_url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region={}",
            self.bucket, self.endpoint, self.region
        )
    }

    /// The keys of the objects in the bucket, sorted (read from the server's directory: no S3 call, so a test
    /// checks the store without trusting the code under test).
    pub fn objects(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root.path().join(&self.bucket), "", &mut out);
        out.sort();
        out
    }

    /// The bytes of object `key`.
    pub fn object(&self, key: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.root.path().join(&self.bucket).join(key))
    }
}

fn port_taken(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // s3s-fs keeps its own bookkeeping (uploads in progress, checksums) in dot-files.
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{prefix}{name}");
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), &format!("{key}/"), out);
        } else {
            out.push(key);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "fleet")]
impl S3Server {
    /// Points a server's `settings` at this bucket (objects under `prefix`), with this server's key pair,
    /// presigning downloads if `presign`.
    pub fn serve_bundles(
        &self,
        settings: &mut ota_server::server::Settings,
        prefix: &str,
        presign: bool,
    ) {
        use ota_server::bundle_store::{spec, BundleStoreRef, StoreSpec};
        let Ok(StoreSpec::S3(mut s3)) = StoreSpec::parse(&self.bundle_store_url(prefix)) else {
            panic!("the kit's S3 URL does not parse")
        };
        s3.access_key_id = Some(self.access_key_id.clone());
        s3.secret_access_key = Some(self.secret_access_key.clone());
        settings.config.bundle_store =
            BundleStoreRef::open(&StoreSpec::S3(s3), &settings.config.data_dir)
                .expect("an S3 bundle store for the kit's server");
        settings.config.presign_downloads = presign.then_some(spec::PRESIGN_TTL);
    }
}
