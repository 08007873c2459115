//! The state store: what the pool must remember across restarts (requests today with their
//! date, totals, toggles, cooldowns, rejected keys), kept as `state.json` in the data dir.
//!
//! Guarantees: the file is replaced atomically (temp file, fsync, rename, fsync of the
//! dir), so a power cut leaves the old or the new file, never a torn one; a background task
//! writes at most once a second after the pool changed, so `kill -9` loses at most the last
//! second; [`StateStore::shutdown`] writes a final time, so a clean stop loses nothing. A
//! corrupt or unreadable file is moved aside with one warning and the agent starts fresh.
//!
//! This module reads and writes only its own files; it changes the pool only through
//! [`Pool::restore`](crate::pool::Pool::restore), once, before the server accepts requests.
//! Keys never reach the file: records are keyed by [`key_hash`](crate::pool::key_hash).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::ProviderConfig;
use crate::engine::Engine;
use crate::pool::ProviderRecord;
use crate::upstream::hint::MAX_PROVIDER_WAIT;

/// The state file's name inside the data dir.
pub const STATE_FILE: &str = crate::paths::data::STATE;

/// The file format written; files with a higher number (from a newer version) are moved
/// aside like corrupt ones rather than misread.
const FORMAT: u32 = 1;

/// Writes are at least this far apart: the most a `kill -9` can lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The largest state file read (4 MiB): a real one is a few KiB; anything larger is
/// moved aside like a corrupt file rather than read whole.
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// After a failed write, try again this long later even if nothing changes meanwhile.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The file as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    /// [`FORMAT`].
    format: u32,
    /// When it was written.
    saved_at: DateTime<Utc>,
    /// Per provider, by name.
    providers: BTreeMap<String, SavedProvider>,
}

/// One provider's record plus what it was recorded against, so a restart after the config
/// changed treats it as a reload would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedProvider {
    /// The endpoint the cooldowns and rejections were earned on.
    base_url: String,
    /// `enabled` as the config file said when this was saved.
    enabled_in_config: bool,
    #[serde(flatten)]
    record: ProviderRecord,
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one to read: not a regular file (a FIFO would block start-up),
    /// too large, or not read in time (see [`crate::files`]).
    #[error("{} {reason}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: crate::files::Refusal,
    },
    /// The file is not a state file this version understands.
    #[error("{path} is not a valid state file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task failed to run.
    #[error("state task failed: {0}")]
    Task(String),
}

/// What reading the file at start-up found.
#[derive(Debug)]
enum Loaded {
    /// No file yet (first run).
    Missing,
    /// A good file.
    Found(StateFile),
    /// A bad file, moved aside to `moved_to` when that worked.
    Bad {
        error: StateError,
        moved_to: Result<PathBuf, std::io::Error>,
    },
}

/// The running store: owns the background writer. Call [`StateStore::shutdown`] after the
/// server stopped; dropping it without that stops the writer after one last write.
pub struct StateStore {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Restores the saved state into `engine`'s pool and starts the background writer. Call
/// after the engine is built and before the server serves requests; used by the headless
/// `serve` and the tray alike. Never fails: a bad file is moved aside with a warning and an
/// unwritable data dir is reported by the writer, while the agent keeps serving.
pub async fn start(engine: &Engine, data_dir: &Path) -> StateStore {
    let path = data_dir.join(STATE_FILE);
    let read_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || load(&read_path))
        .await
        .unwrap_or_else(|e| Loaded::Bad {
            error: StateError::Task(e.to_string()),
            moved_to: Err(std::io::Error::other("not attempted")),
        });
    match loaded {
        Loaded::Missing => tracing::debug!("no saved state at {}", path.display()),
        Loaded::Found(file) => {
            let records = prepare(file, &engine.pool.configs(), Utc::now());
            engine.pool.restore(&records, Utc::now());
            tracing::info!(
                providers = records.len(),
                "restored saved state from {}",
                path.display()
            );
        }
        Loaded::Bad { error, moved_to } => match moved_to {
            Ok(aside) => tracing::warn!(
                "{}; moved it to {} and starting with fresh state",
                crate::logging::error_chain(&error),
                aside.display()
            ),
            Err(e) => tracing::warn!(
                "{}; could not move it aside ({e}); starting with fresh state, it will be overwritten",
                crate::logging::error_chain(&error)
            ),
        },
    }
    let mut rx = engine.pool.subscribe();
    rx.borrow_and_update();
    // What the pool holds now counts as written: nothing is rewritten until it changes (a
    // second instance that cannot bind its port never touches the first one's file).
    let written = Some(saved(engine, Utc::now()).1);
    let (stop_tx, stop_rx) = oneshot::channel();
    let writer = Writer {
        engine: engine.clone(),
        path: path.clone(),
        written,
        failing: false,
    };
    let task = tokio::spawn(writer.run(rx, stop_rx));
    StateStore {
        path,
        stop: Some(stop_tx),
        task: Some(task),
    }
}

