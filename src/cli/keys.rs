//! `llm-rotator keys ...`: put provider keys into the OS keychain, list where each
//! provider's keys come from, delete them, import a `.env`, and test each key with one
//! cheap authenticated call. Keys are read from a hidden prompt or stdin, never from argv,
//! held in wiping buffers, and shown only as fingerprints. After a change the running agent
//! is told to re-read its keys (`POST /keys/reload`).

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use zeroize::Zeroizing;

use crate::agent::{self, ServeOptions};
use crate::config::{Config, ProviderConfig};
use crate::pool::Outcome;
use crate::secrets::keychain::{Keychain, KeychainError};
use crate::secrets::{ApiKey, KeyOrigin, KeyStore, ProviderKey, SystemKeys};
use crate::upstream::Verdict as UpstreamVerdict;

/// How long a `keys` command waits for the keychain per call: long enough for the user to
/// answer an unlock or access prompt.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Store a provider's key in the keychain. The key is read from a hidden prompt, or
    /// from stdin when piped (`pbpaste | llm-rotator keys set groq`), never from the
    /// command line.
    Set {
        /// The provider, as named in config.toml.
        provider: String,
        /// Add another key to the provider's keys (each is rotated on its own).
        #[arg(long, conflicts_with_all = ["replace", "index"])]
        add: bool,
        /// Replace the provider's first key (or, with --index, key N).
        #[arg(long)]
        replace: bool,
        /// Set key number N (1 = first, as `keys list` numbers them); replaces it if it
        /// exists, adds it if N is one past the last.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        index: Option<u32>,
    },
    /// Show, per provider, where each key comes from (keychain, env VAR or none) and its
    /// fingerprint; never the key.
    List,
    /// Delete a provider's key from the keychain.
    Delete {
        /// The provider, as named in config.toml.
        provider: String,
        /// Delete every key of the provider.
        #[arg(long, conflicts_with = "index")]
        all: bool,
        /// Delete key number N (1 = first); later keys move up.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        index: Option<u32>,
    },
    /// Move keys from a .env file into the keychain (`NAME=value` lines whose NAME is a
    /// configured provider's api_key_env variable).
    Import {
        /// The file (default: ./.env).
        path: Option<PathBuf>,
        /// Delete the file after a successful import that took everything in it.
        #[arg(long)]
        delete: bool,
    },
    /// Check each key with one cheap authenticated call (GET {base_url}/models).
    /// Exits non-zero when a key is rejected or its provider is unreachable.
    Test {
        /// Only this provider.
        provider: Option<String>,
    },
}

/// Runs a `keys` subcommand.
pub fn run(opts: &ServeOptions, action: &KeysAction) -> Result<ExitCode> {
    let config = crate::client::config_for_client(opts)?;
    let config_path = agent::resolve_paths(opts)?.config;
    let ctx = Ctx {
        config,
        config_path,
        keychain: Keychain::from_env(CLI_TIMEOUT),
    };
    match action {
        KeysAction::Set {
            provider,
            add,
            replace,
            index,
        } => ctx.set(provider, *add, *replace, index.map(|n| n as usize - 1)),
        KeysAction::List => ctx.list(),
        KeysAction::Delete {
            provider,
            all,
            index,
        } => ctx.delete(provider, *all, index.map(|n| n as usize - 1)),
        KeysAction::Import { path, delete } => {
            let path = path.clone().unwrap_or_else(|| PathBuf::from(".env"));
            ctx.import(&path, *delete)
        }
        KeysAction::Test { provider } => ctx.test(provider.as_deref()),
    }
}

struct Ctx {
    config: Config,
    config_path: PathBuf,
    keychain: Keychain,
}

impl Ctx {
    /// The named provider, or a clear error listing the configured ones.
    fn provider(&self, name: &str) -> Result<&ProviderConfig> {
        match self.config.provider(name) {
            Some(p) => Ok(p),
            None => {
                let names: Vec<&str> = self
                    .config
                    .providers
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                bail!(
                    "no provider named {name:?} in {} (configured: {})",
                    self.config_path.display(),
                    names.join(", ")
                )
            }
        }
    }

