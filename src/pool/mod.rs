//! THE provider state: toggles, keys, cooldowns and counters. Every change goes through a
//! few methods here that take `now` explicitly (so tests control time) and bump a version
//! that viewers (HTTP status, tray, persistence) watch; viewers read a [`Snapshot`].
//! The lock is a `std::sync::Mutex` held for microseconds and never across `.await`.
//! This module does no I/O.

mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{ProviderConfig, RoutingConfig};
use crate::secrets::{ApiKey, ProviderKey};
use crate::upstream::scrub::KeyMask;

pub use snapshot::{ConfigSnapshot, KeySnapshot, ProviderSnapshot, ProviderStateKind, Snapshot};

/// Which providers a request may go to, decided from its `model` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Any provider, each with its own default model (`model` absent, "auto" or unknown).
    Any,
    /// Only providers listing this model.
    Model(String),
    /// Only this provider, with this model (`"<provider>/<model>"`).
    Pinned {
        /// Provider name.
        provider: String,
        /// Model sent upstream.
        model: String,
    },
}

/// One attempt chosen by [`Pool::pick`]: where to send, with which key and model.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The provider's config as it was when picked (reloads do not change it mid-request).
    pub provider: Arc<ProviderConfig>,
    /// The key to send, or `None` for keyless providers.
    pub key: Option<ApiKey>,
    /// Stable id of the key slot, to report the outcome against.
    pub key_id: u64,
    /// Label of the key (origin and fingerprint) for logs and errors.
    pub key_label: String,
    /// The model id to send upstream.
    pub model: String,
    /// Masks any echo of `key` in what the provider says (built once per key slot).
    pub mask: Arc<KeyMask>,
}

/// What happened to one attempt, as the rotation loop reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider answered successfully (tokens may follow via [`Pool::add_tokens`]).
    Success {
        /// Tokens used, when known now.
        tokens: Option<u64>,
    },
    /// 429: cool down for `retry_after`, or the default (growing on repeats) when `None`.
    RateLimited {
        /// The provider's hint.
        retry_after: Option<Duration>,
        /// Short description for the status.
        reason: String,
    },
    /// The key was rejected (401/403).
    AuthFailed {
        /// Short description for the status.
        reason: String,
    },
    /// Billing problem (402): long cooldown.
    PaymentRequired {
        /// Short description for the status.
        reason: String,
    },
    /// 5xx, 408, connection error or timeout: short cooldown.
    Transient {
        /// Short description for the status.
        reason: String,
        /// Whether the provider received the request (a counted request).
        reached: bool,
    },
    /// A quota that only refills at a known time (a daily quota, a spent request
    /// allowance): the key is benched until `until`, shown as "daily quota used, back at
    /// 09:00". Persisted like any cooldown, so a restart does not forget it.
    QuotaExhausted {
        /// When the quota is back.
        until: DateTime<Utc>,
        /// Short description of the provider's answer (for `last_error`).
        reason: String,
    },
    /// A client error relayed unchanged (400, 404, 413, 422...): no cooldown.
    Relayed {
        /// HTTP status.
        status: u16,
    },
}

/// Why [`Pool::pick`] found nothing: the shape of the error the client gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Unavailable {
    /// Providers exist for the route but all are cooling down; the first is ready after
    /// `retry_after`.
    AllCooling {
        /// Time until the first provider is ready again.
        retry_after: Duration,
        /// `name: state` per provider on the route.
        states: Vec<String>,
    },
    /// No provider on the route can ever serve as configured (disabled, no key, key
    /// rejected, or none listed).
    NoneUsable {
        /// `name: state` per provider on the route.
        states: Vec<String>,
    },
}

/// Persisted, per key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Cooldown deadline.
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Why it cools down.
    pub cooldown_reason: Option<String>,
    /// Rejected by the provider.
    pub auth_failed: bool,
    /// Requests today on this key.
    pub request_count: u64,
}

/// Persisted, per provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProviderRecord {
    /// Runtime toggle, when the user flipped it.
    pub enabled_override: Option<bool>,
    /// The day `request_count` counts.
    pub day: Option<NaiveDate>,
    /// Requests on `day`.
    pub request_count: u64,
    /// Requests ever.
    pub total_requests: u64,
    /// Tokens ever.
    pub total_tokens: u64,
    /// Last failure text.
    pub last_error: Option<String>,
    /// Per key, by fingerprint-independent key hash (see [`key_hash`]).
    pub keys: HashMap<String, KeyRecord>,
}

