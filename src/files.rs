//! Reading the agent's own small files (the config, `state.json`, the last good config)
//! so that nothing the file system does can hang it: only regular files are read, up to a
//! size cap, within a time bound.
//!
//! Why each bound: opening a FIFO for reading waits for a writer forever, and a device
//! such as `/dev/zero` never ends; a file on a network mount that stopped answering blocks
//! the reading thread in the kernel. A reload that never ends holds the reload lock (so
//! `POST /reload` and `POST /keys/reload` hang behind it), and a runtime waits for its
//! blocking tasks when it is dropped (so SIGTERM would never complete and the final state
//! save would be skipped). So the file is opened with `O_NONBLOCK` (which a regular file
//! ignores), its type is checked on the open descriptor, and the read runs on a thread of
//! its own that the caller stops waiting for after [`READ_TIMEOUT`].
//!
//! Writing them goes through [`write_atomic`], so a crash or a full disk leaves the old
//! file or the new one, never half of one and never a temp file. This module knows
//! nothing of what the bytes mean.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a read may take before the caller gives up on it (the reading thread, stuck
/// in the kernel, is left behind; it cannot be cancelled and ends when the read does).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a file was not read although it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a regular file: "a FIFO", "a directory", "a character device", ...
    NotRegular(&'static str),
    /// Larger than the cap.
    TooLarge {
        /// Its size (or what was read before giving up).
        len: u64,
        /// The cap.
        max: u64,
    },
    /// The read did not finish within the time bound.
    TimedOut(Duration),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotRegular(kind) => write!(
                f,
                "is not a regular file ({kind}); only regular files are read, so that a pipe or a device cannot hang the agent"
            ),
            Refusal::TooLarge { len, max } => write!(
                f,
                "is {} ({len} bytes), more than the {} allowed; is it the right file?",
                size_text(*len),
                size_text(*max)
            ),
            Refusal::TimedOut(after) => write!(
                f,
                "could not be read within {}s (is it on a network mount that stopped answering?)",
                after.as_secs()
            ),
        }
    }
}

/// A size for people: "5.0 MiB", "512 bytes".
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

/// Why [`read`] returned no bytes.
#[derive(Debug)]
pub enum ReadError {
    /// The file exists but is not one to read (see [`Refusal`]).
    Refused(Refusal),
    /// The OS said no (missing, permission denied, ...).
    Io(std::io::Error),
}

impl ReadError {
    /// The error as an `io::Error`, for callers that only report it.
    pub fn into_io(self) -> std::io::Error {
        match self {
            ReadError::Io(e) => e,
            ReadError::Refused(r) => std::io::Error::other(r.to_string()),
        }
    }
}

/// What kind of file this is, in words, when it is not a regular file.
fn not_regular(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        return None;
    }
    if file_type.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Some("a FIFO");
        }
        if file_type.is_socket() {
            return Some("a socket");
        }
        if file_type.is_char_device() {
            return Some("a character device");
        }
        if file_type.is_block_device() {
            return Some("a block device");
        }
    }
    Some("not a regular file")
}

/// Opens `path` for reading without waiting on a FIFO.
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // A regular file ignores it; a FIFO opens at once instead of waiting for a writer.
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Reads a regular file of at most `max` bytes, on the calling thread, without a time
/// bound: [`read`] is the bounded one.
fn read_now(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    // The type first, without opening: a symlink is followed, as open would.
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if let Some(kind) = not_regular(meta.file_type()) {
        return Err(ReadError::Refused(Refusal::NotRegular(kind)));
    }
    let file = open(path).map_err(ReadError::Io)?;
    // Again on what was opened: the path may have been replaced in between.
    let meta = file.metadata().map_err(ReadError::Io)?;
    if let Some(kind) = not_regular(meta.file_type()) {
        return Err(ReadError::Refused(Refusal::NotRegular(kind)));
    }
    if meta.len() > max {
        return Err(ReadError::Refused(Refusal::TooLarge {
            len: meta.len(),
            max,
        }));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One byte past the cap tells a file that grew since the check.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::Refused(Refusal::TooLarge {
            len: bytes.len() as u64,
            max,
        }));
    }
    Ok(bytes)
}