    fn keyed_provider(&self, name: &str) -> Result<&ProviderConfig> {
        let p = self.provider(name)?;
        if !p.requires_key {
            bail!("{name} needs no key (requires_key = false in its config)");
        }
        Ok(p)
    }

    /// A keychain error, with the way out when there is no keychain at all.
    fn keychain_error(&self, e: KeychainError, provider: Option<&ProviderConfig>) -> anyhow::Error {
        match e {
            KeychainError::Unavailable(_) | KeychainError::Timeout(_) => {
                let var = provider
                    .and_then(|p| p.api_key_env.first().cloned())
                    .unwrap_or_else(|| "GROQ_API_KEY".to_string());
                anyhow::anyhow!(
                    "{e}.\nWithout a keychain, give llm-rotator its keys through environment variables: \
                     set {var}=<key> in the environment llm-rotator starts in (each provider reads \
                     the variables named by its api_key_env in {}). On Linux the keychain is the \
                     Secret Service (GNOME Keyring or KWallet) of your desktop session.",
                    self.config_path.display()
                )
            }
            KeychainError::Failed(_) => anyhow::Error::new(e),
        }
    }

    fn keychain_keys(&self, provider: &ProviderConfig) -> Result<Vec<ApiKey>> {
        self.keychain
            .keys(&provider.name)
            .map_err(|e| self.keychain_error(e, Some(provider)))
    }

    fn set(&self, name: &str, add: bool, replace: bool, index: Option<usize>) -> Result<ExitCode> {
        if name == crate::shared::KEYCHAIN_ITEM {
            return self.set_shared_password(replace);
        }
        let provider = self.keyed_provider(name)?;
        // The keychain first: without one, fail before asking for the key.
        let existing = self.keychain_keys(provider)?;
        let key = read_key(name)?;
        if let Some(pos) = existing.iter().position(|k| *k == key) {
            println!(
                "{name} key #{} ({}) is already this key; nothing changed",
                pos + 1,
                key.fingerprint()
            );
            return Ok(ExitCode::SUCCESS);
        }
        let target = match (index, add, replace) {
            (Some(i), _, _) if i > existing.len() => bail!(
                "{name} has {} key(s) in the keychain; --index can be at most {}",
                existing.len(),
                existing.len() + 1
            ),
            (Some(i), _, false) if i < existing.len() => bail!(
                "{name} key #{} ({}) exists; pass --replace to replace it",
                i + 1,
                existing[i].fingerprint()
            ),
            (Some(i), _, _) => i,
            (None, true, _) => existing.len(),
            (None, false, true) => 0,
            (None, false, false) if existing.is_empty() => 0,
            (None, false, false) => bail!(
                "{name} already has a key in the keychain ({}); pass --replace to replace it \
                 or --add to add another",
                existing[0].fingerprint()
            ),
        };
        self.keychain
            .set(name, target, &key)
            .map_err(|e| self.keychain_error(e, Some(provider)))?;
        let verb = if target < existing.len() {
            "replaced"
        } else {
            "stored"
        };
        println!(
            "{verb} {name} key #{} ({}) in the keychain (service {})",
            target + 1,
            key.fingerprint(),
            self.keychain.service()
        );
        drop(key);
        self.notify();
        Ok(ExitCode::SUCCESS)
    }

    /// `keys set shared`: the shared pool's server password, kept as the keychain item
    /// `shared` (never in the config file).
    fn set_shared_password(&self, replace: bool) -> Result<ExitCode> {
        let item = crate::shared::KEYCHAIN_ITEM;
        let existing = self
            .keychain
            .keys(item)
            .map_err(|e| self.keychain_error(e, None))?;
        if !existing.is_empty() && !replace {
            bail!("the shared pool's password is already in the keychain; pass --replace to replace it");
        }
        let password = read_secret("shared pool password")?;
        self.keychain
            .set(item, 0, &password)
            .map_err(|e| self.keychain_error(e, None))?;
        println!(
            "stored the shared pool's password in the keychain (service {}, item {item}); \
             restart llm-rotator to use it",
            self.keychain.service()
        );
        Ok(ExitCode::SUCCESS)
    }