/// A stable, non-reversible id for a key, for matching persisted records to keys without
/// storing any part of the key (FNV-1a over the key bytes, salted with the provider name).
pub fn key_hash(provider: &str, key: Option<&ApiKey>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = provider
        .as_bytes()
        .iter()
        .chain(b"\0")
        .chain(key.map_or(&b""[..], |k| k.expose().as_bytes()));
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[derive(Debug)]
struct KeyState {
    id: u64,
    key: Option<ApiKey>,
    mask: Arc<KeyMask>,
    label: String,
    cooldown_until: Option<DateTime<Utc>>,
    cooldown_reason: Option<String>,
    consecutive_429: u32,
    auth_failed: bool,
    request_count: u64,
    /// Tokens left in the provider's current token window and when it refills, from the
    /// last answer's rate-limit headers (not persisted: it is minutes long).
    token_budget: Option<(u64, DateTime<Utc>)>,
}

impl KeyState {
    fn cooling(&self, now: DateTime<Utc>) -> bool {
        self.cooldown_until.is_some_and(|t| t > now)
    }
    fn usable(&self, now: DateTime<Utc>) -> bool {
        !self.auth_failed && !self.cooling(now)
    }
    /// Whether the last known token window can take a request of `need` tokens.
    fn fits(&self, need: Option<u64>, now: DateTime<Utc>) -> bool {
        match (need, self.token_budget) {
            (Some(need), Some((left, reset))) => left >= need || reset <= now,
            _ => true,
        }
    }
}

#[derive(Debug)]
struct ProviderState {
    config: Arc<ProviderConfig>,
    enabled_override: Option<bool>,
    keys: Vec<KeyState>,
    day: NaiveDate,
    request_count: u64,
    total_requests: u64,
    total_tokens: u64,
    last_error: Option<String>,
    next_key: usize,
}

impl ProviderState {
    fn enabled(&self) -> bool {
        self.enabled_override.unwrap_or(self.config.enabled)
    }

    fn kind(&self, now: DateTime<Utc>) -> ProviderStateKind {
        if !self.enabled() {
            ProviderStateKind::Disabled
        } else if self.keys.is_empty() {
            ProviderStateKind::NoKey
        } else if self.keys.iter().all(|k| k.auth_failed) {
            ProviderStateKind::AuthFailed
        } else if self.keys.iter().any(|k| k.usable(now)) {
            ProviderStateKind::Ready
        } else {
            ProviderStateKind::CoolingDown
        }
    }

    /// When the first non-rejected key is ready again, if all are cooling.
    fn ready_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.keys.iter().any(|k| k.usable(now)) {
            return None;
        }
        self.keys
            .iter()
            .filter(|k| !k.auth_failed)
            .filter_map(|k| k.cooldown_until)
            .min()
    }

    fn roll_day(&mut self, today: NaiveDate) {
        if self.day != today {
            self.day = today;
            self.request_count = 0;
            for k in &mut self.keys {
                k.request_count = 0;
            }
        }
    }
}

struct Inner {
    providers: Vec<ProviderState>,
    routing: RoutingConfig,
    round_robin: HashMap<u32, usize>,
    next_key_id: u64,
    key_note: Option<String>,
    config_error: Option<String>,
    config_path: Option<String>,
}

/// The shared provider state. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Mutex<Inner>>,
    version: Arc<watch::Sender<u64>>,
}

fn local_day(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&Local).date_naive()
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(3650))
}

