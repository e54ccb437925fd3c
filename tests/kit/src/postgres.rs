//! A throwaway PostgreSQL for tests, from Debian's `postgresql` package (`initdb` and `postgres` under
//! `/usr/lib/postgresql/<version>/bin`, or on `PATH`).
//!
//! One cluster per test process, shared by every test in it: [`fresh_database`] starts it on first use (a temp
//! dir, 127.0.0.1 on a free port, unix sockets in the temp dir, `fsync` on because the store tests are about
//! durability) and creates a new database per call. The cluster stops when the last [`PgDatabase`] handle
//! drops, and at process exit even when the process is killed: the server runs under a shell started with
//! `setpriv --pdeathsig` from a thread that lives as long as the process. As root (CI), the server runs as the `postgres` user the
//! package creates, which owns the temp dir; PostgreSQL refuses to run as root.
//!
//! ```no_run
//! let Some(db) = ota_testkit::postgres::fresh_database() else { return }; // SKIPPED (fails under CI)
//! let url = db.url(); // postgres://ota@127.0.0.1:PORT/db_1
//! ```

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The superuser of every test cluster (trust authentication: the cluster only listens on loopback and in its
/// own temp dir).
pub const SUPERUSER: &str = "ota";

/// How long a cluster may take to accept connections after `postgres` started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static CLUSTER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// A new, empty database on this process's cluster, or `None` (after a SKIPPED line; a panic under CI) when
/// PostgreSQL is not installed. Panics when the cluster cannot start, with its log.
pub fn fresh_database() -> Option<PgDatabase> {
    let bin = bin_dir()?;
    let cluster = {
        let mut shared = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        match shared.upgrade() {
            Some(cluster) => cluster,
            None => {
                let cluster = Arc::new(Cluster::start(&bin).unwrap_or_else(|e| panic!("{e}")));
                *shared = Arc::downgrade(&cluster);
                cluster
            }
        }
    };
    let name = cluster.create_database().unwrap_or_else(|e| panic!("{e}"));
    Some(PgDatabase {
        url: cluster.url(&name),
        name,
        cluster,
    })
}

/// Where the PostgreSQL server binaries are: the newest `/usr/lib/postgresql/*/bin` with `initdb`, else the
/// directory of `initdb` on `PATH`. `None` after [`crate::tools::missing`] when there is none.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    if let Some(initdb) = crate::tools::find("initdb") {
        let real = fs::canonicalize(&initdb).unwrap_or(initdb);
        return real.parent().map(Path::to_path_buf);
    }
    crate::tools::missing(
        "PostgreSQL's initdb and postgres (Debian package postgresql)",
        std::thread::current().name().unwrap_or("this test"),
    );
    None
}

/// A database on the shared cluster; keeps the cluster running while it lives.
pub struct PgDatabase {
    url: String,
    name: String,
    cluster: Arc<Cluster>,
}

