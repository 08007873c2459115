//! The running agent's shared handle: the provider pool, the live config, the upstream
//! client and the key store, plus the commands every front end uses (HTTP admin routes,
//! the tray, signals): toggle, reload config, reload keys. Fallible work (reading files,
//! asking the keychain) runs off the async workers and completes before anything is
//! swapped in, so requests never see half-old, half-new state.
//!
//! The live config has one owner: the `watch` here, swapped only inside the pool's lock
//! by [`Pool::apply_reload`](crate::pool::Pool::apply_reload), which changes the
//! providers, keys, routing, key note and config status in the same step. A request
//! reads the config once when it starts and finishes on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, ProviderConfig};
use crate::pool::Pool;
use crate::proxy::wait::WaitingRoom;
use crate::secrets::{KeyStore, ProviderKey};

/// Errors of engine commands.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The config on disk is invalid or unreadable; the running one stays.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A blocking task failed to run.
    #[error("internal task failed: {0}")]
    Task(String),
    /// There is no config file to reload (running on the built-in default).
    #[error("no config file to reload")]
    NoFile,
}

/// A reload's fallible half, done: what the infallible half swaps in.
struct PreparedReload {
    config: Arc<Config>,
    keys: HashMap<String, Vec<ProviderKey>>,
    key_note: Option<String>,
}

/// The shared state behind every front end. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    /// Provider state.
    pub pool: Pool,
    /// Requests waiting for a cooling provider.
    pub waiting: Arc<WaitingRoom>,
    /// Recent `/v1/responses` conversations, for `previous_response_id`.
    pub responses: Arc<crate::frontends::http::ResponseStore>,
    /// Counters, hourly series and recent requests (`/metrics` and the dashboard).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Usage history: counts per hour, provider, key and model (see [`crate::history`]).
    pub history: crate::history::History,
    /// The user's choices outside the config (notifications on or off).
    pub settings: crate::settings::Settings,
    config: Arc<watch::Sender<Arc<Config>>>,
    /// The config the agent started with: what the settings read only at start hold.
    started: Arc<Config>,
    /// The shared upstream client.
    pub client: reqwest::Client,
    keys: Arc<dyn KeyStore>,
    // Shared, not owned: extractors clone the engine twice per request.
    config_path: Option<Arc<PathBuf>>,
    /// One reload at a time (file watcher, SIGHUP, `/reload`, key reloads may overlap): a
    /// slow one that read the file earlier must not swap in after a newer one.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// Where a copy of each config that loads is kept (see `Config::load_or_last_good`).
    last_good: Option<Arc<PathBuf>>,
}

/// Looks up every provider's keys (blocking: keychains may block).
pub fn lookup_keys(
    store: &dyn KeyStore,
    providers: &[Arc<ProviderConfig>],
) -> HashMap<String, Vec<ProviderKey>> {
    providers
        .iter()
        .map(|p| (p.name.clone(), store.keys_for(p)))
        .collect()
}

