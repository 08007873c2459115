//! API keys: the [`ApiKey`] type that never prints itself, and the key-lookup seam
//! ([`KeyStore`]) the proxy asks for each provider's keys: [`SystemKeys`] (the OS
//! keychain, then environment variables) for the agent, [`EnvKeys`] alone where no keychain
//! is wanted. This module owns where keys come from; it never logs or returns a key's text
//! except to the upstream request builder and the keychain itself.

pub mod keychain;
mod native;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroize;

use crate::config::ProviderConfig;
use keychain::{Keychain, KeychainError};

/// A secret API key. `Debug` and `Display` print only a fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key, trimming surrounding whitespace. Returns `None` for an empty key.
    pub fn new(raw: &str) -> Option<ApiKey> {
        let t = raw.trim();
        (!t.is_empty()).then(|| ApiKey(Arc::from(t)))
    }

    /// The key's text, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short fingerprint safe to show: `…` and at most the last 4 characters (fewer for
    /// short keys, none for keys under 12 characters).
    pub fn fingerprint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        let shown = match chars.len() {
            0..=11 => 0,
            12..=19 => 2,
            _ => 4,
        };
        let tail: String = chars[chars.len() - shown..].iter().collect();
        format!("…{tail}")
    }
}

impl Drop for ApiKey {
    fn drop(&mut self) {
        // The last holder wipes the text, so a dropped key does not linger in freed memory.
        if let Some(text) = Arc::get_mut(&mut self.0) {
            text.zeroize();
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.fingerprint())
    }
}

/// Where a key came from, for `/status` and `keys list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The OS keychain, with the item index (0 = first).
    Keychain(usize),
    /// An environment variable.
    Env(String),
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Keychain(0) => write!(f, "keychain"),
            KeyOrigin::Keychain(i) => write!(f, "keychain #{}", i + 1),
            KeyOrigin::Env(var) => write!(f, "env {var}"),
        }
    }
}

/// One key of a provider, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKey {
    /// The key.
    pub key: ApiKey,
    /// Where it came from.
    pub origin: KeyOrigin,
}

impl ProviderKey {
    /// The label shown in `/status`: origin and fingerprint.
    pub fn label(&self) -> String {
        format!("{} {}", self.origin, self.key.fingerprint())
    }
}

/// The key-lookup seam: returns every key of a provider, in the order to use them.
/// Implementations may block (keychains do): call them off the async runtime.
pub trait KeyStore: Send + Sync {
    /// The keys for `provider`; empty when it has none.
    fn keys_for(&self, provider: &ProviderConfig) -> Vec<ProviderKey>;
    /// A one-line note about the store's health for `/status` (e.g. "no keychain service").
    fn note(&self) -> Option<String> {
        None
    }
}

/// Keys from environment variables (`api_key_env`).
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvKeys;

impl KeyStore for EnvKeys {
    fn keys_for(&self, provider: &ProviderConfig) -> Vec<ProviderKey> {
        let mut out: Vec<ProviderKey> = Vec::new();
        for var in &provider.api_key_env {
            if let Some(key) = std::env::var(var).ok().as_deref().and_then(ApiKey::new) {
                if out.iter().all(|k| k.key != key) {
                    out.push(ProviderKey {
                        key,
                        origin: KeyOrigin::Env(var.clone()),
                    });
                }
            }
        }
        out
    }
}

/// How the keychain did on its last use, so a change is logged once, not on every lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeychainHealth {
    Unknown,
    Working,
    Missing(String),
}

/// The agent's key store: each provider's keys from the OS keychain first, then from its
/// `api_key_env` variables (a key found in both is used once). Without a usable keychain
/// it runs on the environment alone, logs that once and reports it through [`KeyStore::note`].
#[derive(Debug)]
pub struct SystemKeys {
    keychain: Keychain,
    health: Mutex<KeychainHealth>,
}

impl SystemKeys {
    /// How long the agent waits for the keychain per call. Longer on macOS, where a call
    /// may wait for the user to answer a Keychain access prompt.
    pub const AGENT_TIMEOUT: Duration = if cfg!(target_os = "macos") {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(10)
    };

    /// A store over this keychain.
    pub fn new(keychain: Keychain) -> SystemKeys {
        SystemKeys {
            keychain,
            health: Mutex::new(KeychainHealth::Unknown),
        }
    }

    /// The keychain named by the environment ([`keychain::SERVICE_ENV`]), with the agent's timeout.
    pub fn from_env() -> SystemKeys {
        SystemKeys::new(Keychain::from_env(SystemKeys::AGENT_TIMEOUT))
    }

    /// The keychain behind this store.
    pub fn keychain(&self) -> &Keychain {
        &self.keychain
    }

    /// Why the keychain was not usable on the last lookup, if it was not.
    pub fn keychain_problem(&self) -> Option<String> {
        match &*self.health.lock().unwrap_or_else(|p| p.into_inner()) {
            KeychainHealth::Missing(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    fn record(&self, result: Result<(), &KeychainError>) {
        let new = match result {
            Ok(()) => KeychainHealth::Working,
            Err(e) => KeychainHealth::Missing(e.to_string()),
        };
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if *health == new {
            return;
        }
        match (&*health, &new) {
            (_, KeychainHealth::Missing(reason)) => tracing::warn!(
                "keychain not usable, running on keys from environment variables only: {reason}"
            ),
            (KeychainHealth::Missing(_), KeychainHealth::Working) => {
                tracing::info!("keychain usable again");
            }
            _ => {}
        }
        *health = new;
    }
}

impl KeyStore for SystemKeys {
    fn keys_for(&self, provider: &ProviderConfig) -> Vec<ProviderKey> {
        let mut out: Vec<ProviderKey> = Vec::new();
        if provider.requires_key {
            match self.keychain.keys(&provider.name) {
                Ok(keys) => {
                    self.record(Ok(()));
                    out.extend(keys.into_iter().enumerate().map(|(i, key)| ProviderKey {
                        key,
                        origin: KeyOrigin::Keychain(i),
                    }));
                }
                Err(e) => self.record(Err(&e)),
            }
        }
        for k in EnvKeys.keys_for(provider) {
            if out.iter().all(|o| o.key != k.key) {
                out.push(k);
            }
        }
        out
    }

    fn note(&self) -> Option<String> {
        self.keychain_problem()
            .map(|reason| format!("{reason}; using keys from environment variables only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_key_shows_only_the_fingerprint() {
        let key = ApiKey::new("  sk-secret-0123456789abcdWXYZ \n").expect("key");
        let shown = format!("{key:?}");
        assert_eq!(shown, "ApiKey(…WXYZ)");
        assert_eq!(key.expose(), "sk-secret-0123456789abcdWXYZ");
    }

    #[test]
    fn short_keys_show_less() {
        assert_eq!(ApiKey::new("abc").expect("k").fingerprint(), "…");
        assert_eq!(
            ApiKey::new("abcdefghijklmn").expect("k").fingerprint(),
            "…mn"
        );
        assert!(ApiKey::new("   ").is_none());
    }
}