impl Pool {
    /// A pool for these providers and keys (keys by provider name).
    pub fn new(
        providers: &[Arc<ProviderConfig>],
        keys: &HashMap<String, Vec<ProviderKey>>,
        routing: RoutingConfig,
        now: DateTime<Utc>,
    ) -> Pool {
        let mut inner = Inner {
            providers: Vec::new(),
            routing,
            round_robin: HashMap::new(),
            next_key_id: 1,
            key_note: None,
            config_error: None,
            config_path: None,
        };
        inner.apply(providers, keys, now);
        let (tx, _rx) = watch::channel(0);
        Pool {
            inner: Arc::new(Mutex::new(inner)),
            version: Arc::new(tx),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than losing the whole agent, so a poisoned lock is recovered.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that changes whenever the state does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Chooses the next attempt for `route`, skipping key slots in `tried`.
    pub fn pick(&self, route: &Route, tried: &[u64], now: DateTime<Utc>) -> Option<Attempt> {
        self.pick_for(route, tried, None, now)
    }

    /// Like [`Pool::pick`], but prefers keys whose last known token window still fits a
    /// request that may use `need_tokens` (its `max_tokens`); when none does, any usable
    /// key is picked (the provider then answers for itself).
    pub fn pick_for(
        &self,
        route: &Route,
        tried: &[u64],
        need_tokens: Option<u64>,
        now: DateTime<Utc>,
    ) -> Option<Attempt> {
        if need_tokens.is_some() {
            if let Some(a) = self.pick_inner(route, tried, need_tokens, now) {
                return Some(a);
            }
        }
        self.pick_inner(route, tried, None, now)
    }

    fn pick_inner(
        &self,
        route: &Route,
        tried: &[u64],
        need: Option<u64>,
        now: DateTime<Utc>,
    ) -> Option<Attempt> {
        let mut inner = self.lock();
        let today = local_day(now);
        let Inner {
            providers,
            round_robin,
            ..
        } = &mut *inner;
        // Candidate providers on the route, by priority (config order breaks ties).
        let mut cands: Vec<(u32, usize)> = providers
            .iter()
            .enumerate()
            .filter(|(_, p)| p.enabled() && route_matches(route, &p.config))
            .filter(|(_, p)| {
                p.keys
                    .iter()
                    .any(|k| k.usable(now) && k.fits(need, now) && !tried.contains(&k.id))
            })
            .map(|(i, p)| (p.config.priority, i))
            .collect();
        cands.sort();
        let &(prio, _) = cands.first()?;
        let group: Vec<usize> = cands
            .iter()
            .take_while(|(p, _)| *p == prio)
            .map(|&(_, i)| i)
            .collect();
        let rr = round_robin.entry(prio).or_insert(0);
        let idx = group[*rr % group.len()];
        *rr = rr.wrapping_add(1);
        let p = &mut providers[idx];
        p.roll_day(today);
        let usable: Vec<usize> = p
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.usable(now) && k.fits(need, now) && !tried.contains(&k.id))
            .map(|(i, _)| i)
            .collect();
        let ki = usable[p.next_key % usable.len()];
        p.next_key = p.next_key.wrapping_add(1);
        let k = &p.keys[ki];
        let model = match route {
            Route::Any => p.config.model.clone(),
            Route::Model(m) => m.clone(),
            Route::Pinned { model, .. } => model.clone(),
        };
        Some(Attempt {
            provider: Arc::clone(&p.config),
            key: k.key.clone(),
            key_id: k.id,
            key_label: k.label.clone(),
            model,
            mask: Arc::clone(&k.mask),
        })
    }

    /// Records the outcome of an attempt. Unknown providers/keys (removed by a reload
    /// meanwhile) are ignored.
    pub fn report(&self, attempt: &Attempt, outcome: &Outcome, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            let routing = inner.routing.clone();
            let Some(p) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == attempt.provider.name)
            else {
                return;
            };
            p.roll_day(local_day(now));
            let reached = !matches!(outcome, Outcome::Transient { reached: false, .. });
            if reached {
                p.request_count += 1;
                p.total_requests += 1;
            }
            let Some(k) = p.keys.iter_mut().find(|k| k.id == attempt.key_id) else {
                return;
            };
            if reached {
                k.request_count += 1;
            }
            // Provider text is stored (and shown, and persisted) only masked.
            let stored = |reason: &str| attempt.mask.text(reason);
            match outcome {
                Outcome::Success { tokens } => {
                    p.total_tokens += tokens.unwrap_or(0);
                    k.consecutive_429 = 0;
                    p.last_error = None;
                }
                Outcome::RateLimited {
                    retry_after,
                    reason,
                } => {
                    k.consecutive_429 = k.consecutive_429.saturating_add(1);
                    let wait = match retry_after {
                        Some(d) => *d,
                        None => {
                            let factor = 1u32 << (k.consecutive_429 - 1).min(16);
                            routing
                                .default_cooldown
                                .saturating_mul(factor)
                                .min(routing.max_cooldown)
                        }
                    };
                    k.cooldown_until = Some(now + to_chrono(wait));
                    k.cooldown_reason = Some(stored(reason));
                    p.last_error = Some(stored(reason));
                }
                Outcome::AuthFailed { reason } => {
                    k.auth_failed = true;
                    p.last_error = Some(stored(reason));
                }
                Outcome::PaymentRequired { reason } => {
                    k.cooldown_until = Some(now + to_chrono(routing.payment_cooldown));
                    k.cooldown_reason = Some(stored(reason));
                    p.last_error = Some(stored(reason));
                }
                Outcome::Transient { reason, .. } => {
                    k.cooldown_until = Some(now + to_chrono(routing.transient_cooldown));
                    k.cooldown_reason = Some(stored(reason));
                    p.last_error = Some(stored(reason));
                }
                Outcome::QuotaExhausted { until, reason } => {
                    k.cooldown_until = Some(*until);
                    k.cooldown_reason = Some(quota_reason(*until, now));
                    p.last_error = Some(stored(reason));
                }
                Outcome::Relayed { .. } => {}
            }
        }
        self.changed();
    }

    /// Benches a key that just answered successfully but said its allowance is used up
    /// (proactive rotation): no request is counted, the key rests until `until`.
    pub fn bench(&self, attempt: &Attempt, until: DateTime<Utc>, daily: bool, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            let Some(k) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == attempt.provider.name)
                .and_then(|p| p.keys.iter_mut().find(|k| k.id == attempt.key_id))
            else {
                return;
            };
            if until <= now || k.cooldown_until.is_some_and(|t| t >= until) {
                return;
            }
            k.cooldown_until = Some(until);
            k.cooldown_reason = Some(if daily {
                quota_reason(until, now)
            } else {
                format!(
                    "request allowance used up, back in {}s",
                    secs_until(until, now)
                )
            });
        }
        self.changed();
    }

    /// Records the tokens left in a key's current token window (from rate-limit headers).
    pub fn set_token_budget(&self, attempt: &Attempt, left: u64, reset_at: DateTime<Utc>) {
        let mut inner = self.lock();
        if let Some(k) = inner
            .providers
            .iter_mut()
            .find(|p| p.config.name == attempt.provider.name)
            .and_then(|p| p.keys.iter_mut().find(|k| k.id == attempt.key_id))
        {
            k.token_budget = Some((left, reset_at));
        }
    }

    /// Adds tokens counted after the fact (at the end of a stream).
    pub fn add_tokens(&self, provider: &str, tokens: u64) {
        {
            let mut inner = self.lock();
            if let Some(p) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == provider)
            {
                p.total_tokens += tokens;
            }
        }
        self.changed();
    }

    /// Notes a failure that does not change eligibility (e.g. a stream that died midway).
    /// The text is stored masked, like every reason the pool keeps.
    pub fn note_error(&self, attempt: &Attempt, error: &str) {
        {
            let mut inner = self.lock();
            if let Some(p) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == attempt.provider.name)
            {
                p.last_error = Some(attempt.mask.text(error));
            }
        }
        self.changed();
    }

    /// Why nothing can serve `route` right now.
    pub fn unavailable(&self, route: &Route, now: DateTime<Utc>) -> Unavailable {
        let inner = self.lock();
        let on_route: Vec<&ProviderState> = inner
            .providers
            .iter()
            .filter(|p| route_matches(route, &p.config))
            .collect();
        let states = on_route
            .iter()
            .map(|p| {
                let kind = p.kind(now);
                let quota = |t| {
                    p.keys
                        .iter()
                        .find(|k| k.cooldown_until == Some(t))
                        .and_then(|k| k.cooldown_reason.as_deref())
                        .filter(|r| r.starts_with("daily quota used"))
                };
                match p.ready_at(now) {
                    Some(t) if kind == ProviderStateKind::CoolingDown => match quota(t) {
                        Some(reason) => format!("{}: {reason}", p.config.name),
                        None => format!(
                            "{}: cooling down for {}s",
                            p.config.name,
                            secs_until(t, now)
                        ),
                    },
                    _ => format!("{}: {}", p.config.name, kind.as_str()),
                }
            })
            .collect();
        let first_ready = on_route
            .iter()
            .filter(|p| p.enabled())
            .filter_map(|p| p.ready_at(now))
            .min();
        match first_ready {
            Some(t) => Unavailable::AllCooling {
                retry_after: (t - now).to_std().unwrap_or(Duration::ZERO),
                states,
            },
            None => Unavailable::NoneUsable { states },
        }
    }

    /// Turns a provider on or off at runtime. Returns false for an unknown name.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let found = {
            let mut inner = self.lock();
            match inner.providers.iter_mut().find(|p| p.config.name == name) {
                Some(p) => {
                    p.enabled_override = (enabled != p.config.enabled).then_some(enabled);
                    if enabled {
                        // Re-enabling is the user's way to say "try this key again".
                        for k in &mut p.keys {
                            k.auth_failed = false;
                        }
                    }
                    true
                }
                None => false,
            }
        };
        if found {
            self.changed();
        }
        found
    }

    /// Whether a provider with this name exists.
    pub fn has_provider(&self, name: &str) -> bool {
        self.lock().providers.iter().any(|p| p.config.name == name)
    }

    /// Swaps in a new provider list and keys, carrying state over by provider name and key.
    /// Infallible: all fallible work (parsing, key lookup) happens before.
    pub fn apply(
        &self,
        providers: &[Arc<ProviderConfig>],
        keys: &HashMap<String, Vec<ProviderKey>>,
        routing: RoutingConfig,
        now: DateTime<Utc>,
    ) {
        {
            let mut inner = self.lock();
            inner.routing = routing;
            inner.apply(providers, keys, now);
        }
        self.changed();
    }

    /// Replaces only the keys (after `keys set`/`delete`), keeping everything else.
    pub fn apply_keys(&self, keys: &HashMap<String, Vec<ProviderKey>>, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            let configs: Vec<_> = inner
                .providers
                .iter()
                .map(|p| Arc::clone(&p.config))
                .collect();
            inner.apply(&configs, keys, now);
        }
        self.changed();
    }

    /// The provider configs currently in use.
    pub fn configs(&self) -> Vec<Arc<ProviderConfig>> {
        self.lock()
            .providers
            .iter()
            .map(|p| Arc::clone(&p.config))
            .collect()
    }

    /// Sets the key-store note shown in `/status`.
    pub fn set_key_note(&self, note: Option<String>) {
        self.lock().key_note = note;
        self.changed();
    }

    /// Records the config file's path and its last load error (None = loaded fine).
    pub fn set_config_status(&self, path: Option<String>, error: Option<String>) {
        {
            let mut inner = self.lock();
            inner.config_path = path;
            inner.config_error = error;
        }
        self.changed();
    }

    /// A read-only picture of everything, for `/status`, the tray and the CLI.
    pub fn snapshot(&self, now: DateTime<Utc>) -> Snapshot {
        let mut inner = self.lock();
        let today = local_day(now);
        for p in &mut inner.providers {
            p.roll_day(today);
        }
        snapshot::build(&inner, now)
    }

    /// What to persist, as of `now`: "requests today" rolls over first, so the records
    /// always tell the same story as a snapshot taken at the same instant.
    pub fn records(&self, now: DateTime<Utc>) -> HashMap<String, ProviderRecord> {
        let mut inner = self.lock();
        let today = local_day(now);
        for p in &mut inner.providers {
            p.roll_day(today);
        }
        inner
            .providers
            .iter()
            .map(|p| {
                let keys = p
                    .keys
                    .iter()
                    .map(|k| {
                        (
                            key_hash(&p.config.name, k.key.as_ref()),
                            KeyRecord {
                                cooldown_until: k.cooldown_until,
                                cooldown_reason: k.cooldown_reason.clone(),
                                auth_failed: k.auth_failed,
                                request_count: k.request_count,
                            },
                        )
                    })
                    .collect();
                (
                    p.config.name.clone(),
                    ProviderRecord {
                        enabled_override: p.enabled_override,
                        day: Some(p.day),
                        request_count: p.request_count,
                        total_requests: p.total_requests,
                        total_tokens: p.total_tokens,
                        last_error: p.last_error.clone(),
                        keys,
                    },
                )
            })
            .collect()
    }

    /// Restores persisted records (at start-up), for providers and keys that still exist.
    pub fn restore(&self, records: &HashMap<String, ProviderRecord>, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            let today = local_day(now);
            for p in &mut inner.providers {
                let Some(r) = records.get(&p.config.name) else {
                    continue;
                };
                p.enabled_override = r.enabled_override;
                p.total_requests = r.total_requests;
                p.total_tokens = r.total_tokens;
                p.last_error = r.last_error.clone();
                let same_day = r.day == Some(today);
                p.day = today;
                p.request_count = if same_day { r.request_count } else { 0 };
                for k in &mut p.keys {
                    let Some(kr) = r.keys.get(&key_hash(&p.config.name, k.key.as_ref())) else {
                        continue;
                    };
                    k.cooldown_until = kr.cooldown_until.filter(|t| *t > now);
                    k.cooldown_reason = k.cooldown_until.and(kr.cooldown_reason.clone());
                    k.auth_failed = kr.auth_failed;
                    k.request_count = if same_day { kr.request_count } else { 0 };
                }
            }
        }
        self.changed();
    }
}