    fn delete(&self, name: &str, all: bool, index: Option<usize>) -> Result<ExitCode> {
        if name == crate::shared::KEYCHAIN_ITEM {
            let removed = self
                .keychain
                .remove_all(name)
                .map_err(|e| self.keychain_error(e, None))?;
            if removed == 0 {
                bail!("the keychain holds no shared pool password");
            }
            println!("deleted the shared pool's password from the keychain");
            return Ok(ExitCode::SUCCESS);
        }
        let provider = self.keyed_provider(name)?;
        let existing = self.keychain_keys(provider)?;
        if all {
            let n = self
                .keychain
                .remove_all(name)
                .map_err(|e| self.keychain_error(e, Some(provider)))?;
            if n == 0 {
                bail!("{name} has no key in the keychain{}", env_hint(provider));
            }
            println!("deleted {n} {name} key(s) from the keychain");
        } else {
            let i = match index {
                Some(i) if i < existing.len() => i,
                Some(i) => bail!(
                    "{name} has {} key(s) in the keychain; there is no key #{}",
                    existing.len(),
                    i + 1
                ),
                None if existing.is_empty() => {
                    bail!("{name} has no key in the keychain{}", env_hint(provider))
                }
                None if existing.len() == 1 => 0,
                None => bail!(
                    "{name} has {} keys in the keychain; pass --index N (see `llm-rotator keys list`) or --all",
                    existing.len()
                ),
            };
            self.keychain
                .remove(name, i)
                .map_err(|e| self.keychain_error(e, Some(provider)))?;
            println!(
                "deleted {name} key #{} ({}) from the keychain",
                i + 1,
                existing[i].fingerprint()
            );
        }
        self.notify();
        Ok(ExitCode::SUCCESS)
    }

    fn list(&self) -> Result<ExitCode> {
        let store = SystemKeys::new(self.keychain.clone());
        let mut rows: Vec<[String; 3]> = vec![["PROVIDER".into(), "SOURCE".into(), "KEY".into()]];
        for p in &self.config.providers {
            if !p.requires_key {
                rows.push([p.name.clone(), "no key needed".into(), "-".into()]);
                continue;
            }
            let keys = store.keys_for(p);
            if keys.is_empty() {
                rows.push([p.name.clone(), "none".into(), "-".into()]);
            }
            for k in keys {
                rows.push([p.name.clone(), source(&k), k.key.fingerprint()]);
            }
        }
        print!("{}", crate::cli::text_table(&rows));
        if let Some(problem) = store.keychain_problem() {
            println!("keychain: {problem}; only environment variables are shown");
        } else {
            println!("keychain: service {}", self.keychain.service());
        }
        Ok(ExitCode::SUCCESS)
    }

