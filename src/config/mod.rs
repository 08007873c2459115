//! The configuration: raw serde types are parsed from TOML, then validated once into
//! [`Config`], the only shape the rest of the program sees. This module is the only code
//! that reads TOML; it never touches keys (those come from [`crate::secrets`]).

mod default;
pub mod quirks;
mod raw;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use default::DEFAULT_CONFIG;

/// The largest config file read (4 MiB): a real one is a few KiB, so anything this large
/// is the wrong file, and reading it whole would only cost memory.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a config file's text: a regular file only, at most [`MAX_CONFIG_BYTES`], within
/// [`crate::files::READ_TIMEOUT`] (see [`crate::files`]).
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = crate::files::read(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        crate::files::ReadError::Refused(reason) => ConfigError::Refused {
            path: path.to_path_buf(),
            reason,
        },
        crate::files::ReadError::Io(source) => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
    })?;
    String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// A configuration error with the place in the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not one to read: not a regular file (a FIFO standing in
    /// for a hung mount, a device), larger than [`MAX_CONFIG_BYTES`], or not read within
    /// [`crate::files::READ_TIMEOUT`].
    #[error("config file {} {reason}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: crate::files::Refusal,
    },
    /// The file could not be written (first-run default config).
    #[error("cannot write config file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a value has the wrong type or an unknown key was used.
    #[error("{}", .0)]
    Invalid(Box<Invalid>),
}

/// One invalid spot in a config file: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The TOML path of the offending value (e.g. `providers[2].name`), when known.
    pub key: Option<String>,
    /// What is wrong, lower case.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            write!(f, ": ")?;
        } else if let Some(line) = self.line {
            write!(f, "line {line}")?;
            if let Some(col) = self.column {
                write!(f, ", column {col}")?;
            }
            write!(f, ": ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl ConfigError {
    /// The invalid spot, for errors that have one.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(inv) => Some(inv),
            _ => None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listener and HTTP-edge settings.
    pub server: ServerConfig,
    /// Rotation and cooldown policy.
    pub routing: RoutingConfig,
    /// Logging.
    pub log: LogConfig,
    /// Providers, in file order.
    pub providers: Vec<Arc<ProviderConfig>>,
    /// `[model_aliases]`: client model ids (exact, or a pattern ending in `*`) mapped to
    /// `auto`, a model, or `provider/model`, for clients that send their own ids (Claude
    /// Code's `claude-…`).
    pub model_aliases: Vec<(String, String)>,
    /// `[shared]`: the Redis or Valkey server several agents share their pool through
    /// (`None`: this agent keeps its pool to itself).
    pub shared: Option<SharedConfig>,
}

/// `[shared]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS), as written; never with a password
    /// (that is the keychain item `shared`).
    pub url: String,
    /// The pool's name: every Redis key is `llm-rotator:<pool>:…`, so several pools can
    /// share one server.
    pub pool: String,
    /// How this machine is named to the others (default: its host name).
    pub machine: Option<String>,
}