impl StateStore {
    /// Where the state lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the background writer after a final write of the current state.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!("state writer failed: {e}");
            }
        }
    }
}

/// The background writer.
struct Writer {
    engine: Engine,
    path: PathBuf,
    /// What the file holds (None: unknown, write on the next chance).
    written: Option<BTreeMap<String, SavedProvider>>,
    /// Whether the last write failed (warn once per streak).
    failing: bool,
}

impl Writer {
    async fn run(
        mut self,
        mut changes: tokio::sync::watch::Receiver<u64>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut next_write = tokio::time::Instant::now();
        loop {
            let retry = self.failing.then_some(RETRY_AFTER_FAILURE);
            tokio::select! {
                _ = &mut stop => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = sleep_opt(retry) => {}
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(next_write) => {}
            }
            changes.borrow_and_update();
            self.write().await;
            next_write = tokio::time::Instant::now() + FLUSH_INTERVAL;
        }
        self.write().await;
    }

    /// Writes the pool's current state if it differs from what the file holds.
    async fn write(&mut self) {
        let (file, providers) = saved(&self.engine, Utc::now());
        // After a failed save the file may no longer hold what was last written (it may be
        // gone), so a state back to that is written again rather than taken as saved.
        if !self.failing && self.written.as_ref() == Some(&providers) {
            return;
        }
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || {
            let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Write {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            write_atomic(&path, &bytes)
        })
        .await
        .unwrap_or_else(|e| Err(StateError::Task(e.to_string())));
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!("state saved again to {}", self.path.display());
                    self.engine.pool.set_state_error(None);
                }
                self.failing = false;
                self.written = Some(providers);
            }
            Err(e) => {
                if !self.failing {
                    let message = format!(
                        "{}; counters and cooldowns are not being saved (retrying)",
                        crate::logging::error_chain(&e)
                    );
                    tracing::warn!("{message}");
                    // Shown in /status and the menu until a save works again.
                    self.engine.pool.set_state_error(Some(message));
                }
                self.failing = true;
            }
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The pool's state as the file would hold it.
fn saved(engine: &Engine, now: DateTime<Utc>) -> (StateFile, BTreeMap<String, SavedProvider>) {
    let configs = engine.pool.configs();
    let mut records = engine.pool.records(now);
    let providers: BTreeMap<String, SavedProvider> = configs
        .iter()
        .filter_map(|c| {
            let record = records.remove(&c.name)?;
            Some((
                c.name.clone(),
                SavedProvider {
                    base_url: c.base_url_shown(),
                    enabled_in_config: c.enabled,
                    record,
                },
            ))
        })
        .collect();
    let file = StateFile {
        format: FORMAT,
        saved_at: now,
        providers: providers.clone(),
    };
    (file, providers)
}