impl Inner {
    fn apply(
        &mut self,
        providers: &[Arc<ProviderConfig>],
        keys: &HashMap<String, Vec<ProviderKey>>,
        now: DateTime<Utc>,
    ) {
        let today = local_day(now);
        let mut old: HashMap<String, ProviderState> = self
            .providers
            .drain(..)
            .map(|p| (p.config.name.clone(), p))
            .collect();
        let empty = Vec::new();
        for cfg in providers {
            let provider_keys = keys.get(&cfg.name).unwrap_or(&empty);
            let wanted: Vec<(Option<ApiKey>, String)> = if cfg.requires_key {
                provider_keys
                    .iter()
                    .map(|k| (Some(k.key.clone()), k.label()))
                    .collect()
            } else {
                vec![(None, "no key needed".to_string())]
            };
            let mut prev = old.remove(&cfg.name);
            let endpoint_changed = prev
                .as_ref()
                .is_some_and(|p| p.config.base_url != cfg.base_url);
            let mut new_keys = Vec::with_capacity(wanted.len());
            for (key, label) in wanted {
                let carried = prev.as_mut().and_then(|p| {
                    let pos = p.keys.iter().position(|k| k.key == key)?;
                    Some(p.keys.remove(pos))
                });
                let ks = match carried {
                    Some(mut k) => {
                        k.label = label;
                        if endpoint_changed {
                            k.auth_failed = false;
                            k.cooldown_until = None;
                            k.cooldown_reason = None;
                        }
                        k
                    }
                    None => {
                        let id = self.next_key_id;
                        self.next_key_id += 1;
                        KeyState {
                            id,
                            mask: Arc::new(KeyMask::new(key.as_ref())),
                            key,
                            label,
                            cooldown_until: None,
                            cooldown_reason: None,
                            consecutive_429: 0,
                            auth_failed: false,
                            request_count: 0,
                            token_budget: None,
                        }
                    }
                };
                new_keys.push(ks);
            }
            let state = match prev {
                Some(mut p) => {
                    if p.config.enabled != cfg.enabled {
                        // The user edited `enabled` in the file: the file wins.
                        p.enabled_override = None;
                    }
                    p.config = Arc::clone(cfg);
                    p.keys = new_keys;
                    p
                }
                None => ProviderState {
                    config: Arc::clone(cfg),
                    enabled_override: None,
                    keys: new_keys,
                    day: today,
                    request_count: 0,
                    total_requests: 0,
                    total_tokens: 0,
                    last_error: None,
                    next_key: 0,
                },
            };
            self.providers.push(state);
        }
    }
}

