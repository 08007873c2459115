//! What the user chose in the menu that is not provider state: for now, whether desktop
//! notifications are on. Kept in `settings.json` in the data dir (not in `state.json`,
//! which the pool's persistence owns and rewrites on every change), read once at start
//! and written whenever a choice changes. The value in memory is an atomic, so the tray,
//! the admin routes and the notification task read it without a lock; the write happens
//! on a thread of its own, so neither the tray's main thread nor a request waits on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The file's name in the data dir.
pub const FILE: &str = crate::paths::data::SETTINGS;

/// Largest settings file read (it is a few bytes).
const MAX_BYTES: u64 = 64 * 1024;

/// The file as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SettingsFile {
    #[serde(default = "on")]
    notifications: bool,
}

fn on() -> bool {
    true
}

#[derive(Debug)]
struct Inner {
    notifications: AtomicBool,
    /// Where to save; `None` until [`Settings::load`] (tests, one-shot commands).
    file: Mutex<Option<PathBuf>>,
}

/// The user's choices. Cheap to clone (an `Arc` inside).
#[derive(Debug, Clone)]
pub struct Settings {
    inner: Arc<Inner>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            inner: Arc::new(Inner {
                notifications: AtomicBool::new(true),
                file: Mutex::new(None),
            }),
        }
    }
}

impl Settings {
    /// Reads `settings.json` in `data_dir` (blocking; a missing or unreadable file means
    /// the defaults, said in the log) and saves there from now on.
    pub fn load(&self, data_dir: &Path) {
        let path = data_dir.join(FILE);
        match crate::files::read(&path, MAX_BYTES) {
            Ok(bytes) => match serde_json::from_slice::<SettingsFile>(&bytes) {
                Ok(f) => self
                    .inner
                    .notifications
                    .store(f.notifications, Ordering::Relaxed),
                Err(e) => tracing::warn!(
                    "{} is not valid ({e}); using the default settings",
                    path.display()
                ),
            },
            Err(crate::files::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read {}: {}", path.display(), e.into_io()),
        }
        *self.inner.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Whether desktop notifications are on.
    pub fn notifications(&self) -> bool {
        self.inner.notifications.load(Ordering::Relaxed)
    }

    /// Turns desktop notifications on or off, at once in memory and soon on disk.
    pub fn set_notifications(&self, on: bool) {
        if self.inner.notifications.swap(on, Ordering::Relaxed) == on {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("llm-rotator-settings".into())
            .spawn(move || save(&inner));
        if let Err(e) = spawned {
            tracing::warn!("cannot save the settings: {e}");
        }
    }
}

/// Writes what is in memory now (so of two quick toggles, the last one wins on disk).
fn save(inner: &Inner) {
    let file = inner.file.lock().unwrap_or_else(|p| p.into_inner());
    let Some(path) = file.as_ref() else {
        return;
    };
    let now = SettingsFile {
        notifications: inner.notifications.load(Ordering::Relaxed),
    };
    let written = serde_json::to_vec_pretty(&now)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::files::write_atomic(path, &bytes)
        });
    if let Err(e) = written {
        tracing::warn!("cannot save the settings to {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_on_by_default_and_a_choice_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Settings::default();
        s.load(dir.path());
        assert!(s.notifications());
        s.set_notifications(false);
        assert!(!s.notifications());
        let path = dir.path().join(FILE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !path.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let again = Settings::default();
        again.load(dir.path());
        assert!(!again.notifications());
    }

    #[test]
    fn a_broken_settings_file_means_the_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let s = Settings::default();
        s.load(dir.path());
        assert!(s.notifications());
    }
}
