//! Running the proxy: load the config (writing the commented default on first run),
//! build the engine, bind, and serve until a shutdown signal; SIGHUP reloads the config.
//! The same start-up runs in the foreground (`serve`, and `run` without a display) or on
//! a background thread with a stop handle (the menu-bar app, [`crate::tray`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::engine::Engine;
use crate::http::{self, ServeError};
use crate::paths::Paths;
use crate::ready::ReadyFile;
use crate::secrets::{KeyStore, SystemKeys};

/// Options shared by `serve` and `run`.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--config` / `LLM_ROTATOR_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--data-dir` / `LLM_ROTATOR_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--port` (0: any free port, which the agent then reports; see
    /// [`crate::ready`]).
    pub port: Option<u16>,
    /// `--ready-file`: where to write the address the agent listens on.
    pub ready_file: Option<PathBuf>,
}

/// Resolves paths; log files go to `LLM_ROTATOR_LOG_DIR`, else `<data-dir>/logs` when a
/// data dir was given, else the platform log dir.
pub fn resolve_paths(opts: &ServeOptions) -> Result<Paths> {
    let mut paths = Paths::resolve(opts.config.clone(), opts.data_dir.clone())?;
    paths.ready_file.clone_from(&opts.ready_file);
    if let Some(dir) = std::env::var_os("LLM_ROTATOR_LOG_DIR") {
        paths.log_dir = PathBuf::from(dir);
    } else if let Some(d) = &opts.data_dir {
        paths.log_dir = d.join(crate::paths::data::LOGS);
    }
    Ok(paths)
}

