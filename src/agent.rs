//! Running the proxy: load the config (writing the commented default on first run),
//! build the engine, bind, and serve until a shutdown signal; SIGHUP reloads the config.
//! Used by `serve` (headless) and, until a tray is available, by `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::engine::Engine;
use crate::paths::Paths;
use crate::secrets::{KeyStore, SystemKeys};
use crate::server;

/// Options shared by `serve` and `run`.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--config` / `LLM_ROTATOR_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--data-dir` / `LLM_ROTATOR_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--port`.
    pub port: Option<u16>,
}

/// Resolves paths; log files go to `LLM_ROTATOR_LOG_DIR`, else `<data-dir>/logs` when a
/// data dir was given, else the platform log dir.
pub fn resolve_paths(opts: &ServeOptions) -> Result<Paths> {
    let mut paths = Paths::resolve(opts.config.clone(), opts.data_dir.clone())?;
    if let Some(dir) = std::env::var_os("LLM_ROTATOR_LOG_DIR") {
        paths.log_dir = PathBuf::from(dir);
    } else if let Some(d) = &opts.data_dir {
        paths.log_dir = d.join("logs");
    }
    Ok(paths)
}

/// Loads the config for serving: an explicitly named file must exist; the default
/// location gets the commented default written on first run.
pub fn load_config(opts: &ServeOptions, paths: &Paths) -> Result<(Config, bool)> {
    if opts.config.is_some() && !paths.config.exists() {
        anyhow::bail!(
            "config file {} does not exist (omit --config to use the default location, which is created on first run)",
            paths.config.display()
        );
    }
    Ok(Config::load_or_create(&paths.config)?)
}

/// The key store for this platform and build: the OS keychain, then environment variables.
pub fn key_store() -> Arc<dyn KeyStore> {
    Arc::new(SystemKeys::from_env())
}

/// Runs the headless proxy until SIGTERM/SIGINT.
pub fn serve_blocking(opts: &ServeOptions) -> Result<()> {
    let paths = resolve_paths(opts)?;
    let (mut config, created) = load_config(opts, &paths)?;
    if let Some(port) = opts.port {
        config.server.port = port;
    }
    let _guard = crate::logging::init(&config.log.level, Some(&paths.log_dir));
    if created {
        tracing::info!("wrote the default config to {}", paths.config.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("llm-rotator")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_async(config, paths))
}

async fn serve_async(config: Config, paths: Paths) -> Result<()> {
    let addr = SocketAddr::new(config.server.host, config.server.port);
    let grace = config.server.shutdown_grace;
    let store = key_store();
    let config_path = paths.config.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::new(config, Some(config_path), store))
        .await
        .context("engine start-up task failed")?
        .context("cannot build the HTTP client")?;
    let listener = server::bind(addr).await?;
    let snap = engine.pool.snapshot(chrono::Utc::now());
    tracing::info!(
        "serving on {} ({} of {} providers ready; config {})",
        engine.config().endpoint_url(),
        snap.ready_count(),
        snap.providers.len(),
        paths.config.display()
    );
    let reload_task = tokio::spawn(reload_on_sighup(engine.clone()));
    let result = server::serve(listener, engine, shutdown_signal(), grace).await;
    reload_task.abort();
    tracing::info!("stopped");
    Ok(result?)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn reload_on_sighup(engine: Engine) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; use POST /reload instead");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received; reloading the config");
            // Errors are logged and recorded by reload itself.
            let _ = engine.reload().await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = engine;
    }
}