fn route_matches(route: &Route, p: &ProviderConfig) -> bool {
    match route {
        Route::Any => true,
        Route::Model(m) => p.serves(m),
        Route::Pinned { provider, .. } => p.name == *provider,
    }
}

/// "daily quota used, back at 09:00" in the user's local time; the weekday is added when
/// the reset is not within the next day.
pub fn quota_reason(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let local = until.with_timezone(&Local);
    if until - now > chrono::Duration::hours(20) {
        format!("daily quota used, back {}", local.format("%a %H:%M"))
    } else {
        format!("daily quota used, back at {}", local.format("%H:%M"))
    }
}

fn secs_until(t: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (t - now).num_milliseconds().max(0);
    u64::try_from(ms).unwrap_or(0).div_ceil(1000)
}

/// Decides the route for a requested model against the configured providers.
pub fn route_for(model: Option<&str>, providers: &[Arc<ProviderConfig>]) -> Route {
    let Some(model) = model
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "auto")
    else {
        return Route::Any;
    };
    if providers.iter().any(|p| p.serves(model)) {
        return Route::Model(model.to_string());
    }
    if let Some((prefix, rest)) = model.split_once('/') {
        if !rest.is_empty() && providers.iter().any(|p| p.name == prefix) {
            return Route::Pinned {
                provider: prefix.to_string(),
                model: rest.to_string(),
            };
        }
    }
    Route::Any
}
