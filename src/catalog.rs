//! Each provider's model catalog, read from its own `GET {base_url}/models` (a call that
//! uses no inference quota). Fetched in the background: at start (never delaying the
//! first request), every 24 hours, after a config or key change, and right after an
//! answer that says a model is retired or unknown. Cached in the data dir with its fetch
//! time, so a start without network still knows the last catalog.
//!
//! A failed fetch (a 429, a provider without a usable `/models`, a local server that is
//! off) only leaves that provider's catalog unknown: routing goes on as configured. The
//! pool uses a catalog to skip preferred models the provider no longer lists, to clear a
//! retired mark when the model is listed again, and to say what it offers instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ProviderConfig;
use crate::engine::Engine;
use crate::secrets::ApiKey;

/// How often every catalog is read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The cache file in the data dir.
pub const CACHE_FILE: &str = crate::paths::data::CATALOG;

/// Longest wait for one provider's list.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest list read (OpenRouter's, with prices, is about 1 MB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One provider's catalog as last read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The endpoint it was read from: a catalog read from another `base_url` is not
    /// this provider's.
    pub base_url: String,
    /// When it was read.
    pub fetched_at: DateTime<Utc>,
    /// Model ids, sorted (Gemini's `models/` prefix removed).
    pub models: Vec<String>,
    /// Listed models whose announced shutdown date has passed (OpenAI `shutdown_date`,
    /// Mistral `deprecation`).
    #[serde(default)]
    pub shut_down: Vec<String>,
    /// Ids that were not in the catalog read before this one.
    #[serde(default)]
    pub added: Vec<String>,
    /// Ids that the catalog read before this one had and this one does not.
    #[serde(default)]
    pub removed: Vec<String>,
}

impl Catalog {
    /// Whether it lists `model`.
    pub fn offers(&self, model: &str) -> bool {
        self.models
            .binary_search_by(|m| m.as_str().cmp(model))
            .is_ok()
    }

    /// Whether `model` is listed with a shutdown date that has passed.
    pub fn shut_down(&self, model: &str) -> bool {
        self.shut_down.iter().any(|m| m == model)
    }

    /// Age at `now`, in whole seconds.
    pub fn age_secs(&self, now: DateTime<Utc>) -> u64 {
        u64::try_from((now - self.fetched_at).num_seconds()).unwrap_or(0)
    }
}

/// Why a catalog could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The provider answered with an error status.
    #[error("GET /models answered HTTP {0}")]
    Status(u16),
    /// No answer.
    #[error("GET /models failed: {0}")]
    Unreachable(String),
    /// An answer that is not a list of models.
    #[error("GET /models did not answer a list of models")]
    NotAList,
}