/// Reads `path` if it is a regular file of at most `max` bytes, giving up after
/// `timeout`. Blocks the calling thread for at most about `timeout`: call it from
/// `spawn_blocking` in async code.
pub fn read_within(path: &Path, max: u64, timeout: Duration) -> Result<Vec<u8>, ReadError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned: PathBuf = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("llm-rotator-read".into())
        .spawn(move || {
            let _ = tx.send(read_now(&owned, max));
        });
    if spawned.is_err() {
        // No thread to spare (resource limits): read here, still refusing non-files.
        return read_now(path, max);
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(ReadError::Refused(Refusal::TimedOut(timeout))),
    }
}

/// [`read_within`] with [`READ_TIMEOUT`].
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    read_within(path, max, READ_TIMEOUT)
}

/// Replaces `path` with `bytes` so that a crash or power cut leaves either the old or the
/// new content: write a temp file beside it, fsync it, rename it over, fsync the dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    // Whatever fails (or panics) after the temp file exists, it does not stay behind.
    let mut cleanup = RemoveOnDrop(Some(&tmp));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written?;
    cleanup.0 = None;
    sync_dir(dir);
    Ok(())
}

/// Removes a file when dropped, unless disarmed (its path taken out).
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove {}: {e}", path.display());
                }
            }
        }
    }
}

/// Makes the rename itself durable. Some file systems refuse to sync a directory; the
/// rename is then as durable as that file system makes it, which is not worth failing for.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!("cannot sync {}: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Renames a bad file `path` to `<name>.corrupt-<UTC time>` (with a counter if that
/// exists) beside it, so the agent can start fresh and the user can still look at it.
pub fn move_aside(
    path: &Path,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PathBuf, std::io::Error> {
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let stamp = now.format("%Y%m%dT%H%M%SZ");
    let mut aside = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.corrupt-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }

    #[test]
    fn a_regular_file_is_read_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").expect("write");
        assert_eq!(read(&path, 3).expect("read"), b"abc");
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("fifo");
        mkfifo(&path);
        let started = std::time::Instant::now();
        let err = read_within(&path, 1024, Duration::from_secs(30)).expect_err("refused");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(err, ReadError::Refused(Refusal::NotRegular("a FIFO"))),
            "{err:?}"
        );
        // Opening it does not wait either (the check after opening sees it too).
        assert!(open(&path).is_ok());
    }

    #[test]
    fn directories_and_devices_are_refused_and_say_what_they_are() {
        let dir = tempfile::tempdir().expect("dir");
        let err = read(dir.path(), 1024).expect_err("refused");
        assert!(matches!(
            err,
            ReadError::Refused(Refusal::NotRegular("a directory"))
        ));
        #[cfg(unix)]
        {
            let err = read(Path::new("/dev/zero"), 1024).expect_err("refused");
            assert!(matches!(
                err,
                ReadError::Refused(Refusal::NotRegular("a character device"))
            ));
        }
    }

    #[test]
    fn a_file_over_the_cap_is_refused_with_its_size() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'#'; 5 * 1024 * 1024]).expect("write");
        let Err(ReadError::Refused(refusal)) = read(&path, 4 * 1024 * 1024) else {
            panic!("read a file over the cap");
        };
        assert_eq!(
            refusal.to_string(),
            "is 5.0 MiB (5242880 bytes), more than the 4.0 MiB allowed; is it the right file?"
        );
    }

    #[test]
    fn a_missing_file_is_the_os_error() {
        let dir = tempfile::tempdir().expect("dir");
        let err = read(&dir.path().join("nope"), 10).expect_err("missing");
        assert!(
            matches!(&err, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
    }

    #[test]
    fn refusals_read_as_a_reason() {
        assert_eq!(
            Refusal::NotRegular("a FIFO").to_string(),
            "is not a regular file (a FIFO); only regular files are read, so that a pipe or a device cannot hang the agent"
        );
        assert!(Refusal::TimedOut(Duration::from_secs(5))
            .to_string()
            .starts_with("could not be read within 5s"));
        assert_eq!(size_text(512), "512 bytes");
    }
}