impl SharedConfig {
    /// What `config check` and the log warn about: a server off this machine reached
    /// without TLS, where anyone on the path reads the pool's traffic.
    pub fn warnings(&self) -> Vec<String> {
        let Ok(url) = reqwest::Url::parse(&self.url) else {
            return Vec::new();
        };
        let host = url.host_str().unwrap_or_default();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_matches(['[', ']'])
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if url.scheme() == "redis" && !loopback {
            vec![format!(
                "shared.url: {} is reached without TLS; the pool's cooldowns and counts (never keys \
                 or prompts) cross the network in clear text. Use rediss:// if the server offers TLS.",
                url.host_str().unwrap_or_default()
            )]
        } else {
            Vec::new()
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind.
    pub port: u16,
    /// When set, every route but `/health` requires `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Extra `Host` header values accepted besides localhost names.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API (CORS is answered for these only).
    pub allowed_origins: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers, from their first byte (or
    /// from connecting); then the connection is closed.
    pub header_read_timeout: Duration,
    /// How long a kept-alive client connection may sit with no request in flight before
    /// it is closed.
    pub idle_timeout: Duration,
    /// Most client connections open at once; further ones are closed as soon as they are
    /// accepted.
    pub max_connections: usize,
    /// Whether `GET /metrics` (Prometheus text format) is served; when off it is a 404.
    pub metrics: bool,
    /// `--port` from the command line (not from the file): it wins over `port` at start
    /// and in every reload.
    pub port_override: Option<u16>,
}

/// `[routing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Cooldown after a 429 that carried no hint.
    pub default_cooldown: Duration,
    /// Upper bound for cooldowns derived from repeated hint-less 429s.
    pub max_cooldown: Duration,
    /// Cooldown after a transient failure (5xx, 408, connect error, timeout).
    pub transient_cooldown: Duration,
    /// Cooldown after a 402 (payment required).
    pub payment_cooldown: Duration,
    /// Connect timeout for upstream calls.
    pub connect_timeout: Duration,
    /// Time allowed from sending a request until the response headers (and, for
    /// streams, the first event) arrive; past it the attempt fails and rotation continues.
    pub first_byte_timeout: Duration,
    /// Time allowed for a whole non-streaming response.
    pub request_timeout: Duration,
    /// Longest silence tolerated inside a stream before it is ended with an error.
    pub stream_idle_timeout: Duration,
    /// Most attempts for one request (0 = one per provider key that could serve it).
    pub max_attempts: usize,
    /// Longest time a streaming request may wait (across rotations) before its first
    /// byte reaches the client; kept under the 120 s after which clients give up.
    pub stream_start_timeout: Duration,
    /// Longest a request waits for a cooling provider instead of getting a 429 (zero:
    /// never waits).
    pub max_wait: Duration,
    /// Most requests waiting at once; past it, a 429 as without waiting.
    pub max_waiting: usize,
    /// Longest a non-streaming request may wait (across rotations) until a provider's
    /// answer starts; kept under the 300 s after which clients such as Osaurus give up.
    pub request_start_timeout: Duration,
    /// Largest non-streaming answer buffered (it is checked before it is relayed).
    pub max_response_bytes: usize,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Default filter when `RUST_LOG` is not set.
    pub level: String,
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Unique name, `[a-z0-9_-]+`.
    pub name: String,
    /// Base URL ending before `/chat/completions`, without trailing slash.
    pub base_url: String,
    /// `base_url` + `/chat/completions`, parsed.
    pub chat_url: reqwest::Url,
    /// Model sent when the client asks for "auto" or an unknown model: the first of
    /// `preferred`.
    pub model: String,
    /// The `model` preference list, in order (one entry when a single model is set): the
    /// first one that is not retired is sent.
    pub preferred: Vec<String>,
    /// Further model ids this provider serves.
    pub models: Vec<String>,
    /// Embedding model ids it serves on `/v1/embeddings` (the first is used for "auto").
    pub embedding_models: Vec<String>,
    /// Whether it serves the legacy `/completions` itself (then `/v1/completions` goes
    /// there as sent, instead of translated to chat).
    pub legacy_completions: bool,
    /// Whether `GET /v1/models` also lists everything the provider's catalog offers, as
    /// `provider/model` ids.
    pub list_all_models: bool,
    /// 1 = tried first.
    pub priority: u32,
    /// Enabled in the file (the runtime toggle may override).
    pub enabled: bool,
    /// Environment variables holding keys; each one that is set is a separate key.
    pub api_key_env: Vec<String>,
    /// False for local servers such as Ollama.
    pub requires_key: bool,
    /// What this provider's requests need and how its limits are read.
    pub quirks: quirks::Quirks,
    /// The limits the user knows of, for providers whose answers do not say.
    pub limits: Limits,
}

/// A provider's limits as the user set them (`requests_per_day` and friends), each for
/// one key: every key is an account with allowances of its own. Used where the provider's
/// own `x-ratelimit-*` headers say nothing, against the agent's own counts; when one is
/// reached the key rests until the window ends. Days are the local calendar day, minutes
/// the calendar minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests a key may send per day.
    pub requests_per_day: Option<u64>,
    /// Requests a key may send per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens a key may use per minute.
    pub tokens_per_minute: Option<u64>,
    /// Tokens a key may use per day.
    pub tokens_per_day: Option<u64>,
}

/// `base` with `tail` (e.g. `/chat/completions`) added to its path, before any query
/// string (`https://gw/v1?key=X` → `https://gw/v1/chat/completions?key=X`).
pub fn endpoint_url(base: &str, tail: &str) -> String {
    match base.split_once('?') {
        Some((path, query)) => format!("{}{tail}?{query}", path.trim_end_matches('/')),
        None => format!("{}{tail}", base.trim_end_matches('/')),
    }
}

/// A URL with every query value replaced by `***`, for display, logs and saved files.
pub fn shown_url(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=***"),
            None => "***".to_string(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

impl ProviderConfig {
    /// Whether this provider serves `model` (its default model or one of `models`).
    pub fn serves(&self, model: &str) -> bool {
        self.preferred.iter().any(|m| m == model)
            || self.models.iter().any(|m| m == model)
            || self.embedding_models.iter().any(|m| m == model)
    }

    /// Every configured model id: the preference list, then `models`.
    pub fn configured_models(&self) -> impl Iterator<Item = &String> {
        self.preferred.iter().chain(&self.models)
    }

    /// The URL for the models list (a cheap authenticated call).
    pub fn models_url(&self) -> String {
        endpoint_url(&self.base_url, "/models")
    }

    /// `base_url` as shown and saved: any query string's values (some gateways take the
    /// key there) replaced by `***`.
    pub fn base_url_shown(&self) -> String {
        shown_url(&self.base_url)
    }
}

impl Config {
    /// Parses and validates config text. `file` only labels errors.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        raw::parse(text).map_err(|mut inv| {
            inv.file = file.map(Path::to_path_buf);
            ConfigError::Invalid(Box::new(inv))
        })
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Config::parse(&text, Some(path))
    }