/// The ids (and those past their shutdown date) of a `/models` answer: the OpenAI list
/// (`data[].id`), or a `models[]` list with `id` or `name` (Ollama's and Google's own
/// shapes). Gemini's `models/` prefix is removed, as its chat endpoint wants the bare id.
pub fn parse(body: &[u8], now: DateTime<Utc>) -> Result<(Vec<String>, Vec<String>), CatalogError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| CatalogError::NotAList)?;
    let items = v
        .get("data")
        .or_else(|| v.get("models"))
        .and_then(Value::as_array)
        .ok_or(CatalogError::NotAList)?;
    let today = now.date_naive();
    let mut models = Vec::with_capacity(items.len());
    let mut shut_down = Vec::new();
    for item in items {
        let Some(id) = item
            .get("id")
            .or_else(|| item.get("name"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let id = id.strip_prefix("models/").unwrap_or(id).to_string();
        let ends = item
            .get("shutdown_date")
            .or_else(|| item.get("deprecation"))
            .and_then(Value::as_str)
            .and_then(|d| d.get(..10))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if ends.is_some_and(|d| d <= today) {
            shut_down.push(id.clone());
        }
        models.push(id);
    }
    models.sort();
    models.dedup();
    shut_down.sort();
    Ok((models, shut_down))
}

/// A new catalog for `base_url` from a fresh list, with what changed since `before`.
pub fn build(
    base_url: &str,
    (models, shut_down): (Vec<String>, Vec<String>),
    before: Option<&Catalog>,
    now: DateTime<Utc>,
) -> Catalog {
    let before = before.filter(|b| b.base_url == base_url);
    let added = before.map_or_else(Vec::new, |b| {
        models.iter().filter(|m| !b.offers(m)).cloned().collect()
    });
    let removed = before.map_or_else(Vec::new, |b| {
        b.models
            .iter()
            .filter(|m| models.binary_search(m).is_err())
            .cloned()
            .collect()
    });
    Catalog {
        base_url: base_url.to_string(),
        fetched_at: now,
        models,
        shut_down,
        added,
        removed,
    }
}

/// Reads one provider's list.
pub async fn fetch(
    client: &reqwest::Client,
    provider: &ProviderConfig,
    key: Option<&ApiKey>,
) -> Result<(Vec<String>, Vec<String>), CatalogError> {
    let mut req = client.get(provider.models_url()).timeout(FETCH_TIMEOUT);
    if let Some(key) = key {
        let v = crate::upstream::bearer(key)
            .ok_or_else(|| CatalogError::Unreachable("the key cannot go in a header".into()))?;
        req = req.header(reqwest::header::AUTHORIZATION, v);
    }
    let resp = req.send().await.map_err(|e| {
        CatalogError::Unreachable(if e.is_timeout() {
            "no answer in time".into()
        } else if e.is_connect() {
            "cannot connect".into()
        } else {
            "request failed".into()
        })
    })?;
    if !resp.status().is_success() {
        return Err(CatalogError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(CatalogError::NotAList);
    }
    let body = resp
        .bytes()
        .await
        .map_err(|_| CatalogError::Unreachable("the answer broke off".into()))?;
    if body.len() > MAX_BODY {
        return Err(CatalogError::NotAList);
    }
    parse(&body, Utc::now())
}

/// One provider in `GET /catalog` and `llm-rotator models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderModels {
    /// Provider name.
    pub provider: String,
    /// Its catalog; `None` when it could not be read yet.
    pub catalog: Option<Catalog>,
    /// Why the last read failed.
    pub error: Option<String>,
    /// Each configured model and where it stands.
    pub configured: Vec<ConfiguredModel>,
}

/// A configured model of one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfiguredModel {
    /// The id.
    pub model: String,
    /// Whether the catalog lists it (`None`: catalog unknown).
    pub offered: Option<bool>,
    /// Whether "auto" is sent to it now.
    pub in_use: bool,
    /// What the provider said when it refused it, if it did.
    pub retired: Option<String>,
}

/// Every provider's catalog and configured models, as the pool knows them now.
pub fn report(engine: &Engine) -> Vec<ProviderModels> {
    let snap = engine.pool.snapshot(Utc::now());
    engine
        .pool
        .catalogs()
        .into_iter()
        .map(|(config, catalog, error)| {
            let p = snap.providers.iter().find(|p| p.name == config.name);
            let configured = config
                .configured_models()
                .map(|m| ConfiguredModel {
                    model: m.clone(),
                    offered: catalog.as_ref().map(|c| c.offers(m) && !c.shut_down(m)),
                    in_use: p.and_then(|p| p.model_in_use.as_ref()) == Some(m),
                    retired: p
                        .and_then(|p| p.retired_models.get(m).cloned())
                        .or_else(|| p.and_then(|p| p.gone.clone())),
                })
                .collect();
            ProviderModels {
                provider: config.name.clone(),
                catalog,
                error,
                configured,
            }
        })
        .collect()
}

