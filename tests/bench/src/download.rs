//! `ota-bench download`: a bundle of about 1 GiB downloaded with `curl` from `ota-server` (local bundle store,
//! admin token) and from nginx (Debian's package, `sendfile on`) serving the same file on 127.0.0.1, in one
//! interleaved run. Target: the server takes at most [`MAX_RATIO`] times nginx's time (issue 14).
//!
//! The bundle is made once from incompressible noise (`ota-bundle create --level 1`, so the bundle is as large
//! as the image) in the work directory; both servers read it from the page cache (warmed first), so the
//! comparison is of the serving path, not of the disk.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::bundle::{size_of, warm_page_cache};
use crate::harness::{find_program, require_tools, run_interleaved, tool_binary, Case, GNU_TIME};
use crate::report::{table, Row, RowSpec, Target};

/// The server may take at most this many times nginx's time for the same file.
const MAX_RATIO: f64 = 1.1;
/// Tokens of the throwaway server.
const ADMIN_TOKEN: &str = "ota-bench-download-admin-token";
const ENROLLMENT_SECRET: &str = "ota-bench-download-enrollment";

/// Arguments of `ota-bench download`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Size of the image in the bundle, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mb: u64,
    /// Measured rounds (each downloads once from each server, in rotating order). Medians are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Write the full results as JSON here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// The ota-server binary; default: next to this binary, else PATH.
    #[arg(long, value_name = "PATH")]
    ota_server: Option<PathBuf>,
    /// The ota-bundle binary that makes the bundle.
    #[arg(long, value_name = "PATH")]
    ota_bundle: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: String,
    /// Directory for the image, the bundle, the server's data and nginx's files (needs ~2.1x the size free);
    /// default: a temporary directory in /tmp, removed at the end.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Exit with status 1 when the target is missed.
    #[arg(long)]
    strict: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    scenario: &'static str,
    bundle_bytes: u64,
    runs: u32,
    rows: &'a [Row],
    ratio: f64,
    pass: bool,
}

/// A child process killed and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something listens on `port`, or the child exits.
fn wait_listening(child: &mut Child, port: u16, what: &str) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start ({status})");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {addr} within 30 s")
}

/// Writes `mib` MiB of incompressible bytes (xorshift) to `path`.
fn write_noise(path: &Path, mib: u64) -> Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        out.write_all(&block)?;
    }
    out.flush()?;
    Ok(())
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// nginx.conf for serving `root` on `port`, everything under `prefix` (no system paths touched).
pub fn nginx_conf(prefix: &Path, root: &Path, port: u16, as_root: bool) -> String {
    let p = prefix.display();
    let user = if as_root { "user root;\n" } else { "" };
    format!(
        "{user}daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
         \x20 client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n\
         \x20 uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
         \x20 server {{ listen 127.0.0.1:{port}; root {}; }}\n}}\n",
        root.display()
    )
}