    fn import(&self, path: &Path, delete: bool) -> Result<ExitCode> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        );
        let parsed = parse_env(&text);
        let mut took: Vec<String> = Vec::new();
        let mut already: Vec<String> = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        let mut stored: HashMap<String, Vec<ApiKey>> = HashMap::new();
        for line in parsed.malformed {
            skipped.push(format!("line {line}: not a NAME=value line"));
        }
        for a in parsed.assignments {
            let Some(provider) = self
                .config
                .providers
                .iter()
                .find(|p| p.api_key_env.contains(&a.name))
            else {
                skipped.push(format!(
                    "{} (line {}): no configured provider reads it",
                    a.name, a.line
                ));
                continue;
            };
            if !provider.requires_key {
                skipped.push(format!(
                    "{} (line {}): {} needs no key",
                    a.name, a.line, provider.name
                ));
                continue;
            }
            let Some(key) = ApiKey::new(&a.value) else {
                skipped.push(format!("{} (line {}): empty", a.name, a.line));
                continue;
            };
            if let Err(why) = check_key_text(&key) {
                skipped.push(format!("{} (line {}): {why}", a.name, a.line));
                continue;
            }
            let name = provider.name.clone();
            if !stored.contains_key(&name) {
                let keys = self.keychain_keys(provider)?;
                stored.insert(name.clone(), keys);
            }
            let keys = stored.entry(name.clone()).or_default();
            if let Some(pos) = keys.iter().position(|k| *k == key) {
                already.push(format!(
                    "{} -> {name} key #{} ({}): already in the keychain",
                    a.name,
                    pos + 1,
                    key.fingerprint()
                ));
                continue;
            }
            self.keychain
                .set(&name, keys.len(), &key)
                .map_err(|e| self.keychain_error(e, Some(provider)))?;
            took.push(format!(
                "{} -> {name} key #{} ({})",
                a.name,
                keys.len() + 1,
                key.fingerprint()
            ));
            keys.push(key);
        }
        drop(text);
        if took.is_empty() && already.is_empty() {
            let mut msg = format!(
                "found no key for a configured provider in {} (it reads NAME=value lines where NAME is a provider's api_key_env variable)",
                path.display()
            );
            for s in &skipped {
                msg.push_str(&format!("\n  skipped {s}"));
            }
            bail!(msg);
        }
        println!(
            "imported into the keychain (service {}) from {}:",
            self.keychain.service(),
            path.display()
        );
        if took.is_empty() {
            println!("  nothing new");
        }
        for t in &took {
            println!("  {t}");
        }
        for a in &already {
            println!("  {a}");
        }
        for s in &skipped {
            println!("  skipped {s}");
        }
        if skipped.is_empty() {
            if delete {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot delete {}", path.display()))?;
                println!("deleted {}", path.display());
            } else {
                println!(
                    "{} can now be deleted: its keys are in the keychain (or run again with --delete)",
                    path.display()
                );
            }
        } else if delete {
            println!(
                "kept {}: it holds lines that were not imported (see above); remove the imported lines yourself",
                path.display()
            );
        } else {
            println!(
                "the imported lines can now be removed from {} (it holds other lines, so keep the file)",
                path.display()
            );
        }
        if !took.is_empty() {
            self.notify();
        }
        Ok(ExitCode::SUCCESS)
    }

    fn test(&self, only: Option<&str>) -> Result<ExitCode> {
        let providers: Vec<&ProviderConfig> = match only {
            Some(name) => vec![self.keyed_provider(name)?],
            None => self
                .config
                .providers
                .iter()
                .map(|p| p.as_ref())
                .filter(|p| p.requires_key)
                .collect(),
        };
        let store = SystemKeys::new(self.keychain.clone());
        let mut jobs: Vec<(&ProviderConfig, ProviderKey)> = Vec::new();
        let mut rows: Vec<[String; 3]> = Vec::new();
        for p in &providers {
            let keys = store.keys_for(p);
            if keys.is_empty() {
                rows.push([p.name.clone(), "none".into(), "no key".into()]);
            }
            jobs.extend(keys.into_iter().map(|k| (*p, k)));
        }
        if only.is_some() && jobs.is_empty() {
            bail!(
                "{} has no key to test{}",
                providers[0].name,
                env_hint(providers[0])
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let client = crate::upstream::build_client(&self.config.routing)
            .context("cannot build the HTTP client")?;
        // A provider's message is cleaned of every key this command holds, not only the
        // one sent: a message may quote another (a shared account, a proxy in between).
        let all_keys: Vec<ApiKey> = jobs.iter().map(|(_, k)| k.key.clone()).collect();
        let mut all_good = true;
        for (p, k) in jobs {
            let verdict = runtime.block_on(test_key(&client, p, &k.key, &all_keys));
            all_good &= verdict.key_works();
            rows.push([
                p.name.clone(),
                format!("{} {}", source(&k), k.key.fingerprint()),
                verdict.to_string(),
            ]);
        }
        print!("{}", crate::cli::text_table(&rows));
        if let Some(problem) = store.keychain_problem() {
            println!("keychain: {problem}; only keys from environment variables were tested");
        }
        Ok(if all_good {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Tells a running instance to re-read its keys; silent when none runs.
    fn notify(&self) {
        match crate::client::admin_call(&self.config, reqwest::Method::POST, "/keys/reload") {
            Ok(None) => {}
            Ok(Some((200, _))) => println!("the running llm-rotator now uses the new keys"),
            Ok(Some((code, _))) => eprintln!(
                "note: the running llm-rotator answered HTTP {code} to the key reload; restart it to use the new keys"
            ),
            Err(e) => eprintln!(
                "note: could not tell the running llm-rotator ({e:#}); restart it to use the new keys"
            ),
        }
    }
}

fn source(k: &ProviderKey) -> String {
    match &k.origin {
        KeyOrigin::Keychain(i) => format!("keychain #{}", i + 1),
        KeyOrigin::Env(var) => format!("env {var}"),
    }
}

fn env_hint(p: &ProviderConfig) -> String {
    let set: Vec<&str> = p
        .api_key_env
        .iter()
        .filter(|v| std::env::var_os(v).is_some())
        .map(String::as_str)
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!(" (its key comes from env {})", set.join(", "))
    }
}

/// Reads one key from a hidden prompt on a terminal, or from stdin when piped.
fn read_key(provider: &str) -> Result<ApiKey> {
    read_secret(&format!("{provider} API key"))
}

/// Reads one secret (`what`: "groq API key") from a hidden prompt on a terminal, or
/// from stdin when piped.
fn read_secret(what: &str) -> Result<ApiKey> {
    let provider = what.split(' ').next().unwrap_or(what);
    let stdin = std::io::stdin();
    let raw = if stdin.is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password(format!("{what} (input hidden): "))
                .context("cannot read the key from the terminal")?,
        )
    } else {
        let mut buf = Zeroizing::new(String::new());
        stdin
            .lock()
            .read_to_string(&mut buf)
            .context("cannot read the key from stdin")?;
        buf
    };
    let Some(key) = ApiKey::new(&raw) else {
        bail!("no key given: type or paste the key (e.g. `pbpaste | llm-rotator keys set {provider}`)");
    };
    check_key_text(&key).map_err(|why| anyhow::anyhow!("not stored: {why}"))?;
    Ok(key)
}

/// A key must be one printable ASCII word: it goes into an HTTP header.
pub fn check_key_text(key: &ApiKey) -> Result<(), String> {
    if key.expose().chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(
            "the key contains spaces, line breaks or non-ASCII characters; give only the key"
                .into(),
        )
    }
}

