//! Every file location the agent uses, in one place: config, data (state), logs, the
//! ready file and the login-agent files. Defaults follow each platform's conventions
//! through `directories` (macOS: ~/Library/Application Support/llm-rotator,
//! ~/Library/Logs/llm-rotator; Linux: XDG config/data/state dirs); `--config`/`--data-dir`
//! and their env vars override them.

use std::path::PathBuf;

/// The resolved locations for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The config file.
    pub config: PathBuf,
    /// The data dir (persisted state).
    pub data_dir: PathBuf,
    /// The log dir.
    pub log_dir: PathBuf,
    /// Where the agent writes the address it listens on once it does (`--ready-file`;
    /// see [`crate::ready`]); none by default.
    pub ready_file: Option<PathBuf>,
}

/// Errors resolving paths.
#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    /// No home directory could be found.
    #[error("cannot find the home directory; pass --config and --data-dir")]
    NoHome,
}

/// The names of the files and folders the agent keeps in its data dir (every module that
/// owns one names it through here, so the data dir's layout is in one place).
pub mod data {
    /// The pool's state across restarts ([`crate::pool::store`]).
    pub const STATE: &str = "state.json";
    /// The usage history ([`crate::history`]).
    pub const HISTORY: &str = "history.redb";
    /// The user's choices outside the config ([`crate::settings`]).
    pub const SETTINGS: &str = "settings.json";
    /// The providers' model catalogs, as last read ([`crate::catalog`]).
    pub const CATALOG: &str = "catalog.json";
    /// A copy of the last config that loaded, to start on when the file breaks.
    pub const LAST_GOOD_CONFIG: &str = "config.last-good.toml";
    /// The logs, when `--data-dir` is given and `LLM_ROTATOR_LOG_DIR` is not.
    pub const LOGS: &str = "logs";
}

/// Where the copy of the last config that loaded is kept.
pub fn last_good_config(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join(data::LAST_GOOD_CONFIG)
}

/// The application's bundle-style identifier.
pub const APP_ID: &str = "com.llmrotator.agent";

fn project_dirs() -> Option<directories::ProjectDirs> {
    // macOS: ~/Library/Application Support/llm-rotator; Linux: ~/.config/llm-rotator.
    directories::ProjectDirs::from("", "", "llm-rotator")
}

impl Paths {
    /// Resolves paths from the optional overrides and the platform defaults.
    pub fn resolve(
        config: Option<PathBuf>,
        data_dir: Option<PathBuf>,
    ) -> Result<Paths, PathsError> {
        let dirs = project_dirs();
        let config = match config {
            Some(c) => c,
            None => dirs
                .as_ref()
                .ok_or(PathsError::NoHome)?
                .config_dir()
                .join("config.toml"),
        };
        let data_dir = match data_dir {
            Some(d) => d,
            None => dirs
                .as_ref()
                .ok_or(PathsError::NoHome)?
                .data_dir()
                .to_path_buf(),
        };
        let log_dir = default_log_dir().unwrap_or_else(|| data_dir.join("logs"));
        Ok(Paths {
            config,
            data_dir,
            log_dir,
            ready_file: None,
        })
    }
}

/// ~/Library/Logs/llm-rotator on macOS; the XDG state dir on Linux.
pub fn default_log_dir() -> Option<PathBuf> {
    #[cfg(target_os = "macos")]
    {
        directories::BaseDirs::new().map(|b| b.home_dir().join("Library/Logs/llm-rotator"))
    }
    #[cfg(not(target_os = "macos"))]
    {
        directories::BaseDirs::new().map(|b| {
            b.state_dir()
                .map(|s| s.join("llm-rotator"))
                .unwrap_or_else(|| b.home_dir().join(".local/state/llm-rotator"))
        })
    }
}

/// The LaunchAgent plist `service install` writes on macOS.
pub fn launch_agent_plist(home: &std::path::Path) -> PathBuf {
    home.join("Library/LaunchAgents")
        .join(format!("{APP_ID}.plist"))
}

/// The macOS log dir under `home` (the launchd stdout/stderr files go there too).
pub fn macos_log_dir(home: &std::path::Path) -> PathBuf {
    home.join("Library/Logs/llm-rotator")
}

/// The systemd user unit `service install` writes on Linux, under the XDG config dir.
pub fn systemd_user_unit(config_home: &std::path::Path) -> PathBuf {
    config_home.join("systemd/user/llm-rotator.service")
}
