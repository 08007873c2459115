//! Provider keys in the OS keychain: one item per key, service `com.llmrotator.agent`
//! (or `LLM_ROTATOR_KEYCHAIN_SERVICE`, which tests use so they never touch a user's real
//! items), account = provider name for its first key and `name#2`, `name#3`... for more,
//! label "LLM Rotator: name". Keys of a provider are kept contiguous (removing one moves
//! the later ones down), so reading stops at the first missing account and never reads
//! more items than exist (on macOS every read may ask the user).
//!
//! Every keychain call runs on a helper thread and is bounded by a timeout: a keychain
//! that hangs (a D-Bus service that never answers, an unanswered prompt) costs one timeout,
//! after which calls fail at once until the hung call returns. Nothing here logs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroizing;

use super::native::{self, NativeError};
use super::ApiKey;

/// The keychain service every item is stored under.
pub const DEFAULT_SERVICE: &str = crate::paths::APP_ID;

/// Environment variable that overrides the service name (tests, side-by-side installs).
pub const SERVICE_ENV: &str = "LLM_ROTATOR_KEYCHAIN_SERVICE";

/// Most keys read per provider (a guard against a runaway loop, not a product limit).
pub const MAX_KEYS: usize = 32;

/// Why a keychain operation failed. Messages never contain a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeychainError {
    /// No keychain service is reachable (headless Linux, no D-Bus session, locked keyring).
    #[error("no keychain service is available ({0})")]
    Unavailable(String),
    /// The keychain did not answer in time (or an earlier call still hangs).
    #[error("the keychain did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The keychain answered with an error.
    #[error("the keychain refused: {0}")]
    Failed(String),
}

impl From<NativeError> for KeychainError {
    fn from(e: NativeError) -> KeychainError {
        match e {
            NativeError::Unavailable(m) => KeychainError::Unavailable(m),
            NativeError::Failed(m) => KeychainError::Failed(m),
        }
    }
}

