//! Usage history: how much each provider, key and model did, hour by hour, kept for
//! [`RETENTION_DAYS`] in `history.redb` in the data dir (see [`file`]). Per hour, provider,
//! key (by its index in the provider's key list, never the key or any part of it) and
//! model it counts requests, prompt and completion tokens, 429s, other failures, rotations
//! away, and the latency of successful attempts in a fixed histogram ([`LATENCY_BOUNDS_MS`],
//! so p50/p95 can be merged across hours and days and are read as the upper bound of the
//! bucket they fall in).
//!
//! The database is [redb](https://docs.rs/redb): an embedded, transactional key-value
//! file in pure Rust, so the macOS build needs no C toolchain. One process may open it at
//! a time; the running agent answers `GET /stats/history` for the CLI instead.
//!
//! Writes leave the request path: [`History::attempt`] and friends only add to counters
//! in memory (a map lookup under a `std::sync::Mutex` held for a microsecond; no await, no
//! system call, no allocation except the first time a bucket is seen in a flush period),
//! and the writer thread ([`writer`]) stores what gathered every [`FLUSH_INTERVAL`] in one
//! transaction. So `kill -9` loses at most the last second or two. Prompts and keys never
//! reach this module.

pub mod report;
pub mod store;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::pool::{Attempt, Outcome};

pub use store::Store;

/// The database's file name inside the data dir.
pub const FILE: &str = crate::paths::data::HISTORY;

/// How long rows are kept.
pub const RETENTION_DAYS: u64 = 90;

/// How often the writer stores what gathered: the most a `kill -9` loses.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Upper bounds (ms) of the latency buckets; a last bucket takes everything slower.
pub const LATENCY_BOUNDS_MS: [u32; 17] = [
    100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000,
    30_000, 60_000, 120_000,
];

/// Number of latency buckets (the bounds plus one for slower answers).
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Most distinct buckets gathered between two flushes; beyond that (a disk that stalls
/// while clients send thousands of made-up model names) new buckets are dropped and
/// counted, so memory stays bounded.
const MAX_PENDING_BUCKETS: usize = 4096;

/// How long a reader waits for the database the writer is still opening.
const OPEN_WAIT: Duration = Duration::from_secs(10);

/// Longest model name kept (a client's 3 MB model name must not become a 3 MB row).
const MODEL_MAX: usize = 200;

/// Where the history lives in `data_dir`.
pub fn file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join(FILE)
}

/// The hour (since the Unix epoch) `now` falls in: the first part of every row's key.
pub fn hour_of(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp().div_euclid(3600)).unwrap_or(0)
}

/// The start of an hour as a time.
pub fn hour_start(hour: u64) -> DateTime<Utc> {
    let secs = i64::try_from(hour.saturating_mul(3600)).unwrap_or(i64::MAX);
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// The first hour kept at `now`: rows of earlier hours are pruned.
pub fn retention_cutoff(now: DateTime<Utc>) -> u64 {
    hour_of(now).saturating_sub(RETENTION_DAYS * 24)
}

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file is not a database this version can read.
    #[error("{} is not a usable history database: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process (a running agent) has the database open.
    #[error("{} is open in another llm-rotator process", path.display())]
    InUse {
        /// The file.
        path: std::path::PathBuf,
    },
    /// No history file yet.
    #[error("no usage history yet ({} does not exist)", path.display())]
    Missing {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The file could not be opened, read or written.
    #[error("history database {}", path.display())]
    Db {
        /// The file.
        path: std::path::PathBuf,
        /// Why (boxed: redb's error is large, and results travel the request path).
        #[source]
        source: Box<redb::Error>,
    },
    /// This agent keeps no history (the database could not be opened at start).
    #[error("this agent keeps no usage history: {0}")]
    Off(String),
}

/// Tokens of one answer, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// The provider's total (may exceed the sum: reasoning, cached tokens...).
    pub total: u64,
}

/// What a row is about: an hour, a provider, a key (its index) and a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId {
    /// Hour since the Unix epoch ([`hour_of`]).
    pub hour: u64,
    /// Provider name.
    pub provider: String,
    /// The key's index in the provider's key list (0 for keyless providers).
    pub key: u32,
    /// The model sent upstream.
    pub model: String,
}

/// The counts of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Attempts the provider received.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// 429s (and spent quotas).
    pub rate_limited: u64,
    /// Other failures: 5xx, timeouts, connection errors, rejected keys, retired models.
    pub failures: u64,
    /// Failed attempts after which the request moved on to another provider or key.
    pub rotations: u64,
    /// Successful attempts per latency bucket ([`LATENCY_BOUNDS_MS`]).
    pub latency: [u32; LATENCY_BUCKETS],
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            requests: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            rate_limited: 0,
            failures: 0,
            rotations: 0,
            latency: [0; LATENCY_BUCKETS],
        }
    }
}

