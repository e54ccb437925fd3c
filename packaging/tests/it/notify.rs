//! The installed `ota-server serve` and `ota-client daemon` under a fake systemd: a datagram socket as
//! NOTIFY_SOCKET and a 2 s watchdog (WATCHDOG_USEC with WATCHDOG_PID set to the service's own pid, as systemd
//! does). Each must say READY=1 and keep pinging WATCHDOG=1; the server says STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `program args` as systemd would start a `Type=notify` unit with `WatchdogSec=2s`.
fn start(program: &str, args: &[&str], socket: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        // `exec` keeps the shell's pid, so WATCHDOG_PID names the service itself.
        .arg(r#"WATCHDOG_PID=$$ WATCHDOG_USEC=2000000 exec "$@""#)
        .arg("sh")
        .arg(program)
        .args(args)
        .env("NOTIFY_SOCKET", socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// Messages received until `done` says so or 60 s pass.
fn receive(sock: &UnixDatagram, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            got.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_string),
            );
        }
    }
    got
}

fn count(got: &[String], what: &str) -> usize {
    got.iter().filter(|m| *m == what).count()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Ready, then at least two more pings: the watchdog is fed by the running service, not only at start.
fn ready_and_alive(got: &[String]) -> bool {
    got.iter().any(|m| m == "READY=1") && count(got, "WATCHDOG=1") >= 3
}

pub fn server_and_daemon_notify_systemd(bin: &Path, dir: &Path) {
    let bin = |name: &str| bin.join(name).to_str().unwrap().to_string();
    let socket = dir.join("notify");
    let sock = UnixDatagram::bind(&socket).unwrap();

    // The server: a data dir and a trust root are all it needs.
    let data = dir.join("server");
    std::fs::create_dir_all(&data).unwrap();
    let key = dir.join("release");
    let keygen = Command::new(bin("ota-bundle"))
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let trust = dir.join("release.pub");
    let server = start(
        &bin("ota-server"),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ],
        &socket,
    );
    let got = receive(&sock, ready_and_alive);
    let ready = ready_and_alive(&got);
    stop(server);
    assert!(ready, "ota-server serve under Type=notify: {got:?}");
    let got = receive(&sock, |g| g.iter().any(|m| m == "STOPPING=1"));
    assert!(
        got.iter().any(|m| m == "STOPPING=1"),
        "no STOPPING=1 on SIGTERM: {got:?}"
    );

    // The daemon: a robot with file slots and a server that is not there (it backs off, and pings meanwhile).
    let robot = dir.join("robot");
    std::fs::create_dir_all(&robot).unwrap();
    for slot in ["a", "b"] {
        std::fs::write(robot.join(slot), vec![0u8; 1 << 20]).unwrap();
    }
    std::fs::write(robot.join("cmdline"), "root=/dev/vda2 ota.slot=A\n").unwrap();
    std::fs::write(robot.join("secret"), "not-enrolled\n").unwrap();
    let p = |name: &str| robot.join(name).to_str().unwrap().to_string();
    let config = format!(
        "compatible = \"notify-test\"\ntrust_root = {trust:?}\ndata_dir = {data:?}\n\
         [slots.rootfs]\na = {a:?}\nb = {b:?}\n\
         [bootloader]\nbackend = \"file\"\nstate_file = {state:?}\n\
         [booted_slot]\nsource = \"cmdline\"\npath = {cmdline:?}\n\
         [server]\nurl = \"http://127.0.0.1:9\"\ndevice_id = \"notify-test\"\nenrollment_secret_file = {secret:?}\n\
         backoff_initial_ms = 200\nbackoff_max_secs = 1\n",
        trust = trust.to_str().unwrap(),
        data = p("data"),
        a = p("a"),
        b = p("b"),
        state = p("boot-state"),
        cmdline = p("cmdline"),
        secret = p("secret"),
    );
    std::fs::write(robot.join("client.toml"), config).unwrap();
    let daemon = start(
        &bin("ota-client"),
        &["--config", &p("client.toml"), "daemon"],
        &socket,
    );
    let got = receive(&sock, ready_and_alive);
    let ready = ready_and_alive(&got);
    stop(daemon);
    assert!(ready, "ota-client daemon under Type=notify: {got:?}");
}