/// Turns saved providers into records for [`Pool::restore`](crate::pool::Pool::restore),
/// applying what a reload would: an `enabled` edited in the file while the agent was down
/// wins over the saved toggle, and a changed `base_url` drops cooldowns and rejections.
/// No saved cooldown outlasts [`MAX_PROVIDER_WAIT`] from `now` (a file written before
/// provider waits were capped may hold one that ends in the year 9999).
fn prepare(
    file: StateFile,
    configs: &[Arc<ProviderConfig>],
    now: DateTime<Utc>,
) -> HashMap<String, ProviderRecord> {
    let latest = chrono::Duration::from_std(MAX_PROVIDER_WAIT)
        .ok()
        .and_then(|w| now.checked_add_signed(w));
    file.providers
        .into_iter()
        .filter_map(|(name, saved)| {
            let config = configs.iter().find(|c| c.name == name)?;
            let mut record = saved.record;
            if saved.enabled_in_config != config.enabled {
                record.enabled_override = None;
            }
            if saved.base_url != config.base_url_shown() {
                for k in record.keys.values_mut() {
                    k.auth_failed = false;
                    k.cooldown_until = None;
                    k.cooldown_reason = None;
                }
            }
            for k in record.keys.values_mut() {
                k.cooldown_until = k.cooldown_until.map(|t| latest.map_or(t, |l| t.min(l)));
            }
            Some((name, record))
        })
        .collect()
}

/// Reads the state file; a bad one is moved aside.
fn load(path: &Path) -> Loaded {
    use crate::files::ReadError;
    let error = match crate::files::read(path, MAX_STATE_BYTES) {
        Ok(bytes) => match parse(&bytes) {
            Ok(file) => return Loaded::Found(file),
            Err(reason) => StateError::Corrupt {
                path: path.to_path_buf(),
                reason,
            },
        },
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Loaded::Missing
        }
        Err(ReadError::Io(source)) => StateError::Read {
            path: path.to_path_buf(),
            source,
        },
        Err(ReadError::Refused(reason)) => StateError::Refused {
            path: path.to_path_buf(),
            reason,
        },
    };
    let moved_to = match &error {
        // A file system that does not answer a read would not answer a rename either.
        StateError::Refused {
            reason: crate::files::Refusal::TimedOut(_),
            ..
        } => Err(std::io::Error::other("the file system is not answering")),
        _ => crate::files::move_aside(path, Utc::now()),
    };
    Loaded::Bad { error, moved_to }
}

fn parse(bytes: &[u8]) -> Result<StateFile, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.format > FORMAT {
        return Err(format!(
            "it was written by a newer version (format {}, this version reads {FORMAT})",
            file.format
        ));
    }
    Ok(file)
}