/// The keychain as a key store: where the items live and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Keychain {
    service: String,
    timeout: Duration,
    /// Calls that timed out; each flag turns true when its call finally returns.
    hung: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Keychain {
    /// A keychain using `service` and waiting at most `timeout` per call.
    pub fn new(service: impl Into<String>, timeout: Duration) -> Keychain {
        Keychain {
            service: service.into(),
            timeout,
            hung: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The service from `LLM_ROTATOR_KEYCHAIN_SERVICE`, else [`DEFAULT_SERVICE`].
    pub fn from_env(timeout: Duration) -> Keychain {
        let service = std::env::var(SERVICE_ENV)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        Keychain::new(service, timeout)
    }

    /// The service name items are stored under.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The account of a provider's key: `name` for the first (index 0), `name#2`... after.
    pub fn account(provider: &str, index: usize) -> String {
        if index == 0 {
            provider.to_string()
        } else {
            format!("{provider}#{}", index + 1)
        }
    }

    /// The item's label, as Keychain Access or Seahorse shows it.
    pub fn label(provider: &str, index: usize) -> String {
        if index == 0 {
            format!("LLM Rotator: {provider}")
        } else {
            format!("LLM Rotator: {provider} #{}", index + 1)
        }
    }

    /// Runs `f` on a helper thread, waiting at most the timeout.
    fn call<T, F>(&self, f: F) -> Result<T, KeychainError>
    where
        T: Send + 'static,
        F: FnOnce(&str) -> Result<T, NativeError> + Send + 'static,
    {
        {
            let mut hung = self.hung.lock().unwrap_or_else(|p| p.into_inner());
            hung.retain(|done| !done.load(Ordering::Acquire));
            if !hung.is_empty() {
                return Err(KeychainError::Timeout(self.timeout));
            }
        }
        let done = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let service = self.service.clone();
        let flag = Arc::clone(&done);
        std::thread::Builder::new()
            .name("keychain".into())
            .spawn(move || {
                let result = f(&service);
                flag.store(true, Ordering::Release);
                let _ = tx.send(result);
            })
            .map_err(|e| KeychainError::Failed(format!("cannot start a keychain thread: {e}")))?;
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result.map_err(KeychainError::from),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.hung
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(done);
                Err(KeychainError::Timeout(self.timeout))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(KeychainError::Failed(
                "the keychain call stopped unexpectedly".to_string(),
            )),
        }
    }

    /// Every key of `provider`, first to last (empty items are skipped).
    pub fn keys(&self, provider: &str) -> Result<Vec<ApiKey>, KeychainError> {
        let provider = provider.to_string();
        self.call(move |service| {
            Ok(read_all(service, &provider)?
                .iter()
                .filter_map(|s| ApiKey::new(s))
                .collect())
        })
    }

    /// Stores `key` as `provider`'s key number `index` (0-based), creating or replacing it.
    /// `index` may be at most the current number of keys (one past the last adds a key).
    pub fn set(&self, provider: &str, index: usize, key: &ApiKey) -> Result<(), KeychainError> {
        let provider = provider.to_string();
        let secret = Zeroizing::new(key.expose().to_string());
        self.call(move |service| {
            native::set(
                service,
                &Keychain::account(&provider, index),
                &Keychain::label(&provider, index),
                &secret,
            )
        })
    }

    /// Removes `provider`'s key number `index` and moves the later keys down one place.
    /// Returns false when there was no such key.
    pub fn remove(&self, provider: &str, index: usize) -> Result<bool, KeychainError> {
        let provider = provider.to_string();
        self.call(move |service| {
            let keys = read_all(service, &provider)?;
            if index >= keys.len() {
                return Ok(false);
            }
            for i in index..keys.len() - 1 {
                native::set(
                    service,
                    &Keychain::account(&provider, i),
                    &Keychain::label(&provider, i),
                    &keys[i + 1],
                )?;
            }
            native::delete(service, &Keychain::account(&provider, keys.len() - 1))?;
            Ok(true)
        })
    }

    /// Removes every key of `provider`; returns how many there were.
    pub fn remove_all(&self, provider: &str) -> Result<usize, KeychainError> {
        let provider = provider.to_string();
        self.call(move |service| {
            let mut removed = 0;
            while removed < MAX_KEYS
                && native::delete(service, &Keychain::account(&provider, removed))?
            {
                removed += 1;
            }
            Ok(removed)
        })
    }
}

/// Reads `provider`'s items in order until the first missing account.
fn read_all(service: &str, provider: &str) -> Result<Vec<Zeroizing<String>>, NativeError> {
    let mut out = Vec::new();
    for i in 0..MAX_KEYS {
        match native::get(service, &Keychain::account(provider, i))? {
            Some(secret) => out.push(secret),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_and_labels_number_keys_from_the_second_on() {
        assert_eq!(Keychain::account("groq", 0), "groq");
        assert_eq!(Keychain::account("groq", 1), "groq#2");
        assert_eq!(Keychain::label("groq", 0), "LLM Rotator: groq");
        assert_eq!(Keychain::label("groq", 2), "LLM Rotator: groq #3");
    }

    #[test]
    fn a_hanging_call_times_out_once_then_fails_fast_until_it_returns() {
        let kc = Keychain::new("test", Duration::from_millis(50));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let r = kc.call(move |_| {
            let _ = release_rx.recv();
            Ok(1)
        });
        assert_eq!(r, Err(KeychainError::Timeout(Duration::from_millis(50))));
        // While the first call hangs, the next fails without starting another.
        let started = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&started);
        let r = kc.call(move |_| {
            s2.store(true, Ordering::SeqCst);
            Ok(2)
        });
        assert!(matches!(r, Err(KeychainError::Timeout(_))));
        assert!(!started.load(Ordering::SeqCst));
        // Once it returns, calls go through again.
        release_tx.send(()).expect("release");
        let mut ok = None;
        for _ in 0..200 {
            if let Ok(v) = kc.call(|_| Ok(3)) {
                ok = Some(v);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ok, Some(3));
    }

    #[test]
    fn errors_name_the_cause_without_secrets() {
        let e = KeychainError::from(NativeError::Unavailable("no session bus".into()));
        assert_eq!(
            e.to_string(),
            "no keychain service is available (no session bus)"
        );
    }
}