/// The readable text of `llm-rotator models`: per provider, the catalog's age and size,
/// the configured models (in use, offered, retired), and what is new since the read
/// before.
pub fn models_text(list: &[ProviderModels], now: DateTime<Utc>, all: bool) -> String {
    let mut out = String::new();
    for p in list {
        let head = match (&p.catalog, &p.error) {
            (Some(c), _) => format!(
                "{}: {} models, read {} ago",
                p.provider,
                c.models.len(),
                age_text(c.age_secs(now))
            ),
            (None, Some(e)) => format!("{}: catalog unknown ({e})", p.provider),
            (None, None) => format!("{}: catalog not read yet", p.provider),
        };
        out.push_str(&head);
        out.push('\n');
        for m in &p.configured {
            let mut notes = Vec::new();
            if m.in_use {
                notes.push("in use".to_string());
            }
            match m.offered {
                Some(true) => notes.push("offered".into()),
                Some(false) => notes.push("not in the catalog".into()),
                None => {}
            }
            if let Some(r) = &m.retired {
                notes.push(format!("retired: {r}"));
            }
            out.push_str(&format!("  {}  ({})\n", m.model, notes.join(", ")));
        }
        if let Some(c) = &p.catalog {
            if !c.added.is_empty() {
                out.push_str(&format!(
                    "  new since the last read: {}\n",
                    c.added.join(", ")
                ));
            }
            if !c.removed.is_empty() {
                out.push_str(&format!(
                    "  gone since the last read: {}\n",
                    c.removed.join(", ")
                ));
            }
            if all {
                for m in &c.models {
                    out.push_str(&format!("    {m}\n"));
                }
            }
        }
    }
    out
}

fn age_text(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// The cache file's content: catalogs by provider name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CacheFile {
    /// Catalogs by provider name.
    pub providers: BTreeMap<String, Catalog>,
}

/// Largest cache file read.
const MAX_CACHE: u64 = 32 * 1024 * 1024;

/// Reads the cache (a missing or unreadable one is empty: catalogs are only a hint).
pub fn load_cache(path: &Path) -> CacheFile {
    // Like the config and the state: only a regular file, bounded in size and time.
    let text = match crate::files::read(path, MAX_CACHE).map_err(crate::files::ReadError::into_io) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("ignoring the model catalog cache {}: {e}", path.display());
            }
            return CacheFile::default();
        }
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!("ignoring the model catalog cache {}: {e}", path.display());
        CacheFile::default()
    })
}

fn save_cache(path: &Path, cache: &CacheFile) {
    let result = serde_json::to_vec_pretty(cache)
        .map_err(std::io::Error::other)
        .and_then(|bytes| crate::files::write_atomic(path, &bytes));
    if let Err(e) = result {
        tracing::warn!(
            "cannot save the model catalog cache {}: {e}",
            path.display()
        );
    }
}