/// What `keys test` concluded about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    /// The provider accepted the key.
    Ok,
    /// The provider rejected the key (401/403), with its redacted message.
    Rejected(String),
    /// The key works but is rate limited now.
    RateLimited(String),
    /// No answer, or a server error.
    Unreachable(String),
    /// Some other answer (e.g. 404: the provider has no models list).
    Unexpected(String),
}

impl KeyVerdict {
    /// Whether the key itself is fine (accepted, or only rate limited).
    pub fn key_works(&self) -> bool {
        matches!(self, KeyVerdict::Ok | KeyVerdict::RateLimited(_))
    }
}

impl std::fmt::Display for KeyVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyVerdict::Ok => write!(f, "ok"),
            KeyVerdict::Rejected(d) => write!(f, "rejected ({d})"),
            KeyVerdict::RateLimited(d) => write!(f, "rate limited ({d})"),
            KeyVerdict::Unreachable(d) => write!(f, "unreachable ({d})"),
            KeyVerdict::Unexpected(d) => write!(f, "unexpected answer ({d})"),
        }
    }
}

/// One authenticated GET of the provider's models list.
async fn test_key(
    client: &reqwest::Client,
    p: &ProviderConfig,
    key: &ApiKey,
    redact_keys: &[ApiKey],
) -> KeyVerdict {
    let Some(auth) = crate::upstream::bearer(key) else {
        return KeyVerdict::Rejected("the key cannot be sent in a header".into());
    };
    let sent = client
        .get(p.models_url())
        .header(reqwest::header::AUTHORIZATION, auth)
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let why = if e.is_timeout() {
                "no answer within 15 s".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                "request failed".to_string()
            };
            return KeyVerdict::Unreachable(why);
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    let code = status.as_u16();
    let detail = crate::upstream::error_message(&body)
        .map(|m| {
            let clean = redact_keys
                .iter()
                .fold(crate::upstream::redact(&m, Some(key)), |m, k| {
                    crate::upstream::redact(&m, Some(k))
                });
            format!("HTTP {code}: {clean}")
        })
        .unwrap_or_else(|| format!("HTTP {code}"));
    if status.is_success() {
        return KeyVerdict::Ok;
    }
    // The proxy's own classifier, so `keys test` and a request through the proxy reach
    // the same verdict (Gemini answers a bad key with a 400, for one).
    let now = chrono::Utc::now();
    match crate::upstream::classify(p.quirks.kind, status, &headers, &body, Some(key), now) {
        UpstreamVerdict::Rotate(Outcome::AuthFailed { .. }) => KeyVerdict::Rejected(detail),
        UpstreamVerdict::Rotate(Outcome::RateLimited { .. } | Outcome::QuotaExhausted { .. }) => {
            KeyVerdict::RateLimited(detail)
        }
        UpstreamVerdict::Rotate(Outcome::Transient { .. }) => KeyVerdict::Unreachable(detail),
        _ => KeyVerdict::Unexpected(detail),
    }
}