impl Engine {
    /// Builds the engine. Blocking (key lookup): call before the runtime serves requests
    /// or from `spawn_blocking`.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        keys: Arc<dyn KeyStore>,
    ) -> Result<Engine, reqwest::Error> {
        let client = crate::upstream::build_client(&config.routing)?;
        let found = lookup_keys(keys.as_ref(), &config.providers);
        let pool = Pool::new(
            &config.providers,
            &found,
            config.routing.clone(),
            Utc::now(),
        );
        pool.set_key_note(keys.note());
        pool.set_config_status(config_path.as_ref().map(|p| p.display().to_string()), None);
        let config = Arc::new(config);
        let started = Arc::clone(&config);
        let (tx, _rx) = watch::channel(config);
        Ok(Engine {
            waiting: WaitingRoom::new(pool.clone()),
            responses: Arc::default(),
            telemetry: Arc::default(),
            history: crate::history::History::new(),
            settings: crate::settings::Settings::default(),
            pool,
            config: Arc::new(tx),
            started,
            client,
            keys,
            config_path: config_path.map(Arc::new),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            last_good: None,
        })
    }

    /// Settings changed in the live config that take effect only after a restart (see
    /// [`crate::config::restart_only_changes`]).
    pub fn restart_needed(&self) -> Vec<&'static str> {
        crate::config::restart_only_changes(&self.started, &self.config())
    }

    /// Keeps a copy of every config that loads at `path`, for starting on it when the
    /// file has an error.
    pub fn with_last_good(mut self, path: PathBuf) -> Engine {
        self.last_good = Some(Arc::new(path));
        self
    }

    /// The config the agent started with (settings read only at start come from it).
    pub fn started_config(&self) -> Arc<Config> {
        Arc::clone(&self.started)
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.borrow())
    }

    /// Where the config file lives, if any.
    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_deref()
    }

    /// Watches config swaps.
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    /// Toggles a provider; false for an unknown name.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let ok = self.pool.set_enabled(name, enabled);
        if ok {
            tracing::info!(provider = name, enabled, "provider toggled");
        }
        ok
    }

    /// Ends a provider's cooldowns and benches by hand; its fresh snapshot, or `None` for
    /// an unknown name.
    pub fn reset_provider(&self, name: &str) -> Option<crate::pool::ProviderSnapshot> {
        let snap = self.pool.reset(name, Utc::now());
        if snap.is_some() {
            tracing::info!(provider = name, "cooldowns reset by hand");
        }
        snap
    }

    /// Re-reads the config file and the keys, validates, then swaps in one step: a
    /// fallible prepare (`prepare_reload`: the file, the keychain) and one
    /// infallible apply that changes the pool and the live config together and publishes
    /// once. On error the running config stays and the error is recorded for `/status`.
    pub async fn reload(&self) -> Result<Arc<Config>, EngineError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path_text = self.config_path.as_ref().map(|p| p.display().to_string());
        match self.prepare_reload().await {
            Ok(prepared) => Ok(self.apply_reload(prepared, path_text)),
            Err(e @ EngineError::Config(_)) => {
                tracing::error!("config reload rejected, keeping the running config: {e}");
                self.pool.set_config_status(path_text, Some(e.to_string()));
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The fallible half of a reload: reads and validates the file (keeping a copy of a
    /// good one), then looks up every provider's keys; off the async workers.
    async fn prepare_reload(&self) -> Result<PreparedReload, EngineError> {
        let Some(path) = self.config_path.as_deref().cloned() else {
            return Err(EngineError::NoFile);
        };
        let store = Arc::clone(&self.keys);
        let last_good = self.last_good.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path)?;
            if let Some(dest) = last_good {
                if let Err(e) = crate::config::remember_last_good(&path, &dest) {
                    tracing::warn!(
                        "cannot keep a copy of the config in {}: {e}",
                        dest.display()
                    );
                }
            }
            let keys = lookup_keys(store.as_ref(), &config.providers);
            Ok::<_, ConfigError>((config, keys, store.note()))
        })
        .await
        .map_err(|e| EngineError::Task(e.to_string()))?;
        let (mut config, keys, key_note) = loaded?;
        if let Some(port) = self.started.server.port_override {
            config.server.port = port;
            config.server.port_override = Some(port);
        }
        // A file asking for any free port (0) is content with the one bound at start: no
        // restart is needed for it.
        if config.server.port == 0 {
            config.server.port = self.started.server.port;
        }
        Ok(PreparedReload {
            config: Arc::new(config),
            keys,
            key_note,
        })
    }

    /// The infallible half: one change of the pool with the live config swapped inside it.
    fn apply_reload(&self, prepared: PreparedReload, config_path: Option<String>) -> Arc<Config> {
        let PreparedReload {
            config,
            keys,
            key_note,
        } = prepared;
        let pending = crate::config::restart_only_changes(&self.started, &config);
        if !pending.is_empty() {
            tracing::warn!(
                "{} changed; the running value stays until the agent restarts",
                pending.join(", ")
            );
        }
        self.pool.apply_reload(
            crate::pool::Reload {
                providers: &config.providers,
                keys: &keys,
                routing: config.routing.clone(),
                key_note,
                config_path,
                now: Utc::now(),
            },
            || {
                self.config.send_replace(Arc::clone(&config));
            },
        );
        tracing::info!(providers = config.providers.len(), "config reloaded");
        config
    }

    /// Re-reads every provider's keys (after `keys set` or `keys delete`).
    pub async fn reload_keys(&self) -> Result<(), EngineError> {
        let _one_at_a_time = self.reloading.lock().await;
        let store = Arc::clone(&self.keys);
        let providers = self.pool.configs();
        let (keys, note) = tokio::task::spawn_blocking(move || {
            (lookup_keys(store.as_ref(), &providers), store.note())
        })
        .await
        .map_err(|e| EngineError::Task(e.to_string()))?;
        self.pool.apply_keys(&keys, Utc::now());
        self.pool.set_key_note(note);
        tracing::info!("keys reloaded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::EnvKeys;

    fn provider(name: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\nrequires_key = false\n\n"
        )
    }

    #[tokio::test]
    async fn a_reload_changes_pool_config_and_status_in_one_step_seen_once() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, provider("old")).expect("write");
        let engine = Engine::new(
            Config::load(&path).expect("load"),
            Some(path.clone()),
            Arc::new(EnvKeys),
        )
        .expect("engine");
        // A broken file first: its error shows, nothing else changes.
        std::fs::write(&path, "[[providers]]\nname = 1\n").expect("write");
        assert!(engine.reload().await.is_err());
        assert!(engine.pool.snapshot(Utc::now()).config.last_error.is_some());

        std::fs::write(&path, provider("new") + &provider("other")).expect("write");
        let mut versions = engine.pool.subscribe();
        versions.borrow_and_update();
        let before = *versions.borrow();
        let mut configs = engine.subscribe_config();
        configs.borrow_and_update();
        engine.reload().await.expect("reload");
        assert_eq!(*versions.borrow(), before.wrapping_add(1), "published once");
        assert!(configs.has_changed().unwrap_or(false));
        let snap = engine.pool.snapshot(Utc::now());
        let names: Vec<&str> = snap.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["new", "other"]);
        assert_eq!(
            snap.config.last_error, None,
            "the error went with the same step"
        );
        let live: Vec<String> = engine
            .config()
            .providers
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(live, ["new", "other"]);
    }
}