    /// Reads the config at `path`, first writing the commented default there if no file
    /// exists yet. Returns the config and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(Config, bool), ConfigError> {
        match std::fs::metadata(path) {
            Ok(_) => Ok((Config::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let write_err = |source| ConfigError::Write {
                    path: path.to_path_buf(),
                    source,
                };
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(write_err)?;
                }
                std::fs::write(path, DEFAULT_CONFIG).map_err(write_err)?;
                Ok((Config::parse(DEFAULT_CONFIG, Some(path))?, true))
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Loads `path`; when it is invalid (not merely missing or unreadable) and a copy of
    /// the last config that loaded exists at `last_good`, loads that instead and returns
    /// the file's error beside it, so a typo saved while the agent was stopped never
    /// keeps it from starting.
    pub fn load_or_last_good(
        path: &Path,
        last_good: &Path,
    ) -> Result<(Config, Option<ConfigError>), ConfigError> {
        match Config::load(path) {
            Ok(config) => Ok((config, None)),
            Err(e) if e.invalid().is_some() => match Config::load(last_good) {
                Ok(config) => Ok((config, Some(e))),
                Err(_) => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The built-in default config.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, None)
    }

    /// Finds a provider by name.
    pub fn provider(&self, name: &str) -> Option<&Arc<ProviderConfig>> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The endpoint clients point at, e.g. `http://localhost:8000/v1`.
    pub fn endpoint_url(&self) -> String {
        let host = if self.server.host.is_loopback() || self.server.host.is_unspecified() {
            "localhost".to_string()
        } else {
            match self.server.host {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            }
        };
        format!("http://{host}:{}/v1", self.server.port)
    }

    /// The base URL for admin calls to a running instance on this config.
    pub fn admin_url(&self) -> String {
        let host = match self.server.host {
            h if h.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        format!("http://{host}:{}", self.server.port)
    }
}

/// Keeps a copy of a config file that just loaded at `dest` (written beside it and
/// renamed into place; unchanged copies are not rewritten). Both files are read like the
/// config itself (regular files only, bounded), so this never hangs either.
pub fn remember_last_good(src: &Path, dest: &Path) -> std::io::Result<()> {
    let text =
        crate::files::read(src, MAX_CONFIG_BYTES).map_err(crate::files::ReadError::into_io)?;
    if crate::files::read(dest, MAX_CONFIG_BYTES).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = dest.with_extension("toml.tmp");
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        // Created with the file's permissions (it may hold server.auth_token).
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let mode = std::fs::metadata(src)?.permissions().mode() & 0o777;
            options.mode(mode);
            mode
        };
        let mut file = options.open(&tmp)?;
        // Also when a temp file was left behind with other permissions.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        std::io::Write::write_all(&mut file, &text)?;
        std::fs::rename(&tmp, dest)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests;

/// Settings read once, when the agent starts: the listening address, what the serving
/// threads hold every client connection to, the upstream clients' connect timeout and
/// the shutdown grace, the shared pool. A reload that changes one keeps the running value until the next
/// start; this names (by their TOML keys) those that differ between `running` and `new`.
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.server, &new.server);
    [
        (a.host != b.host, "server.host"),
        (a.port != b.port, "server.port"),
        (
            a.header_read_timeout != b.header_read_timeout,
            "server.header_read_timeout_secs",
        ),
        (a.idle_timeout != b.idle_timeout, "server.idle_timeout_secs"),
        (
            a.max_connections != b.max_connections,
            "server.max_connections",
        ),
        (
            a.shutdown_grace != b.shutdown_grace,
            "server.shutdown_grace_secs",
        ),
        (
            running.routing.connect_timeout != new.routing.connect_timeout,
            "routing.connect_timeout_secs",
        ),
        (running.shared != new.shared, "shared"),
    ]
    .into_iter()
    .filter_map(|(changed, key)| changed.then_some(key))
    .collect()
}