impl Counts {
    /// Adds `other` to these counts (saturating).
    pub fn merge(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.rate_limited = self.rate_limited.saturating_add(other.rate_limited);
        self.failures = self.failures.saturating_add(other.failures);
        self.rotations = self.rotations.saturating_add(other.rotations);
        for (a, b) in self.latency.iter_mut().zip(other.latency) {
            *a = a.saturating_add(b);
        }
    }

    /// Counts one successful attempt's latency.
    pub fn add_latency(&mut self, latency: Duration) {
        let ms = latency.as_millis();
        let i = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms <= u128::from(*b))
            .unwrap_or(LATENCY_BUCKETS - 1);
        self.latency[i] = self.latency[i].saturating_add(1);
    }

    /// The latency (ms) below which fraction `q` of the successful attempts answered, as
    /// the upper bound of its bucket (the slowest bucket reports its lower bound); `None`
    /// without successes.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        let n: u64 = self.latency.iter().map(|c| u64::from(*c)).sum();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (i, c) in self.latency.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                let bound = LATENCY_BOUNDS_MS.get(i).or(LATENCY_BOUNDS_MS.last());
                return bound.map(|b| u64::from(*b));
            }
        }
        None
    }

    /// The counts one attempt's outcome adds.
    fn of_outcome(outcome: &Outcome) -> Counts {
        let mut c = Counts {
            requests: 1,
            ..Counts::default()
        };
        match outcome {
            Outcome::Success { .. } | Outcome::Relayed { .. } => {}
            Outcome::RateLimited { .. } | Outcome::QuotaExhausted { .. } => c.rate_limited = 1,
            Outcome::Transient { reached, .. } => {
                c.requests = u64::from(*reached);
                c.failures = 1;
            }
            Outcome::AuthFailed { .. }
            | Outcome::PaymentRequired { .. }
            | Outcome::ModelRetired { .. }
            | Outcome::NotInTier { .. }
            | Outcome::ProviderGone { .. } => c.failures = 1,
        }
        c
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What gathered since the last flush, aggregated per bucket.
#[derive(Default)]
struct Pending {
    /// Fingerprint of a bucket id → its place in `buckets` (see [`fingerprint`]).
    index: HashMap<u64, usize>,
    buckets: Vec<(BucketId, Counts)>,
    /// Updates dropped because [`MAX_PENDING_BUCKETS`] was reached.
    dropped: u64,
    /// The writer sleeps until woken (nothing happened for a while).
    idle: bool,
    /// The writer is asked to stop.
    stop: bool,
}

/// FNV-1a over a bucket id's parts, without building one.
fn fingerprint(hour: u64, provider: &str, key: u32, model: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&hour.to_le_bytes());
    eat(provider.as_bytes());
    eat(&[0xff]);
    eat(&key.to_le_bytes());
    eat(model.as_bytes());
    h
}

impl Pending {
    /// The counts of this bucket, created on first use; `None` when full.
    fn slot(&mut self, hour: u64, provider: &str, key: u32, model: &str) -> Option<&mut Counts> {
        let fp = fingerprint(hour, provider, key, model);
        let same = |id: &BucketId| {
            id.hour == hour && id.key == key && id.provider == provider && id.model == model
        };
        let at = match self.index.get(&fp) {
            Some(&i) if same(&self.buckets[i].0) => Some(i),
            // A fingerprint collision: look the slow way.
            Some(_) => self.buckets.iter().position(|(id, _)| same(id)),
            None => None,
        };
        let i = match at {
            Some(i) => i,
            None => {
                if self.buckets.len() >= MAX_PENDING_BUCKETS {
                    self.dropped += 1;
                    return None;
                }
                self.buckets.push((
                    BucketId {
                        hour,
                        provider: provider.to_string(),
                        key,
                        model: model.to_string(),
                    },
                    Counts::default(),
                ));
                let i = self.buckets.len() - 1;
                self.index.entry(fp).or_insert(i);
                i
            }
        };
        Some(&mut self.buckets[i].1)
    }

    fn take(&mut self) -> Vec<(BucketId, Counts)> {
        self.index.clear();
        std::mem::take(&mut self.buckets)
    }

    /// Puts back what could not be stored (merged with what came meanwhile).
    fn put_back(&mut self, batch: Vec<(BucketId, Counts)>) {
        for (id, c) in batch {
            if let Some(slot) = self.slot(id.hour, &id.provider, id.key, &id.model) {
                slot.merge(&c);
            }
        }
    }
}

