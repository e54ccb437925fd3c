//! The one way this project replaces a file that must survive a power cut.
//!
//! A temp file with a random name is created in the target's own directory (`O_CREAT|O_EXCL|O_NOFOLLOW`, so a
//! link planted there is never followed and nothing it points to is overwritten), filled, fsynced, renamed over
//! the target, and the directory is fsynced. A power cut leaves the old file or the new one, never a mix; a
//! failure or a drop before [`AtomicFile::commit`] removes the temp file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::OFlag;

/// A file operation that failed, naming the step and the path.
#[derive(Debug)]
pub struct FileError {
    /// What was being done ("creating", "syncing", "renaming into"...).
    pub op: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// Why it failed.
    pub source: io::Error,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl FileError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> FileError {
        FileError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The directory a file lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, so an entry created or renamed in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::new("syncing directory", dir, e))
}

/// A name no other writer picks: pid, time and a process-wide counter, hashed into 16 hex digits.
fn temp_name(target: &Path) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64: spreads the inputs over all bits so names do not look sequential.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let mut name = temp_prefix(target);
    name.push(format!("{x:016x}{TEMP_SUFFIX}"));
    name
}

/// Ends every temp name, so a sweep can tell a power cut's leftovers from other files.
const TEMP_SUFFIX: &str = ".tmp";

/// `.<file name>.`: what every temp name for `target` starts with.
fn temp_prefix(target: &Path) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(target.file_name().unwrap_or_default());
    prefix.push(".");
    prefix
}

/// A fresh random path beside `target` for writers that make the new entry themselves (a symlink to rename over
/// a link, say) but want the same unguessable, sweepable names as [`AtomicFile`]. The caller creates it
/// exclusively and picks another on `AlreadyExists`.
pub fn temp_path(target: &Path) -> PathBuf {
    parent_dir(target).join(temp_name(target))
}

/// Whether `name` (an entry of `target`'s directory) is one of `target`'s temp names, e.g. left by a power cut.
pub fn is_temp_of(target: &Path, name: &std::ffi::OsStr) -> bool {
    let (name, prefix) = (name.to_string_lossy(), temp_prefix(target));
    name.starts_with(&*prefix.to_string_lossy()) && name.ends_with(TEMP_SUFFIX)
}

