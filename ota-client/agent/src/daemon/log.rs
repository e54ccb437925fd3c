//! The daemon's log: lines go to the caller's sink, to `daemon.log` in the data directory
//! (best effort, rotated) and into a ring; the last lines are the `log_tail` of failure
//! reports, so a rollback report after the reboot carries what happened before it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ota_protocol::device::MAX_LOG_TAIL;

use ota_client_core::daemon::Level;

use super::hooks::LogSink;

/// The daemon's log in the data directory; rotated to `daemon.log.1` past [`LOG_FILE_MAX`].
pub const LOG_FILE: &str = "daemon.log";
/// Size at which `daemon.log` is rotated.
pub const LOG_FILE_MAX: u64 = 64 * 1024;
/// Log lines kept for the `log_tail` of failure reports.
const LOG_LINES: usize = 40;

/// Where the daemon's lines go.
#[derive(Clone)]
pub(super) struct Log {
    sink: LogSink,
    ring: Arc<Mutex<VecDeque<String>>>,
    file: Option<PathBuf>,
}

impl Log {
    /// A log to `sink` and, if given, to the file `file`.
    pub(super) fn new(sink: LogSink, file: Option<PathBuf>) -> Log {
        Log {
            sink,
            ring: Arc::default(),
            file,
        }
    }

    /// One line; `Info` and above are kept for the tail.
    pub(super) fn line(&self, level: Level, message: &str) {
        if level >= Level::Info {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let line = format!("{now} {level}: {message}");
            if let Some(path) = &self.file {
                append_log(path, &line);
            }
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() == LOG_LINES {
                ring.pop_front();
            }
            ring.push_back(line);
        }
        (self.sink)(level, message);
    }

    fn lines(&self) -> Vec<String> {
        if let Some(path) = &self.file {
            let mut text = read_log(&rotated(path));
            text.push_str(&read_log(path));
            if !text.is_empty() {
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                return lines[lines.len().saturating_sub(LOG_LINES)..].to_vec();
            }
        }
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }

    /// The last lines, at most [`MAX_LOG_TAIL`] bytes (cut at a character boundary).
    pub(super) fn tail(&self) -> String {
        let text = self.lines().join("\n");
        if text.len() <= MAX_LOG_TAIL {
            return text;
        }
        let mut cut = text.len() - MAX_LOG_TAIL;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// A log file's text, never read through a planted link (the tail goes into reports to the server).
fn read_log(path: &Path) -> String {
    match ota_image_io::atomic::read_no_follow(path) {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    }
}

/// Appends a line to the log file, rotating it when it is full. Failures are ignored: the
/// log is a convenience, never a reason to stop updating.
fn append_log(path: &Path, line: &str) {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_FILE_MAX) {
        let _ = std::fs::rename(path, rotated(path));
    }
    // A link planted at the log's name is refused, not appended through (and its target never created).
    let opened = ota_image_io::atomic::open_no_follow(
        path,
        std::fs::OpenOptions::new().create(true).append(true),
    );
    if let Ok(mut f) = opened {
        let _ = writeln!(f, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_is_bounded() {
        let log = Log::new(Arc::new(|_, _| {}), None);
        for i in 0..100 {
            log.line(Level::Info, &format!("line {i} {}", "é".repeat(2000)));
        }
        log.line(Level::Debug, "not kept");
        let tail = log.tail();
        assert!(tail.len() <= MAX_LOG_TAIL);
        assert!(tail.ends_with(&"é".repeat(10)));
        assert!(!tail.contains("not kept"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let log = Log::new(Arc::new(|_, _| {}), Some(path.clone()));
        for i in 0..2000 {
            log.line(Level::Info, &format!("line {i} {}", "x".repeat(100)));
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= LOG_FILE_MAX + 200 && size(&rotated(&path)) <= LOG_FILE_MAX + 200);
        // A new daemon (after a reboot) sees the previous one's lines.
        let after_reboot = Log::new(Arc::new(|_, _| {}), Some(path));
        let lines = after_reboot.lines();
        assert_eq!(lines.len(), LOG_LINES);
        assert!(lines.last().unwrap().contains("line 1999"));
    }

    /// A link planted at the log's names is neither appended through nor read into report tails.
    #[test]
    fn planted_links_are_not_written_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret\n").unwrap();
        let path = dir.path().join(LOG_FILE);
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        std::os::unix::fs::symlink(&victim, rotated(&path)).unwrap();
        let log = Log::new(Arc::new(|_, _| {}), Some(path));
        log.line(Level::Info, "hello");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret\n");
        let tail = log.tail();
        assert!(!tail.contains("secret"), "{tail}");
        assert!(tail.contains("hello"), "{tail}");
    }
}