pub(crate) struct Shared {
    pending: Mutex<Pending>,
    wake: std::sync::Condvar,
    /// Whether records are kept (a store is open).
    enabled: AtomicBool,
    /// The open store, once [`writer::start`] opened it.
    store: Mutex<Option<Arc<Store>>>,
    /// Why there is no store, when opening it failed.
    off_reason: Mutex<Option<String>>,
    /// One flush at a time (the writer's and a reader's).
    flushing: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters half-updated by a panicking thread are still counters: use them.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The handle the request path records through. Cheap to clone; until a store is opened
/// (and in tests that start no writer) recording does nothing.
#[derive(Clone)]
pub struct History {
    shared: Arc<Shared>,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

impl History {
    /// A handle that records nothing until [`writer::start`] opens a store for it.
    pub fn new() -> History {
        History {
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending::default()),
                wake: std::sync::Condvar::new(),
                enabled: AtomicBool::new(false),
                store: Mutex::new(None),
                off_reason: Mutex::new(None),
                flushing: Mutex::new(()),
            }),
        }
    }

    /// Adds to the counts of `attempt`'s bucket at `now`.
    fn add(&self, attempt: &Attempt, now: DateTime<Utc>, f: impl FnOnce(&mut Counts)) {
        if !self.shared.enabled.load(Ordering::Relaxed) {
            return;
        }
        let model = cut(&attempt.model, MODEL_MAX);
        let wake = {
            let mut p = lock(&self.shared.pending);
            if let Some(c) = p.slot(
                hour_of(now),
                &attempt.provider.name,
                attempt.key_index,
                model,
            ) {
                f(c);
            }
            std::mem::take(&mut p.idle)
        };
        // Only the first record after a quiet spell wakes the writer (one system call).
        if wake {
            self.shared.wake.notify_one();
        }
    }

    /// Records the outcome of one attempt; `latency` (send to answer) for a success.
    pub fn attempt(
        &self,
        attempt: &Attempt,
        outcome: &Outcome,
        latency: Option<Duration>,
        now: DateTime<Utc>,
    ) {
        self.add(attempt, now, |c| {
            c.merge(&Counts::of_outcome(outcome));
            if let (Outcome::Success { .. }, Some(l)) = (outcome, latency) {
                c.add_latency(l);
            }
        });
    }

    /// Records the tokens of an answer (a whole one, or a stream when it ends).
    pub fn tokens(&self, attempt: &Attempt, tokens: Tokens, now: DateTime<Utc>) {
        self.add(attempt, now, |c| {
            c.prompt_tokens = c.prompt_tokens.saturating_add(tokens.prompt);
            c.completion_tokens = c.completion_tokens.saturating_add(tokens.completion);
        });
    }

    /// Records that a request moved on from `attempt` (which failed) to another one.
    pub fn rotation(&self, attempt: &Attempt, now: DateTime<Utc>) {
        self.add(attempt, now, |c| {
            c.rotations = c.rotations.saturating_add(1)
        });
    }

    /// Whether records are kept.
    pub fn enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// Stores what gathered now, in one transaction. Blocking (disk I/O). On failure
    /// the counts go back to memory for the next flush.
    pub fn flush(&self) -> Result<usize, HistoryError> {
        let _one = lock(&self.shared.flushing);
        let Some(store) = lock(&self.shared.store).clone() else {
            return Ok(0);
        };
        let (batch, dropped) = {
            let mut p = lock(&self.shared.pending);
            (p.take(), std::mem::take(&mut p.dropped))
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "usage history: too many distinct models at once; some counts were dropped"
            );
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match store.add(&batch) {
            Ok(()) => Ok(n),
            Err(e) => {
                lock(&self.shared.pending).put_back(batch);
                Err(e)
            }
        }
    }

    /// Every row from `from_hour` on, after a flush (so the answer includes the last
    /// second). Blocking.
    pub fn rows_since(&self, from_hour: u64) -> Result<Vec<(BucketId, Counts)>, HistoryError> {
        // Right after start the writer may still be opening the file: wait for it a bit.
        let deadline = std::time::Instant::now() + OPEN_WAIT;
        let store = loop {
            if let Some(store) = lock(&self.shared.store).clone() {
                break store;
            }
            let off = lock(&self.shared.off_reason).clone();
            let pending = self.enabled() && off.is_none();
            if !pending || std::time::Instant::now() >= deadline {
                let why = off.unwrap_or_else(|| "the database is not open".into());
                return Err(HistoryError::Off(why));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Err(e) = self.flush() {
            tracing::warn!(
                "usage history: cannot store the last counts: {}",
                crate::logging::error_chain(&e)
            );
        }
        store.rows_since(from_hour)
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }
}

#[cfg(test)]
mod tests;