/// Loads the config for serving: an explicitly named file must exist; the default
/// location gets the commented default written on first run. When the file has an
/// error and a last good copy exists, that copy is loaded and the file's error returned
/// beside it (third value).
pub fn load_config(opts: &ServeOptions, paths: &Paths) -> Result<(Config, bool, Option<String>)> {
    if opts.config.is_some() && !paths.config.exists() {
        anyhow::bail!(
            "config file {} does not exist (omit --config to use the default location, which is created on first run)",
            paths.config.display()
        );
    }
    let last_good = last_good_path(&paths.data_dir);
    match Config::load_or_create(&paths.config) {
        Ok((config, created)) => {
            // Best effort: without the copy, only the fallback below is lost.
            let _ = crate::config::remember_last_good(&paths.config, &last_good);
            Ok((config, created, None))
        }
        Err(e) if e.invalid().is_some() => match Config::load(&last_good) {
            Ok(config) => {
                // Logging starts after this; the error also shows in /status and the menu.
                eprintln!(
                    "llm-rotator: {e}\nllm-rotator: starting on the last config that loaded; \
                     fix the file and it is picked up without a restart"
                );
                Ok((config, false, Some(e.to_string())))
            }
            Err(_) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Open streams need two descriptors each (client and provider): raise the soft limit
/// (256 by default on macOS, about 120 streams) towards the hard limit.
fn raise_open_files_limit() {
    const WANTED: u64 = 10_240;
    match rlimit::increase_nofile_limit(WANTED) {
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}

/// Where the copy of the last config that loaded is kept (see [`crate::paths`]).
pub fn last_good_path(data_dir: &std::path::Path) -> PathBuf {
    crate::paths::last_good_config(data_dir)
}

/// The key store for this platform and build: the OS keychain, then environment variables.
pub fn key_store() -> Arc<dyn KeyStore> {
    Arc::new(SystemKeys::from_env())
}

/// Start-up done on the calling thread before serving: the config and logging.
pub struct Prepared {
    /// The config to serve (with `--port` applied).
    pub config: Config,
    /// Where everything lives.
    pub paths: Paths,
    /// Flushes the log file when dropped: keep it until the process ends.
    pub log_guard: Option<crate::logging::batch::LogGuard>,
    /// The config file's error when the agent starts on the last good copy instead.
    pub config_error: Option<String>,
}

/// Loads the config (writing the default on first run) and starts logging.
pub fn prepare(opts: &ServeOptions) -> Result<Prepared> {
    let paths = resolve_paths(opts)?;
    let (mut config, created, config_error) = load_config(opts, &paths)?;
    if let Some(port) = opts.port {
        config.server.port = port;
        config.server.port_override = Some(port);
    }
    let log_guard = crate::logging::init(&config.log.level, Some(&paths.log_dir));
    raise_open_files_limit();
    if created {
        tracing::info!("wrote the default config to {}", paths.config.display());
    }
    Ok(Prepared {
        config,
        paths,
        log_guard,
        config_error,
    })
}

/// The runtime for accepting connections and the background work (state file, config
/// watcher, signals); requests are served on threads of their own (see
/// [`http::serve`]), so one thread is enough here.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("llm-rotator")
        .build()
        .context("cannot start the async runtime")
}

/// Runs the headless proxy until SIGTERM/SIGINT.
pub fn serve_blocking(opts: &ServeOptions) -> Result<()> {
    serve_prepared(prepare(opts)?)
}

/// Runs the headless proxy for an already prepared start-up until SIGTERM/SIGINT.
pub fn serve_prepared(prepared: Prepared) -> Result<()> {
    let Prepared {
        config,
        paths,
        log_guard: _log_guard,
        config_error,
    } = prepared;
    runtime()?.block_on(serve_async(
        config,
        paths,
        config_error,
        shutdown_signal(),
        None,
    ))
}

/// What the background agent reports once it is up.
pub struct Started {
    /// The running engine (snapshots and commands).
    pub engine: Engine,
    /// The runtime the engine runs on, for spawning commands from other threads.
    pub runtime: tokio::runtime::Handle,
    /// Why the port could not be bound, if it could not: the engine still runs so the UI
    /// can show the providers and the fix.
    pub bind_error: Option<ServeError>,
}

/// Called once the background agent is up (or could not bind its port).
pub type OnStarted = Box<dyn FnOnce(Started) + Send>;

/// A proxy running on its own thread (the menu-bar app); see [`serve_in_background`].
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Background {
    /// Asks the proxy to stop: no new connections; running requests get the grace period.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether the proxy thread has ended (then [`Background::join`] does not block).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the proxy and waits for its thread; the result is how serving ended.
    pub fn join(mut self) -> Result<()> {
        self.stop();
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the proxy thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// Starts the proxy on a thread of its own, with its own runtime. `on_started` runs once
/// the engine exists (on that thread); `on_stopped` runs when the proxy has stopped,
/// whether by [`Background::stop`], SIGTERM/SIGINT or an error.
pub fn serve_in_background(
    config: Config,
    paths: Paths,
    config_error: Option<String>,
    on_started: OnStarted,
    on_stopped: Box<dyn FnOnce() + Send>,
) -> Result<Background> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("llm-rotator-proxy".into())
        .spawn(move || {
            let result = runtime().and_then(|rt| {
                let shutdown = async move {
                    tokio::select! {
                        _ = stop_rx => tracing::info!("quit requested"),
                        () = shutdown_signal() => {}
                    }
                };
                rt.block_on(serve_async(
                    config,
                    paths,
                    config_error,
                    shutdown,
                    Some(on_started),
                ))
            });
            if let Err(e) = &result {
                tracing::error!("the proxy stopped: {e:#}");
            }
            on_stopped();
            result
        })
        .context("cannot start the proxy thread")?;
    Ok(Background {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Makes `config` name the port the agent listens on: when 0 (any free port) was asked
/// for, by `--port` or by the file, everything that reads the config (`/status`, the
/// menu, the dashboard's address, reloads) sees the port the system picked. A fixed port
/// is left as it is.
fn settle_port(config: &mut Config, bound: u16) {
    if config.server.port == 0 {
        config.server.port = bound;
        if config.server.port_override.is_some() {
            config.server.port_override = Some(bound);
        }
    }
}

/// Binds, builds the engine and serves until `shutdown`. With `on_started` (the menu-bar
/// app) a port that cannot be bound is reported there instead of ending the agent.
async fn serve_async(
    mut config: Config,
    paths: Paths,
    config_error: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_started: Option<OnStarted>,
) -> Result<()> {
    // Cleared before binding, so whoever waits on it never reads an earlier run's address.
    let ready = match &paths.ready_file {
        Some(path) => Some(ReadyFile::clear(path).await?),
        None => None,
    };
    // Bound before the engine is built, so the engine starts with the port actually bound
    // (see `settle_port`); connections that arrive meanwhile wait in the listen queue.
    let addr = SocketAddr::new(config.server.host, config.server.port);
    let bound = http::bind(addr).await.and_then(|listener| {
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok((listener, local))
    });
    let (listener, bind_error) = match (bound, on_started.is_some()) {
        (Ok((listener, local)), _) => {
            settle_port(&mut config, local.port());
            (Some(listener), None)
        }
        (Err(e), false) => return Err(e.into()),
        (Err(e), true) => {
            tracing::error!("{e}");
            (None, Some(e))
        }
    };
    let grace = config.server.shutdown_grace;
    let store = key_store();
    let config_path = paths.config.clone();
    let last_good = last_good_path(&paths.data_dir);
    let data_dir = paths.data_dir.clone();
    let engine = tokio::task::spawn_blocking(move || {
        let engine =
            Engine::new(config, Some(config_path.clone()), store)?.with_last_good(last_good);
        engine.settings.load(&data_dir);
        // Running on the last good copy: the file's error shows in /status and the menu.
        if config_error.is_some() {
            engine
                .pool
                .set_config_status(Some(config_path.display().to_string()), config_error);
        }
        Ok::<_, reqwest::Error>(engine)
    })
    .await
    .context("engine start-up task failed")?
    .context("cannot build the HTTP client")?;
    if let (Some(ready), Some(_)) = (&ready, &listener) {
        ready.announce(&engine.config().admin_url()).await?;
    }
    let state = crate::pool::store::start(&engine, &paths.data_dir).await;
    // Only an agent that serves keeps history: a second copy that could not bind its
    // port leaves the first one's database alone.
    let history = match &listener {
        Some(_) => Some(crate::history::writer::start(
            &engine.history,
            &paths.data_dir,
        )),
        None => None,
    };
    let wake = crate::wake::start(&engine);
    let network = crate::network::start(&engine);
    // Only the agent that serves tells the desktop: a second copy stays quiet.
    let notifications = listener.as_ref().map(|_| crate::notify::start(&engine));
    let release = crate::memory::start();
    // Only an agent that serves joins the shared pool.
    let shared = listener
        .as_ref()
        .and_then(|_| crate::shared::start(&engine, &paths.data_dir));
    let watcher = crate::watcher::start(&engine);
    // In the background: the first request never waits for a provider's model list.
    let catalogs = crate::catalog::start(&engine, &paths.data_dir);
    let snap = engine.pool.snapshot(chrono::Utc::now());
    if listener.is_some() {
        tracing::info!(
            "serving on {} ({} of {} providers ready; config {})",
            engine.config().endpoint_url(),
            snap.ready_count(),
            snap.providers.len(),
            paths.config.display()
        );
    }
    if let Some(on_started) = on_started {
        on_started(Started {
            engine: engine.clone(),
            runtime: tokio::runtime::Handle::current(),
            bind_error,
        });
    }
    let reload_task = tokio::spawn(reload_on_sighup(engine.clone()));
    let result = match listener {
        Some(listener) => http::serve(listener, engine, shutdown, grace).await,
        None => {
            shutdown.await;
            Ok(())
        }
    };
    reload_task.abort();
    wake.abort();
    if let Some(network) = network {
        network.abort();
    }
    if let Some(notifications) = notifications {
        notifications.stop();
    }
    release.abort();
    if let Some(shared) = shared {
        shared.abort();
    }
    if let Some(history) = history {
        if let Err(e) = tokio::task::spawn_blocking(move || history.stop()).await {
            tracing::error!("usage history writer failed to stop: {e}");
        }
    }
    watcher.stop().await;
    catalogs.stop().await;
    state.shutdown().await;
    if let Some(ready) = ready {
        ready.withdraw().await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_of_zero_becomes_the_bound_port_and_a_fixed_port_stays() {
        let mut from_file = Config::parse("[server]\nport = 0\n", None).expect("config");
        settle_port(&mut from_file, 49321);
        assert_eq!(from_file.server.port, 49321);
        assert_eq!(from_file.server.port_override, None);
        assert_eq!(from_file.admin_url(), "http://127.0.0.1:49321");

        let mut from_cli = Config::builtin().expect("builtin");
        from_cli.server.port = 0;
        from_cli.server.port_override = Some(0);
        settle_port(&mut from_cli, 49321);
        assert_eq!(from_cli.server.port, 49321);
        assert_eq!(from_cli.server.port_override, Some(49321));

        let mut fixed = Config::parse("[server]\nport = 8123\n", None).expect("config");
        fixed.server.port_override = Some(8123);
        let before = fixed.clone();
        settle_port(&mut fixed, 8123);
        assert_eq!(fixed.server, before.server);
    }
}