impl PgDatabase {
    /// `postgres://ota@127.0.0.1:PORT/NAME`.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The cluster it lives on.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

/// A running test cluster.
pub struct Cluster {
    bin: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    /// Dropping the sender tells the keeper thread to stop the server.
    stop: Mutex<Option<mpsc::Sender<()>>>,
    keeper: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_db: AtomicU64,
    /// Time from `initdb` to the first accepted connection.
    pub started_in: Duration,
}

impl Cluster {
    fn start(bin: &Path) -> Result<Cluster, String> {
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("ota-pg-")
            .tempdir()
            .map_err(|e| format!("test PostgreSQL: temp dir: {e}"))?;
        let data = dir.path().join("data");
        let as_root = is_root();
        if as_root {
            // PostgreSQL refuses to run as root: the package's `postgres` user owns the cluster.
            let status = Command::new("chown")
                .args(["postgres:", &dir.path().to_string_lossy()])
                .status()
                .map_err(|e| format!("test PostgreSQL: chown: {e}"))?;
            if !status.success() {
                return Err("test PostgreSQL: cannot chown the temp dir to the `postgres` user (is the postgresql package installed?)".into());
            }
        }
        let out = unprivileged(as_root, &bin.join("initdb"))
            .args(["-D", &data.to_string_lossy(), "-U", SUPERUSER])
            .args([
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("test PostgreSQL: running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "test PostgreSQL: initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let port = free_port();
        let (stop, stopped) = mpsc::channel::<()>();
        let (spawned, child) = mpsc::channel::<std::io::Result<()>>();
        let mut command = unprivileged(as_root, &bin.join("postgres"));
        command
            .args(["-D", &data.to_string_lossy()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("port={port}")])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.path().display()),
            ])
            .args(["-c", "fsync=on", "-c", "max_connections=300"])
            .args(["-c", "shared_buffers=32MB"]);
        let keeper = spawn_keeper(command, dir.path().to_path_buf(), spawned, stopped);
        match child.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("test PostgreSQL: starting postgres: {e}")),
            Err(_) => return Err("test PostgreSQL: the keeper thread died".into()),
        }
        // From here on, dropping `cluster` stops the server and removes the temp dir.
        let mut cluster = Cluster {
            bin: bin.to_path_buf(),
            port,
            dir,
            stop: Mutex::new(Some(stop)),
            keeper: Mutex::new(Some(keeper)),
            next_db: AtomicU64::new(1),
            started_in: Duration::ZERO,
        };
        cluster.wait_ready()?;
        cluster.started_in = began.elapsed();
        eprintln!(
            "test PostgreSQL: cluster on 127.0.0.1:{port} ready in {:.2?}",
            cluster.started_in
        );
        Ok(cluster)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", SUPERUSER, "-d", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if self.keeper_finished() || Instant::now() > deadline {
                return Err(format!(
                    "test PostgreSQL: the server did not start on 127.0.0.1:{}; its log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn keeper_finished(&self) -> bool {
        self.keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|k| k.is_finished())
            .unwrap_or(true)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket (and the data directory, `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// URL of database `name` as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `psql` as the superuser on database `name` with `sql`; returns its output (unaligned, tuples only).
    pub fn psql(&self, name: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, "-d", name, "-c", sql])
            .output()
            .map_err(|e| format!("test PostgreSQL: running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "test PostgreSQL: psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn create_database(&self) -> Result<String, String> {
        let name = format!("db_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }

    fn stop_server(&self) {
        drop(self.stop.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(keeper) = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = keeper.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// Runs `postgres` ([`supervised`]) from a thread that lives until told to stop or the process ends
/// (`--pdeathsig` follows the spawning thread, so it must be this long-lived one, not a test's). Stopping ends
/// in SIGQUIT (PostgreSQL's immediate shutdown: the cluster is thrown away, so its shutdown checkpoint, seconds
/// with fsync on, would be wasted) and waits.
fn spawn_keeper(
    server: Command,
    dir: PathBuf,
    spawned: mpsc::Sender<std::io::Result<()>>,
    stopped: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("ota-test-postgres".into())
        .spawn(move || {
            let child = fs::File::create(dir.join("server.log")).and_then(|out| {
                let err = out.try_clone()?;
                supervised(&server, &dir)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err)
                    .spawn()
            });
            let mut child: Child = match child {
                Ok(c) => {
                    let _ = spawned.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = spawned.send(Err(e));
                    return;
                }
            };
            // Wait for the stop signal (a dropped sender) or for the server to exit by itself.
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(200))
            {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        })
        .expect("spawning the test PostgreSQL keeper thread")
}

/// `program` as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn unprivileged(as_root: bool, program: &Path) -> Command {
    if !as_root {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--clear-groups",
        "--reset-env",
    ])
    .arg(program);
    c
}

/// Wraps `server` in a shell that gets SIGTERM when the spawning thread's process dies (`--pdeathsig`; set on
/// the shell because a change of user, as for the server, clears it), then stops the server immediately and
/// removes `dir` (a dying process runs no destructors).
fn supervised(server: &Command, dir: &Path) -> Command {
    const SCRIPT: &str = r#"dir=$1; shift
"$@" & pid=$!
trap 'kill -QUIT $pid 2>/dev/null; wait $pid; rm -rf "$dir"; exit 0' TERM INT
wait $pid"#;
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig=TERM", "sh", "-c", SCRIPT, "sh"])
        .arg(dir)
        .arg(server.get_program())
        .args(server.get_args());
    c
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port nothing listens on right now (the kernel's pick for an ephemeral bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_share_one_cluster_and_are_separate() {
        let Some(a) = fresh_database() else { return };
        let Some(b) = fresh_database() else { return };
        assert_eq!(a.cluster().port(), b.cluster().port());
        assert_ne!(a.name(), b.name());
        let cluster = a.cluster();
        cluster
            .psql(a.name(), "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
            .unwrap();
        assert_eq!(
            cluster.psql(a.name(), "SELECT x FROM t").unwrap().trim(),
            "7"
        );
        assert!(cluster.psql(b.name(), "SELECT x FROM t").is_err());
        assert_eq!(
            cluster.psql(a.name(), "SHOW fsync").unwrap().trim(),
            "on",
            "durability tests need fsync"
        );
        assert!(a.url().starts_with("postgres://ota@127.0.0.1:"));
    }

    #[test]
    fn the_cluster_stops_when_the_last_handle_drops() {
        let Some(db) = fresh_database() else { return };
        let dir = db.cluster().dir().to_path_buf();
        let pid_file = dir.join("data/postmaster.pid");
        assert!(pid_file.exists());
        drop(db);
        // Another test of this binary may still hold the cluster; only when we were the last does it stop.
        let still_shared = CLUSTER
            .lock()
            .unwrap()
            .upgrade()
            .is_some_and(|c| c.dir() == dir);
        if !still_shared {
            assert!(!dir.exists(), "the temp dir goes with the cluster");
        }
    }

    #[test]
    fn the_cluster_stops_when_the_process_exits() {
        const NAME: &str = "postgres::tests::the_cluster_stops_when_the_process_exits";
        if std::env::var_os("OTA_KIT_PG_CHILD").is_some() {
            let Some(db) = fresh_database() else {
                std::process::exit(3)
            };
            println!("CLUSTER_DIR={}", db.cluster().dir().display());
            // Exits without running a destructor, as a killed test binary would.
            std::process::exit(0);
        }
        if bin_dir().is_none() {
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture"])
            .env("OTA_KIT_PG_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CLUSTER_DIR="))
            .unwrap_or_else(|| panic!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        let dir = PathBuf::from(dir);
        crate::wait::wait_for(
            "the cluster of an exited process to stop and go",
            Duration::from_secs(20),
            || !dir.exists(),
        );
    }
}