/// One `NAME=value` line of a `.env` file.
pub struct EnvAssignment {
    /// 1-based line number.
    pub line: usize,
    /// The variable name.
    pub name: String,
    /// The value, unquoted.
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for EnvAssignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvAssignment")
            .field("line", &self.line)
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// A parsed `.env` file.
#[derive(Debug, Default)]
pub struct EnvFile {
    /// The assignments, in file order.
    pub assignments: Vec<EnvAssignment>,
    /// Line numbers that are neither blank, comments nor assignments.
    pub malformed: Vec<usize>,
}

/// Parses `.env` text: `NAME=value`, `export NAME=value`, values in single or double
/// quotes, `#` comments (after unquoted values too), blank lines.
pub fn parse_env(text: &str) -> EnvFile {
    let mut out = EnvFile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((name, value)) = line.split_once('=') else {
            out.malformed.push(i + 1);
            continue;
        };
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            out.malformed.push(i + 1);
            continue;
        }
        let value = value.trim();
        let unquoted = match value.chars().next() {
            Some(q @ ('"' | '\'')) => match value[1..].find(q) {
                Some(end) => &value[1..=end],
                None => {
                    out.malformed.push(i + 1);
                    continue;
                }
            },
            _ => value.split(" #").next().unwrap_or("").trim(),
        };
        out.assignments.push(EnvAssignment {
            line: i + 1,
            name: name.to_string(),
            value: Zeroizing::new(unquoted.to_string()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_quotes_exports_and_comments() {
        let f = parse_env(
            "# keys\nGROQ_API_KEY=gsk_abc\nexport OPENAI_API_KEY=\"sk-x y\"\nX='q' \nY=v # note\n\nnot a line\n9BAD=1\nOPEN=\"unterminated\n",
        );
        let got: Vec<(usize, &str, &str)> = f
            .assignments
            .iter()
            .map(|a| (a.line, a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "GROQ_API_KEY", "gsk_abc"),
                (3, "OPENAI_API_KEY", "sk-x y"),
                (4, "X", "q"),
                (5, "Y", "v"),
            ]
        );
        assert_eq!(f.malformed, vec![7, 8, 9]);
        assert!(!format!("{:?}", f.assignments[0]).contains("gsk_abc"));
    }

    #[test]
    fn keys_must_be_one_printable_word() {
        assert!(check_key_text(&ApiKey::new("gsk_abc-123.XYZ").expect("k")).is_ok());
        assert!(check_key_text(&ApiKey::new("two words").expect("k")).is_err());
        assert!(check_key_text(&ApiKey::new("a\nb").expect("k")).is_err());
        assert!(check_key_text(&ApiKey::new("clé").expect("k")).is_err());
    }
}
