//! The ready file (`serve --ready-file PATH`, `run --ready-file PATH`): once the agent
//! listens, it writes the address it listens on there, one line such as
//! `http://127.0.0.1:49321`. A script or test that starts the agent with `--port 0` (any
//! free port) reads the port the system picked from it, instead of guessing a free port
//! beforehand and racing other programs for it.
//!
//! The file is cleared before the agent binds (a reader never takes an earlier run's
//! address for this one's), written atomically once the socket listens (a reader sees no
//! file or the whole line, never half of it) and removed when the agent stops. This
//! module owns only that file; it knows nothing of the server.

use std::path::{Path, PathBuf};

/// Errors of the ready file. Each ends the start-up: whoever asked for the file is
/// waiting on it.
#[derive(Debug, thiserror::Error)]
pub enum ReadyFileError {
    /// A file left by an earlier run cannot be removed.
    #[error("cannot clear the ready file {}", path.display())]
    Clear {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address cannot be written.
    #[error("cannot write the ready file {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The line written for an agent reachable at `base_url` (the admin address, e.g.
/// `http://127.0.0.1:49321`).
pub fn contents(base_url: &str) -> String {
    format!("{base_url}\n")
}

/// The ready file of one run.
#[derive(Debug)]
pub struct ReadyFile {
    path: PathBuf,
}

impl ReadyFile {
    /// Takes charge of `path`, removing a file an earlier run left there.
    pub async fn clear(path: &Path) -> Result<ReadyFile, ReadyFileError> {
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ReadyFileError::Clear {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        Ok(ReadyFile {
            path: path.to_path_buf(),
        })
    }

    /// Says that the agent listens at `base_url`.
    pub async fn announce(&self, base_url: &str) -> Result<(), ReadyFileError> {
        let path = self.path.clone();
        let text = contents(base_url);
        let written =
            tokio::task::spawn_blocking(move || crate::files::write_atomic(&path, text.as_bytes()))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        written.map_err(|source| ReadyFileError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Removes the file as the agent stops; a failure is logged, not returned (the agent
    /// stops either way, and the next run clears the file before it binds).
    pub async fn withdraw(self) {
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove the ready file {}: {e}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_file_holds_one_line_with_the_address() {
        assert_eq!(
            contents("http://127.0.0.1:49321"),
            "http://127.0.0.1:49321\n"
        );
    }

    #[tokio::test]
    async fn a_ready_file_is_cleared_announced_and_withdrawn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run").join("ready");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, "http://127.0.0.1:1\n").expect("stale file");
        let ready = ReadyFile::clear(&path).await.expect("clear");
        assert!(!path.exists(), "an earlier run's address is gone");
        ready
            .announce("http://127.0.0.1:49321")
            .await
            .expect("announce");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "http://127.0.0.1:49321\n"
        );
        ready.withdraw().await;
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_ready_file_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A plain file where the ready file's directory should be.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "").expect("file");
        let path = blocker.join("ready");
        let ready = ReadyFile::clear(&path).await;
        let err = match ready {
            Ok(ready) => ready
                .announce("http://127.0.0.1:1")
                .await
                .expect_err("cannot write under a file"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("ready file"), "{err}");
        assert!(err.to_string().contains("blocker"), "{err}");
    }
}
