//! Logging: a daily rolling file in the log dir (7 kept, written by a background thread
//! whose guard flushes on exit), plus stderr. Level from `RUST_LOG`, else the config.
//! Nothing here ever formats a key; request lines carry no prompt or completion text.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Keep a week of daily files.
pub const MAX_LOG_FILES: usize = 7;

/// The file appender for `dir`: `llm-rotator.YYYY-MM-DD.log`, daily, 7 kept.
pub fn appender(dir: &Path) -> Result<RollingFileAppender, tracing_appender::rolling::InitError> {
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("llm-rotator")
        .filename_suffix("log")
        .max_log_files(MAX_LOG_FILES)
        .build(dir)
}

/// Installs the global subscriber. Returns the guard to keep until exit (None when the
/// file could not be opened; stderr still works and the reason is logged).
pub fn init(level: &str, log_dir: Option<&Path>) -> Option<WorkerGuard> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter());
    let mut file_error = None;
    let (file_layer, guard) = match log_dir.map(|d| (d, std::fs::create_dir_all(d).and(Ok(())))) {
        Some((dir, Ok(()))) => match appender(dir) {
            Ok(app) => {
                let (writer, guard) = tracing_appender::non_blocking(app);
                let layer = fmt::layer()
                    .with_writer(writer)
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(filter());
                (Some(layer), Some(guard))
            }
            Err(e) => {
                file_error = Some(format!("cannot open log file in {}: {e}", dir.display()));
                (None, None)
            }
        },
        Some((dir, Err(e))) => {
            file_error = Some(format!("cannot create log dir {}: {e}", dir.display()));
            (None, None)
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    if let Some(e) = file_error {
        tracing::warn!("{e}; logging to stderr only");
    }
    guard
}
