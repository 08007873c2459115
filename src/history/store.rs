//! The history database itself: one redb table keyed by (hour, provider, key index,
//! model), each value the row's counts in a small fixed binary layout. Opening tells a
//! corrupt file (moved aside by the caller) from one that is only busy or unreadable;
//! adding merges counts into existing rows in one transaction; pruning drops every hour
//! before a cutoff. Blocking: call from a thread of its own or `spawn_blocking`.

use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition};

use super::{BucketId, Counts, HistoryError, LATENCY_BUCKETS};

/// (hour since the epoch, provider, key index, model) → encoded [`Counts`].
const USAGE: TableDefinition<(u64, &str, u32, &str), &[u8]> = TableDefinition::new("usage");

/// The first byte of every value: the layout below.
const LAYOUT: u8 = 1;

/// Bytes of an encoded row: the layout byte, six u64 counters, the u32 histogram.
const VALUE_LEN: usize = 1 + 6 * 8 + LATENCY_BUCKETS * 4;

/// The page cache redb may keep (its default is 1 GiB). A flush touches a few pages a
/// second and `stats` reads are rare: a small cache costs nothing measurable and keeps
/// the agent's idle size down (4 MiB here held 3 MB after a burst; 1 MiB → 256 KiB took
/// another 0.8–1.1 MB off the idle size at start and after a burst, measured in smaps).
const CACHE_BYTES: usize = 256 << 10;

/// An open history database.
pub struct Store {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn encode(c: &Counts) -> [u8; VALUE_LEN] {
    let mut out = [0u8; VALUE_LEN];
    out[0] = LAYOUT;
    let fields = [
        c.requests,
        c.prompt_tokens,
        c.completion_tokens,
        c.rate_limited,
        c.failures,
        c.rotations,
    ];
    for (i, f) in fields.iter().enumerate() {
        out[1 + i * 8..1 + (i + 1) * 8].copy_from_slice(&f.to_le_bytes());
    }
    for (i, n) in c.latency.iter().enumerate() {
        let at = 1 + 6 * 8 + i * 4;
        out[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
    out
}

/// A row's counts; `None` for a layout this version does not know.
fn decode(bytes: &[u8]) -> Option<Counts> {
    if bytes.len() != VALUE_LEN || bytes[0] != LAYOUT {
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[1 + i * 8..1 + (i + 1) * 8]);
        u64::from_le_bytes(b)
    };
    let mut c = Counts {
        requests: u64_at(0),
        prompt_tokens: u64_at(1),
        completion_tokens: u64_at(2),
        rate_limited: u64_at(3),
        failures: u64_at(4),
        rotations: u64_at(5),
        ..Counts::default()
    };
    for (i, n) in c.latency.iter_mut().enumerate() {
        let at = 1 + 6 * 8 + i * 4;
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[at..at + 4]);
        *n = u32::from_le_bytes(b);
    }
    Some(c)
}

/// Whether an error opening the file means its contents are bad (rather than the file
/// being busy or unreadable).
fn is_corrupt(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
        | redb::DatabaseError::UpgradeRequired(_)
        | redb::DatabaseError::RepairAborted => true,
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        _ => false,
    }
}

impl Store {
    /// Opens the database at `path`, creating it when missing (the agent at start).
    pub fn create(path: &Path) -> Result<Store, HistoryError> {
        Store::open_with(path, true)
    }

    /// Opens an existing database (the CLI, when no agent runs).
    pub fn open_existing(path: &Path) -> Result<Store, HistoryError> {
        if !path.exists() {
            return Err(HistoryError::Missing {
                path: path.to_path_buf(),
            });
        }
        Store::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Store, HistoryError> {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(CACHE_BYTES);
        // A file so damaged that redb panics on it is as corrupt as one it refuses.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if create {
                builder.create(path)
            } else {
                builder.open(path)
            }
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
                return Err(HistoryError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Ok(Err(e)) if is_corrupt(&e) => {
                return Err(HistoryError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
            Ok(Err(e)) => return Err(db_error(path, e)),
            Err(_) => {
                return Err(HistoryError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "the database library failed on it".into(),
                })
            }
        };
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        // A file redb opens but whose table cannot be read is corrupt too.
        if let Err(e) = store.rows_since(u64::MAX) {
            return Err(HistoryError::Corrupt {
                path: path.to_path_buf(),
                reason: crate::logging::error_chain(&e),
            });
        }
        Ok(store)
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds each bucket's counts to its row, in one transaction.
    pub fn add(&self, batch: &[(BucketId, Counts)]) -> Result<(), HistoryError> {
        let err = |e: redb::Error| HistoryError::Db {
            path: self.path.clone(),
            source: Box::new(e),
        };
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = txn.open_table(USAGE).map_err(|e| err(e.into()))?;
            for (id, c) in batch {
                let key = (id.hour, id.provider.as_str(), id.key, id.model.as_str());
                let mut total = table
                    .get(key)
                    .map_err(|e| err(e.into()))?
                    .and_then(|v| decode(v.value()))
                    .unwrap_or_default();
                total.merge(c);
                table
                    .insert(key, encode(&total).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// Deletes every row of an hour before `cutoff`; returns how many went.
    pub fn prune(&self, cutoff: u64) -> Result<u64, HistoryError> {
        let err = |e: redb::Error| HistoryError::Db {
            path: self.path.clone(),
            source: Box::new(e),
        };
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let mut gone = 0u64;
        {
            let mut table = txn.open_table(USAGE).map_err(|e| err(e.into()))?;
            let end = (cutoff, "", 0u32, "");
            table
                .retain_in(..end, |_, _| {
                    gone += 1;
                    false
                })
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(gone)
    }

    /// Every row from hour `from` on, in key order.
    pub fn rows_since(&self, from: u64) -> Result<Vec<(BucketId, Counts)>, HistoryError> {
        let err = |e: redb::Error| HistoryError::Db {
            path: self.path.clone(),
            source: Box::new(e),
        };
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = match txn.open_table(USAGE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e.into())),
        };
        let start = (from, "", 0u32, "");
        let mut rows = Vec::new();
        for item in table.range(start..).map_err(|e| err(e.into()))? {
            let (k, v) = item.map_err(|e| err(e.into()))?;
            let (hour, provider, key, model) = k.value();
            if let Some(c) = decode(v.value()) {
                rows.push((
                    BucketId {
                        hour,
                        provider: provider.to_string(),
                        key,
                        model: model.to_string(),
                    },
                    c,
                ));
            }
        }
        Ok(rows)
    }
}

fn db_error(path: &Path, e: redb::DatabaseError) -> HistoryError {
    HistoryError::Db {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}
