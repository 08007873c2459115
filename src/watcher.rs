//! Hot reload on edit: watches the config file and runs the same
//! [`Engine::reload`](crate::engine::Engine::reload) as `POST /reload` and SIGHUP.
//!
//! The watch is a cheap poll of the file's metadata (size, modification time and, on unix,
//! device and inode) four times a second, not an OS notification API: it needs no extra
//! crate and no platform backend, follows a symlinked config to its target, sees an editor
//! that replaces the file by rename (new inode) as well as one that writes in place (new
//! size or time), and costs one `stat` per tick. A change is acted on once the metadata has
//! stayed the same for one tick (debounce), so an edit shows within about half a second and
//! a half-written file is not read. A missing file (between an editor's delete and rename)
//! is waited out. This module only reads metadata; the engine reads and validates the file.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::engine::Engine;

/// How often the file's metadata is checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What identifies one version of the file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    dev: u64,
    #[cfg(unix)]
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            dev: m.dev(),
            #[cfg(unix)]
            ino: m.ino(),
        })
    }
}

/// The debounce: feed it each tick's stamp, it says when to reload.
#[derive(Debug)]
struct Debounce {
    /// The version last acted on (or present at start).
    current: Option<Stamp>,
    /// A new version seen on the previous tick, waiting to settle.
    pending: Option<Stamp>,
}

impl Debounce {
    fn new(initial: Option<Stamp>) -> Debounce {
        Debounce {
            current: initial,
            pending: None,
        }
    }

    /// True when the file changed and has now been stable for a tick.
    fn tick(&mut self, seen: Option<Stamp>) -> bool {
        let Some(seen) = seen else {
            // Missing for now (an editor between delete and rename): wait for it.
            self.pending = None;
            return false;
        };
        if self.current.as_ref() == Some(&seen) {
            self.pending = None;
            return false;
        }
        if self.pending.as_ref() == Some(&seen) {
            self.current = Some(seen);
            self.pending = None;
            return true;
        }
        self.pending = Some(seen);
        false
    }
}

/// The running watcher. Stop it with [`ConfigWatcher::stop`]; dropping it stops it too.
pub struct ConfigWatcher {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts watching the engine's config file (does nothing when it has none). Used by the
/// headless `serve` and the tray alike.
pub fn start(engine: &Engine) -> ConfigWatcher {
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = engine
        .config_path()
        .cloned()
        .map(|path| tokio::spawn(watch(engine.clone(), path, stop_rx)));
    ConfigWatcher {
        stop: Some(stop_tx),
        task,
    }
}

impl ConfigWatcher {
    /// Stops watching and waits for a reload in progress to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn stamp(path: &Path) -> Option<Stamp> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Stamp::of(&path))
        .await
        .ok()
        .flatten()
}

async fn watch(engine: Engine, path: PathBuf, mut stop: oneshot::Receiver<()>) {
    let mut debounce = Debounce::new(stamp(&path).await);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {}
        }
        if debounce.tick(stamp(&path).await) {
            tracing::info!("config file {} changed; reloading", path.display());
            // Errors are logged and recorded for /status by reload itself.
            let _ = engine.reload().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(len: u64) -> Option<Stamp> {
        Some(Stamp {
            len,
            modified: None,
            #[cfg(unix)]
            dev: 1,
            #[cfg(unix)]
            ino: 1,
        })
    }

    #[test]
    fn a_change_is_acted_on_once_it_settled() {
        let mut d = Debounce::new(s(10));
        assert!(!d.tick(s(10)));
        assert!(!d.tick(s(0)), "truncated mid-write");
        assert!(!d.tick(s(12)), "still being written");
        assert!(d.tick(s(12)));
        assert!(!d.tick(s(12)), "acted on once");
        // Deleted, then renamed into place.
        assert!(!d.tick(None));
        assert!(!d.tick(s(14)));
        assert!(d.tick(s(14)));
        // Back to an earlier version is still a change.
        assert!(!d.tick(s(10)));
        assert!(d.tick(s(10)));
    }

    #[test]
    fn a_file_created_after_start_is_picked_up() {
        let mut d = Debounce::new(None);
        assert!(!d.tick(None));
        assert!(!d.tick(s(5)));
        assert!(d.tick(s(5)));
    }

    #[test]
    fn stamps_see_in_place_writes_and_replacement_by_rename() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "a = 1\n").expect("write");
        let first = Stamp::of(&path);
        assert!(first.is_some());
        assert_eq!(Stamp::of(&path), first);
        std::fs::write(&path, "a = 12\n").expect("write in place");
        let second = Stamp::of(&path);
        assert_ne!(second, first);
        let tmp = dir.path().join("config.toml.swp");
        std::fs::write(&tmp, "a = 13\n").expect("write temp");
        std::fs::rename(&tmp, &path).expect("rename");
        // Same size as the previous version: the new inode tells them apart.
        assert_ne!(Stamp::of(&path), second);
        assert_eq!(Stamp::of(&dir.path().join("gone.toml")), None);
    }
}