/// Replaces `path` with `bytes` atomically (see [`crate::files::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    crate::files::write_atomic(path, bytes).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::KeyRecord;

    fn sample() -> StateFile {
        let mut keys = HashMap::new();
        keys.insert(
            "0123456789abcdef".to_string(),
            KeyRecord {
                cooldown_until: Some(Utc::now() + chrono::Duration::hours(1)),
                cooldown_reason: Some("429".into()),
                hold: Some(crate::pool::Hold::RateLimit),
                cause: None,
                auth_failed: true,
                request_count: 4,
                tokens_today: 0,
                out_of_tier: BTreeMap::new(),
            },
        );
        let mut providers = BTreeMap::new();
        providers.insert(
            "groq".to_string(),
            SavedProvider {
                base_url: "https://api.groq.com/openai/v1".into(),
                enabled_in_config: true,
                record: ProviderRecord {
                    enabled_override: Some(false),
                    day: Some(Utc::now().date_naive()),
                    request_count: 4,
                    total_requests: 40,
                    total_tokens: 400,
                    last_error: None,
                    keys,
                    retired: BTreeMap::new(),
                    gone: None,
                    marks_for: String::new(),
                },
            },
        );
        StateFile {
            format: FORMAT,
            saved_at: Utc::now(),
            providers,
        }
    }

    fn provider(base_url: &str, enabled: bool) -> Arc<ProviderConfig> {
        Arc::new(ProviderConfig {
            name: "groq".into(),
            base_url: base_url.into(),
            chat_url: reqwest::Url::parse(&format!("{base_url}/chat/completions")).expect("url"),
            model: "m".into(),
            preferred: vec!["m".into()],
            models: vec![],
            list_all_models: false,
            embedding_models: vec![],
            legacy_completions: false,
            priority: 1,
            enabled,
            api_key_env: vec![],
            requires_key: true,
            quirks: crate::config::quirks::Quirks::defaults(
                crate::config::quirks::ProviderKind::Generic,
            ),
            limits: Default::default(),
        })
    }

    #[test]
    fn a_written_file_reads_back_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("nested").join(STATE_FILE);
        let file = sample();
        let bytes = serde_json::to_vec_pretty(&file).expect("json");
        write_atomic(&path, &bytes).expect("write");
        write_atomic(&path, &bytes).expect("overwrite");
        let Loaded::Found(back) = load(&path) else {
            panic!("not found");
        };
        assert_eq!(back.providers, file.providers);
        let names: Vec<String> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn bad_files_are_moved_aside_and_a_missing_one_is_fine() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(STATE_FILE);
        assert!(matches!(load(&path), Loaded::Missing));
        let good = serde_json::to_vec(&sample()).expect("json");
        let mut newer = sample();
        newer.format = FORMAT + 1;
        let newer = serde_json::to_vec(&newer).expect("json");
        for bad in [&good[..good.len() / 2], b"\x00\xffgarbage", &newer[..], b""] {
            std::fs::write(&path, bad).expect("write");
            let Loaded::Bad { error, moved_to } = load(&path) else {
                panic!("accepted a bad file");
            };
            assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
            let aside = moved_to.expect("moved");
            assert!(!path.exists());
            assert_eq!(std::fs::read(&aside).expect("aside"), bad);
            assert!(aside
                .file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with("state.json.corrupt-"));
        }
        // Four bad files in the same second: four distinct names.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 4);
    }

    #[test]
    fn restoring_applies_config_edits_made_while_stopped() {
        let url = "https://api.groq.com/openai/v1";
        let same = prepare(sample(), &[provider(url, true)], Utc::now());
        assert_eq!(same["groq"].enabled_override, Some(false));
        assert!(same["groq"].keys.values().all(|k| k.auth_failed));

        let toggled_in_file = prepare(sample(), &[provider(url, false)], Utc::now());
        assert_eq!(toggled_in_file["groq"].enabled_override, None);

        let moved = prepare(
            sample(),
            &[provider("http://127.0.0.1:9/v1", true)],
            Utc::now(),
        );
        let k = moved["groq"].keys.values().next().expect("key");
        assert!(!k.auth_failed && k.cooldown_until.is_none());
        assert_eq!(moved["groq"].total_tokens, 400);

        assert!(prepare(sample(), &[], Utc::now()).is_empty());
    }

    #[test]
    fn a_saved_cooldown_ends_within_seven_days_of_the_restart() {
        let url = "https://api.groq.com/openai/v1";
        let mut file = sample();
        let far = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .expect("date")
            .with_timezone(&Utc);
        for p in file.providers.values_mut() {
            for k in p.record.keys.values_mut() {
                k.cooldown_until = Some(far);
            }
        }
        let now = Utc::now();
        let restored = prepare(file, &[provider(url, true)], now);
        let k = restored["groq"].keys.values().next().expect("key");
        assert_eq!(k.cooldown_until, Some(now + chrono::Duration::days(7)));
        // A near one is kept as it was.
        let near = prepare(sample(), &[provider(url, true)], now);
        let k = near["groq"].keys.values().next().expect("key");
        assert!(k
            .cooldown_until
            .is_some_and(|t| t < now + chrono::Duration::hours(2)));
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(STATE_FILE);
        // A directory where the file goes: the temp file is written, the rename fails.
        std::fs::create_dir_all(path.join("in-the-way")).expect("mkdir");
        let err = write_atomic(&path, b"{}").expect_err("rename over a directory");
        assert!(matches!(err, StateError::Write { .. }), "{err}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_moved_aside_without_blocking() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(STATE_FILE);
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let Loaded::Bad { error, moved_to } = load(&path) else {
            panic!("read a FIFO");
        };
        assert!(
            error.to_string().contains("is not a regular file (a FIFO)"),
            "{error}"
        );
        assert!(moved_to.is_ok() && !path.exists());
        std::fs::write(&path, vec![b' '; MAX_STATE_BYTES as usize + 1]).expect("write");
        let Loaded::Bad { error, .. } = load(&path) else {
            panic!("read an oversized file");
        };
        assert!(
            error.to_string().contains("more than the 4.0 MiB allowed"),
            "{error}"
        );
    }
}