/// Whether this process runs as root (nginx then needs `user root;` to read the work directory).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs the scenario.
pub fn run(args: Args) -> Result<bool> {
    require_tools(&[(GNU_TIME, "time"), ("curl", "curl"), (&args.nginx, "nginx")])?;
    let ota_server = tool_binary(
        args.ota_server.as_deref(),
        "ota-server",
        "cargo build --release -p ota-server",
    )?;
    let ota_bundle = tool_binary(
        args.ota_bundle.as_deref(),
        "ota-bundle",
        "cargo build --release -p ota-bundle-tool",
    )?;
    let curl = find_program("curl").context("curl not found")?;
    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            dir.canonicalize()?
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("ota-bench-download-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // nginx's worker must reach the file.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let www = work.join("www");
    fs::create_dir_all(&www)?;

    eprintln!(
        "ota-bench download: {} MiB, {} run(s), work dir {}",
        args.size_mb,
        args.runs,
        work.display()
    );
    let image = work.join("image.img");
    write_noise(&image, args.size_mb)?;
    let key = work.join("key");
    run_ok(
        Command::new(&ota_bundle).arg("keygen").arg(&key),
        "ota-bundle keygen",
    )?;
    let bundle = www.join("bundle.otab");
    run_ok(
        Command::new(&ota_bundle)
            .args([
                "create",
                "--version",
                "1.0.0",
                "--compatible",
                "ota-bench",
                "--level",
                "1",
                "--force",
            ])
            .arg("--image")
            .arg(format!("rootfs={}", image.display()))
            .arg("--key")
            .arg(key.with_extension("key"))
            .arg("-o")
            .arg(&bundle),
        "ota-bundle create",
    )?;
    fs::remove_file(&image)?;
    let bundle_bytes = size_of(&bundle)?;

    let server_port = free_port()?;
    let mut server = Daemon(
        Command::new(&ota_server)
            .args(["serve", "--listen", &format!("127.0.0.1:{server_port}")])
            .arg("--data-dir")
            .arg(work.join("server"))
            .arg("--trust")
            .arg(key.with_extension("pub"))
            .env("OTA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("OTA_ENROLLMENT_SECRET", ENROLLMENT_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ota-server")?,
    );
    wait_listening(&mut server.0, server_port, "ota-server")?;
    let base = format!("http://127.0.0.1:{server_port}");
    let published = run_ok(
        Command::new(&curl)
            .args([
                "-sS",
                "--fail-with-body",
                "-H",
                &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            ])
            // -T streams the file (--data-binary reads all of it into memory first: curl refuses 1 GiB).
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/octet-stream",
                "-T",
            ])
            .arg(&bundle)
            .arg(format!("{base}/api/bundles")),
        "publishing the bundle",
    )?;
    let id = serde_json::from_str::<serde_json::Value>(&published)?["bundle_id"]
        .as_str()
        .context("no bundle_id in the publish answer")?
        .to_string();

    let nginx_port = free_port()?;
    let conf = work.join("nginx.conf");
    fs::write(
        &conf,
        nginx_conf(&work, &www, nginx_port, running_as_root()),
    )?;
    let mut nginx = Daemon(
        Command::new(&args.nginx)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx")?,
    );
    wait_listening(&mut nginx.0, nginx_port, "nginx")?;

    warm_page_cache(&bundle)?;
    warm_page_cache(&work.join("server/blobs").join(&id))?;
    let get = |name: &str, label: &str, url: String, auth: bool| {
        let mut c = Case::new(name, label, &curl).args(["-sS", "--fail", "-o", "/dev/null"]);
        if auth {
            c = c.args([
                "-H".to_string(),
                format!("Authorization: Bearer {ADMIN_TOKEN}"),
            ]);
        }
        c.args([url])
    };
    let mut cases = vec![
        get(
            "ota-server",
            "curl ota-server /api/bundles/ID/download",
            format!("{base}/api/bundles/{id}/download"),
            true,
        ),
        get(
            "nginx",
            "curl nginx (sendfile on)",
            format!("http://127.0.0.1:{nginx_port}/bundle.otab"),
            false,
        ),
    ];
    eprintln!("warm-up (untimed)");
    for c in cases.iter_mut() {
        c.run_once(&work)?;
        c.samples.clear();
    }
    eprintln!("ota-server vs nginx, interleaved:");
    run_interleaved(&mut cases, args.runs as usize, &work)?;
    drop(nginx);
    drop(server);

    let rows: Vec<Row> = [
        RowSpec::named(
            &cases,
            "ota-server",
            Some("nginx"),
            vec![Target::MaxRatio { ratio: MAX_RATIO }],
        ),
        RowSpec::named(&cases, "nginx", None, vec![]),
    ]
    .iter()
    .map(|s| Row::new(s, bundle_bytes))
    .collect();
    let pass = rows.iter().all(Row::pass);
    let ratio = rows[0].ratio.unwrap_or(f64::NAN);
    println!();
    println!(
        "ota-bench download: a {:.1} MB bundle over 127.0.0.1 with curl, {} run(s), medians",
        bundle_bytes as f64 / 1e6,
        args.runs
    );
    print!("{}", table(&rows));
    println!("ota-server / nginx: {ratio:.3}x (target <= {MAX_RATIO}x)");
    println!("overall: {}", if pass { "PASS" } else { "FAIL" });
    if let Some(path) = &args.json {
        let report = Report {
            scenario: "download",
            bundle_bytes,
            runs: args.runs,
            rows: &rows,
            ratio,
            pass,
        };
        fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(pass || !args.strict)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nginx_conf_keeps_everything_under_the_prefix() {
        let conf = super::nginx_conf("/w".as_ref(), "/w/www".as_ref(), 8123, false);
        assert!(conf.contains("sendfile on;") && conf.contains("listen 127.0.0.1:8123;"));
        assert!(conf.contains("pid /w/nginx.pid;") && conf.contains("root /w/www;"));
        assert!(!conf.contains("user root"));
        for line in conf
            .lines()
            .filter(|l| l.contains("_temp_path") || l.contains("_log "))
        {
            assert!(line.contains("/w/") || line.contains(" off;"), "{line}");
        }
    }
}
