//! The history's writer thread. It first opens the database (off the start-up path:
//! counting starts at once and waits in memory meanwhile); a corrupt file is moved aside
//! with a warning and a fresh one created, and a file that cannot be opened at all leaves
//! the agent serving without history, with a warning. Then it stores what gathered every
//! [`FLUSH_INTERVAL`] in one transaction, and prunes rows older than [`RETENTION_DAYS`]
//! at start and each hour. After a quiet minute it sleeps until the next record wakes it,
//! so an idle agent does not wake every second. [`Writer::stop`] stores what is left.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{lock, retention_cutoff, History, HistoryError, Store, FLUSH_INTERVAL, RETENTION_DAYS};

/// Empty flushes in a row after which the thread sleeps until woken.
const QUIET_FLUSHES: u32 = 60;

/// How long start-up waits for a database held by a short-lived reader (`llm-rotator
/// stats` with no agent running) before giving up on history for this run.
const BUSY_WAIT: Duration = Duration::from_secs(3);

/// The running writer thread. Dropping it without [`Writer::stop`] leaves the thread to
/// end with the process.
pub struct Writer {
    history: History,
    thread: Option<JoinHandle<()>>,
}

/// What opening the database at start did.
#[derive(Debug)]
pub enum Opened {
    /// It opened (`moved_aside`: a corrupt file was moved there first).
    Ok {
        /// The store.
        store: Store,
        /// Where a corrupt file went, with why it was corrupt.
        moved_aside: Option<(std::path::PathBuf, String)>,
    },
    /// No history this run, and why.
    Off(HistoryError),
}

/// Opens (or creates) the database in `data_dir`; a corrupt one is moved aside and a
/// fresh one created. Blocking.
pub fn open(data_dir: &Path, now: DateTime<Utc>) -> Opened {
    let path = super::file(data_dir);
    if let Err(e) = std::fs::create_dir_all(data_dir) {
        return Opened::Off(HistoryError::Off(format!(
            "cannot create {}: {e}",
            data_dir.display()
        )));
    }
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match Store::create(&path) {
            Ok(store) => {
                return Opened::Ok {
                    store,
                    moved_aside: None,
                }
            }
            Err(HistoryError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(HistoryError::Corrupt { reason, .. }) => {
                let aside = match crate::files::move_aside(&path, now) {
                    Ok(aside) => aside,
                    Err(e) => {
                        return Opened::Off(HistoryError::Off(format!(
                            "{} is corrupt ({reason}) and cannot be moved aside: {e}",
                            path.display()
                        )))
                    }
                };
                return match Store::create(&path) {
                    Ok(store) => Opened::Ok {
                        store,
                        moved_aside: Some((aside, reason)),
                    },
                    Err(e) => Opened::Off(e),
                };
            }
            Err(e) => return Opened::Off(e),
        }
    }
}

/// Starts the writer thread, which opens the database for `history` first (off the
/// start-up path: the agent serves at once, and counts from the moment it is open).
/// Never fails: without a database the agent serves and keeps no history (warned once).
pub fn start(history: &History, data_dir: &Path) -> Writer {
    let dir = data_dir.to_path_buf();
    let h = history.clone();
    // Counting starts now; the counts wait in memory while the file opens.
    history.shared().enabled.store(true, Ordering::Relaxed);
    let thread = std::thread::Builder::new()
        .name("llm-rotator-history".into())
        .spawn(move || {
            if attach(&h, open(&dir, Utc::now())) {
                run(&h);
            }
        });
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("cannot start the usage history writer: {e}; keeping no history");
            attach(history, Opened::Off(HistoryError::Off(e.to_string())));
            None
        }
    };
    Writer {
        history: history.clone(),
        thread,
    }
}

/// Hands an opened store to `history` (and starts recording); false when there is none.
fn attach(history: &History, opened: Opened) -> bool {
    match opened {
        Opened::Ok { store, moved_aside } => {
            if let Some((aside, reason)) = moved_aside {
                tracing::warn!(
                    "the usage history {} was corrupt ({reason}); moved it to {} and started a fresh one",
                    store.path().display(),
                    aside.display()
                );
            }
            tracing::debug!("usage history in {}", store.path().display());
            *lock(&history.shared().store) = Some(Arc::new(store));
            true
        }
        Opened::Off(e) => {
            let why = crate::logging::error_chain(&e);
            tracing::warn!("keeping no usage history this run: {why}");
            history.shared().enabled.store(false, Ordering::Relaxed);
            *lock(&history.shared().off_reason) = Some(why);
            lock(&history.shared().pending).take();
            false
        }
    }
}

fn run(history: &History) {
    let shared = history.shared();
    let mut pruned_at: Option<u64> = None;
    let mut quiet = 0u32;
    let mut failing = false;
    loop {
        let cutoff = retention_cutoff(Utc::now());
        if pruned_at != Some(cutoff) {
            pruned_at = Some(cutoff);
            prune(history, cutoff);
        }
        let stop = {
            let mut p = lock(&shared.pending);
            if !p.stop {
                if p.buckets.is_empty() && quiet >= QUIET_FLUSHES {
                    p.idle = true;
                    while p.idle && !p.stop {
                        p = shared
                            .wake
                            .wait(p)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    quiet = 0;
                }
                if !p.stop {
                    p = shared
                        .wake
                        .wait_timeout_while(p, FLUSH_INTERVAL, |p| !p.stop)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
            p.stop
        };
        match history.flush() {
            Ok(0) => quiet = quiet.saturating_add(1),
            Ok(_) => {
                quiet = 0;
                if failing {
                    failing = false;
                    tracing::info!("usage history is stored again");
                }
            }
            Err(e) => {
                quiet = 0;
                if !failing {
                    failing = true;
                    tracing::warn!(
                        "cannot store the usage history (kept in memory, retrying): {}",
                        crate::logging::error_chain(&e)
                    );
                }
            }
        }
        if stop {
            return;
        }
    }
}

fn prune(history: &History, cutoff: u64) {
    let Some(store) = lock(&history.shared().store).clone() else {
        return;
    };
    match store.prune(cutoff) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            rows = n,
            "usage history older than {RETENTION_DAYS} days pruned"
        ),
        Err(e) => tracing::warn!(
            "cannot prune the usage history: {}",
            crate::logging::error_chain(&e)
        ),
    }
}

impl Writer {
    /// Stores what is left and ends the thread. Blocking.
    pub fn stop(mut self) {
        {
            let mut p = lock(&self.history.shared().pending);
            p.stop = true;
        }
        self.history.shared().wake.notify_all();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the usage history writer panicked");
            }
        }
        self.history
            .shared()
            .enabled
            .store(false, Ordering::Relaxed);
    }
}