/// A file being written that replaces `path` only when [`commit`](AtomicFile::commit)ted.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates the temp file beside `path` with `mode` (independent of the umask).
    pub fn create(path: &Path, mode: u32) -> Result<AtomicFile, FileError> {
        if path.file_name().is_none() {
            return Err(FileError::new(
                "writing",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
            ));
        }
        let dir = parent_dir(path);
        loop {
            let temp = dir.join(temp_name(path));
            // Readable too: a writer may check what it wrote before committing (a re-signed bundle is verified).
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&temp);
            match opened {
                Ok(file) => {
                    let mut atomic = AtomicFile {
                        path: path.to_path_buf(),
                        temp,
                        file: Some(file),
                    };
                    let f = atomic.file();
                    f.set_permissions(Permissions::from_mode(mode))
                        .map_err(|e| FileError::new("setting the mode of", &atomic.temp, e))?;
                    return Ok(atomic);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(FileError::new("creating", &temp, e)),
            }
        }
    }

    /// The path this file will replace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("the file is open until commit")
    }

    /// fsyncs the data, renames the temp file over the target and fsyncs the directory.
    pub fn commit(mut self) -> Result<(), FileError> {
        let file = self.file.take().expect("commit is called once");
        file.sync_all()
            .map_err(|e| FileError::new("syncing", &self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.path)
            .map_err(|e| FileError::new("renaming into", &self.path, e))?;
        // The rename happened: nothing is left to clean up, whatever the directory sync says.
        self.temp = PathBuf::new();
        sync_dir(parent_dir(&self.path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// What a refused link says: the fix is the operator's (remove it, or name the real file), never to follow it.
fn link_refused(path: &Path, what: &str) -> FileError {
    let why = format!(
        "it is a symbolic link{what}, and such links are never followed here: remove it, or configure the file it points to"
    );
    FileError::new("opening", path, io::Error::other(why))
}

/// Opens the existing or new file at `path` as `options` say (create, append, read, write), without following a
/// symbolic link at its last component and only if it is a regular file with one name. A link, FIFO, device or
/// hard link planted where a lock, log or environment file belongs is refused, so nothing it points to is
/// created, locked or written. The directories above `path` are trusted (they belong to the service). Never ask
/// for `truncate`: the checks run after the open.
pub fn open_no_follow(path: &Path, options: &mut OpenOptions) -> Result<File, FileError> {
    let file = open_flagged(path, options).map_err(|e| match e.raw_os_error() {
        Some(nix::libc::ELOOP) => link_refused(path, ""),
        _ => FileError::new("opening", path, e),
    })?;
    check_opened(&file, path, false)?;
    Ok(file)
}

/// The whole file at `path`, read as [`open_no_follow`] opens it (never through a planted link, so a secret it
/// points to never ends up in a token or a report); `None` if there is no file.
pub fn read_no_follow(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    use std::io::Read;
    let mut file = match open_no_follow(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(e) if e.source.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| FileError::new("reading", path, e))?;
    Ok(Some(bytes))
}

/// Like [`open_no_follow`] for storage that may be a device: a regular file or a block/character device at `path`,
/// or a link to a device (udev's `/dev/disk/by-*` names are links). A link to anything else (a regular file
/// elsewhere, say) is refused, so a link planted at an environment file's path never redirects the write.
pub fn open_device_or_file(path: &Path, options: &mut OpenOptions) -> Result<File, FileError> {
    match open_flagged(path, options) {
        Ok(file) => {
            check_opened(&file, path, true)?;
            Ok(file)
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            // Checked on the opened descriptor, not the name: a link swapped after a check changes nothing.
            let file = options
                .custom_flags((OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
                .open(path)
                .map_err(|e| FileError::new("opening", path, e))?;
            let kind = file
                .metadata()
                .map_err(|e| FileError::new("inspecting", path, e))?
                .file_type();
            if kind.is_block_device() || kind.is_char_device() {
                return Ok(file);
            }
            Err(link_refused(path, " to something other than a device"))
        }
        Err(e) => Err(FileError::new("opening", path, e)),
    }
}

/// Opens with `O_NOFOLLOW` (a link fails with `ELOOP`) and `O_NONBLOCK` (a planted FIFO cannot hang the open).
fn open_flagged(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).bits())
        .open(path)
}

/// A regular file with one name (or, with `devices`, also a device), checked on the open descriptor.
fn check_opened(file: &File, path: &Path, devices: bool) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file
        .metadata()
        .map_err(|e| FileError::new("inspecting", path, e))?;
    let kind = meta.file_type();
    let refuse = |why: &str| Err(FileError::new("opening", path, io::Error::other(why)));
    if devices && (kind.is_block_device() || kind.is_char_device()) {
        return Ok(());
    }
    if !kind.is_file() {
        return refuse("it is not a regular file: remove it");
    }
    if meta.nlink() > 1 {
        return refuse("it has another name (a hard link), so writing it would change that file too: remove it");
    }
    Ok(())
}

/// Replaces `path` by `bytes` with `mode`: the old file or the new one survives a power cut.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut file = AtomicFile::create(path, mode)?;
    let temp = file.temp.clone();
    file.write_all(bytes)
        .map_err(|e| FileError::new("writing", &temp, e))?;
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one", 0o600).unwrap();
        write_atomically(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(entries(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_dropped_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").unwrap();
        let mut f = AtomicFile::create(&path, 0o644).unwrap();
        f.write_all(b"half").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["f"]);
    }

    #[test]
    fn a_planted_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("env");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomically(&path, b"new", 0o644).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    fn append() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.append(true).create(true).mode(0o600);
        o
    }

    #[test]
    fn open_no_follow_refuses_planted_links_fifos_and_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let log = dir.path().join("log");
        // A link to an existing file, and a dangling one whose target an O_CREAT open would create.
        for target in [victim.clone(), dir.path().join("created-through-link")] {
            std::os::unix::fs::symlink(&target, &log).unwrap();
            let err = open_no_follow(&log, &mut append()).unwrap_err();
            assert!(err.to_string().contains("symbolic link"), "{err}");
            assert!(err.to_string().contains(&*log.to_string_lossy()), "{err}");
            std::fs::remove_file(&log).unwrap();
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!dir.path().join("created-through-link").exists());

        std::fs::hard_link(&victim, &log).unwrap();
        let err = open_no_follow(&log, &mut append()).unwrap_err();
        assert!(err.to_string().contains("hard link"), "{err}");
        std::fs::remove_file(&log).unwrap();

        nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = open_no_follow(&log, OpenOptions::new().write(true)).unwrap_err();
        assert!(err.to_string().contains(&*log.to_string_lossy()), "{err}");
        std::fs::remove_file(&log).unwrap();

        // The file itself opens, created with the asked mode.
        let mut f = open_no_follow(&log, &mut append()).unwrap();
        f.write_all(b"line\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"line\n");
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn read_no_follow_reads_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let token = dir.path().join("token");
        assert_eq!(read_no_follow(&token).unwrap(), None);
        std::os::unix::fs::symlink(&victim, &token).unwrap();
        let err = read_no_follow(&token).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&token).unwrap();
        std::fs::write(&token, b"t").unwrap();
        assert_eq!(read_no_follow(&token).unwrap(), Some(b"t".to_vec()));
    }

    #[test]
    fn open_device_or_file_follows_links_to_devices_only() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let env = dir.path().join("uboot.env");
        std::os::unix::fs::symlink(&victim, &env).unwrap();
        let err = open_device_or_file(&env, OpenOptions::new().write(true)).unwrap_err();
        assert!(err.to_string().contains("other than a device"), "{err}");
        std::fs::remove_file(&env).unwrap();
        std::os::unix::fs::symlink("/dev/null", &env).unwrap();
        open_device_or_file(&env, OpenOptions::new().write(true)).unwrap();
        std::fs::remove_file(&env).unwrap();
        std::fs::write(&env, b"env").unwrap();
        open_device_or_file(&env, OpenOptions::new().write(true)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn temp_names_differ() {
        let p = Path::new("/x/state");
        let a = temp_name(p);
        let b = temp_name(p);
        assert_ne!(a, b);
        assert!(a.to_string_lossy().starts_with(".state."));
    }

    #[test]
    fn temp_paths_are_beside_the_target_and_recognised() {
        let p = Path::new("/x/state");
        let t = temp_path(p);
        assert_eq!(t.parent(), Some(Path::new("/x")));
        assert_ne!(t, temp_path(p));
        assert!(is_temp_of(p, t.file_name().unwrap()));
        assert!(!is_temp_of(p, std::ffi::OsStr::new("state")));
        assert!(!is_temp_of(
            p,
            std::ffi::OsStr::new(".other.0123456789abcdef.tmp")
        ));
        assert!(!is_temp_of(
            p,
            std::ffi::OsStr::new(".state.0123456789abcdef.new")
        ));
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = write_atomically(Path::new("/nonexistent-dir-ota/f"), b"x", 0o644).unwrap_err();
        assert_eq!(err.op, "creating");
        assert!(err.to_string().contains("/nonexistent-dir-ota/"), "{err}");
    }

    /// Moved from the keys crate, whose `write_file_atomically` this writer replaced.
    #[test]
    fn write_atomically_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        write_atomically(&path, b"one", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        write_atomically(&path, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o644);
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);

        let missing = dir.path().join("no-such-dir/state.json");
        let err = write_atomically(&missing, b"x", 0o644).unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
    }
}