/// The background task that keeps the catalogs fresh; stopped with [`CatalogTask::stop`].
pub struct CatalogTask {
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl CatalogTask {
    /// Stops the task and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// Loads the cached catalogs into the pool and starts the refresh task.
pub fn start(engine: &Engine, data_dir: &Path) -> CatalogTask {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let engine = engine.clone();
    let path: Arc<PathBuf> = Arc::new(data_dir.join(CACHE_FILE));
    let handle = tokio::spawn(async move {
        let read = Arc::clone(&path);
        let mut cache = tokio::task::spawn_blocking(move || load_cache(&read))
            .await
            .unwrap_or_default();
        for p in engine.pool.configs() {
            if let Some(c) = cache
                .providers
                .get(&p.name)
                .filter(|c| c.base_url == p.base_url_shown())
            {
                engine.pool.set_catalog(&p.name, Some(c.clone()));
            }
        }
        let mut config = engine.subscribe_config();
        let wanted = engine.pool.catalog_wanted();
        loop {
            // Shutdown never waits for a provider's list.
            tokio::select! {
                () = refresh(&engine, &mut cache) => {}
                _ = stopped.wait_for(|s| *s) => break,
            }
            let write = Arc::clone(&path);
            let snapshot = CacheFile {
                providers: cache.providers.clone(),
            };
            let _ = tokio::task::spawn_blocking(move || save_cache(&write, &snapshot)).await;
            engine.pool.catalog_round_done();
            tokio::select! {
                () = tokio::time::sleep(REFRESH_EVERY) => {}
                () = wanted.notified() => {}
                r = config.changed() => if r.is_err() { break },
                _ = stopped.wait_for(|s| *s) => break,
            }
        }
    });
    CatalogTask { stop, handle }
}

/// Reads every enabled provider's catalog, one at a time (a few requests a day).
async fn refresh(engine: &Engine, cache: &mut CacheFile) {
    let client = match crate::upstream::build_client(&engine.config().routing) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cannot read model catalogs: {e}");
            return;
        }
    };
    for (provider, key) in engine.pool.catalog_targets() {
        let before = cache.providers.get(&provider.name);
        match fetch(&client, &provider, key.as_ref()).await {
            Ok(list) => {
                let catalog = build(&provider.base_url_shown(), list, before, Utc::now());
                if !catalog.added.is_empty() || !catalog.removed.is_empty() {
                    tracing::info!(
                        provider = %provider.name,
                        added = catalog.added.len(),
                        removed = catalog.removed.len(),
                        "the provider's model catalog changed"
                    );
                }
                engine
                    .pool
                    .set_catalog(&provider.name, Some(catalog.clone()));
                cache.providers.insert(provider.name.clone(), catalog);
            }
            Err(e) => {
                // The catalog only: routing goes on as configured.
                tracing::debug!(provider = %provider.name, "model catalog not read: {e}");
                engine
                    .pool
                    .note_catalog_error(&provider.name, e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-30T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn every_provider_shape_gives_bare_sorted_ids() {
        let gemini = br#"{"object":"list","data":[{"id":"models/gemini-3.6-flash","object":"model","owned_by":"google"},{"id":"models/gemini-3.5-flash-lite"}]}"#;
        let (ids, _) = parse(gemini, now()).expect("list");
        assert_eq!(ids, ["gemini-3.5-flash-lite", "gemini-3.6-flash"]);
        let ollama_native = br#"{"models":[{"name":"llama3.2:latest"}]}"#;
        assert_eq!(
            parse(ollama_native, now()).expect("list").0,
            ["llama3.2:latest"]
        );
        assert_eq!(parse(b"<html>", now()), Err(CatalogError::NotAList));
        assert_eq!(
            parse(br#"{"error":"x"}"#, now()),
            Err(CatalogError::NotAList)
        );
    }

    #[test]
    fn a_shutdown_date_that_has_passed_is_noticed() {
        let openai = br#"{"data":[{"id":"gpt-4.1-mini","shutdown_date":"2027-01-14"},{"id":"gpt-4o-audio","shutdown_date":"2026-10-23"},{"id":"gpt-6-luna","shutdown_date":null}]}"#;
        let (ids, gone) = parse(openai, now()).expect("list");
        assert_eq!(ids.len(), 3);
        assert_eq!(gone, ["gpt-4o-audio"]);
    }

    #[test]
    fn a_new_catalog_says_what_was_added_and_removed() {
        let first = build("u", (vec!["a".into(), "b".into()], vec![]), None, now());
        assert!(first.added.is_empty() && first.removed.is_empty());
        let second = build(
            "u",
            (vec!["b".into(), "c".into()], vec![]),
            Some(&first),
            now(),
        );
        assert_eq!(second.added, ["c"]);
        assert_eq!(second.removed, ["a"]);
        assert!(second.offers("b") && !second.offers("a"));
        let elsewhere = build("v", (vec!["z".into()], vec![]), Some(&second), now());
        assert!(
            elsewhere.added.is_empty(),
            "another endpoint: nothing to compare"
        );
    }

    #[test]
    fn every_recorded_catalog_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalogs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("catalog fixtures") {
            let path = entry.expect("entry").path();
            let body = std::fs::read(&path).expect("read");
            let (ids, _) =
                parse(&body, now()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!ids.is_empty(), "{}", path.display());
            assert!(ids.iter().all(|m| !m.starts_with("models/")));
            n += 1;
        }
        assert!(n >= 8, "{n}");
    }
}
