//! Logging: a daily rolling file in the log dir (7 kept), plus stderr unless we are
//! launchd's agent writing to a file (launchd's stderr file never rotates). Both are
//! written by one background thread in batches ([`batch`]), so a request's log line costs
//! it no syscall and no thread wake-up; the guard writes out the rest on exit. Level from
//! `RUST_LOG`, else the config. Nothing here ever formats a key; request lines carry no
//! prompt or completion text.

pub mod batch;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

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

/// The date in a log file name `llm-rotator.YYYY-MM-DD.log`.
pub fn log_file_date(name: &str) -> Option<NaiveDate> {
    let date = name.strip_prefix("llm-rotator.")?.strip_suffix(".log")?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// Deletes all but the newest `keep - 1` dated log files older than `today`, so that with
/// today's file there are at most `keep`. Goes by the date in the name: the appender's own
/// pruning goes by creation time, which copies and restores can scramble. Returns the
/// deleted paths.
pub fn prune_old_logs(dir: &Path, today: NaiveDate, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut old: Vec<(NaiveDate, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let date = log_file_date(e.file_name().to_str()?)?;
            (date != today).then(|| (date, e.path()))
        })
        .collect();
    old.sort_by_key(|(date, _)| std::cmp::Reverse(*date));
    let mut deleted = Vec::new();
    for (_, path) in old.into_iter().skip(keep.saturating_sub(1)) {
        std::fs::remove_file(&path)?;
        deleted.push(path);
    }
    Ok(deleted)
}

/// True when launchd started us as the login agent: then stderr is a file launchd never
/// rotates, so the log goes to the rolling file only.
fn launchd_agent() -> bool {
    std::env::var("XPC_SERVICE_NAME").is_ok_and(|v| v == crate::paths::APP_ID)
}

/// Installs the global subscriber. Returns the guard to keep until exit (None when
/// logging goes straight to stderr: no log dir, or the writer thread could not start).
pub fn init(level: &str, log_dir: Option<&Path>) -> Option<batch::LogGuard> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let mut problem = None;
    let mut pruned = Ok(Vec::new());
    let opened = log_dir.and_then(|dir| {
        let opened = std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log dir {}: {e}", dir.display()))
            .and_then(|()| {
                // The appender names files by UTC date.
                pruned = prune_old_logs(dir, chrono::Utc::now().date_naive(), MAX_LOG_FILES);
                appender(dir).map_err(|e| format!("cannot open log file in {}: {e}", dir.display()))
            });
        opened.map_err(|e| problem = Some(e)).ok()
    });
    let batched = opened.and_then(|file| {
        let mut sinks: Vec<batch::Sink> = vec![Box::new(file)];
        if std::io::stderr().is_terminal() || !launchd_agent() {
            sinks.push(Box::new(std::io::stderr()));
        }
        batch::start(sinks)
            .map_err(|e| problem = Some(format!("cannot start the log writer thread: {e}")))
            .ok()
    });
    let (layer, guard) = match batched {
        Some((writer, guard)) => (
            fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false)
                .with_filter(filter())
                .boxed(),
            Some(guard),
        ),
        None => (
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .with_filter(filter())
                .boxed(),
            None,
        ),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
    if let Some(e) = problem {
        tracing::warn!("{e}; logging to stderr only");
    }
    match pruned {
        Ok(deleted) if !deleted.is_empty() => {
            tracing::debug!("deleted {} log files older than a week", deleted.len());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot delete old log files: {e}"),
    }
    guard
}

/// An error and its causes on one line, `outer: inner: root`, the way every message the
/// agent prints or logs words a failure.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: &str) -> NaiveDate {
        NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("date")
    }

    #[test]
    fn only_our_dated_file_names_count_as_logs() {
        assert_eq!(
            log_file_date("llm-rotator.2026-11-27.log"),
            Some(day("2026-11-27"))
        );
        assert_eq!(log_file_date("llm-rotator.2026-13-01.log"), None);
        assert_eq!(log_file_date("launchd-stderr.log"), None);
        assert_eq!(log_file_date("llm-rotator.2026-11-27.log.gz"), None);
    }

    #[test]
    fn pruning_keeps_the_six_newest_days_before_today_whatever_the_creation_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let today = day("2026-03-10");
        // Created newest first, so creation time and date disagree.
        for d in (1..=9).rev() {
            std::fs::write(
                dir.path().join(format!("llm-rotator.2026-03-0{d}.log")),
                "x",
            )
            .expect("write");
        }
        std::fs::write(dir.path().join("llm-rotator.2026-03-10.log"), "today").expect("write");
        std::fs::write(dir.path().join("launchd-stderr.log"), "kept").expect("write");
        let deleted = prune_old_logs(dir.path(), today, MAX_LOG_FILES).expect("prune");
        assert_eq!(deleted.len(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "launchd-stderr.log",
                "llm-rotator.2026-03-04.log",
                "llm-rotator.2026-03-05.log",
                "llm-rotator.2026-03-06.log",
                "llm-rotator.2026-03-07.log",
                "llm-rotator.2026-03-08.log",
                "llm-rotator.2026-03-09.log",
                "llm-rotator.2026-03-10.log",
            ]
        );
        let again = prune_old_logs(dir.path(), today, MAX_LOG_FILES).expect("prune");
        assert!(again.is_empty());
    }
}
