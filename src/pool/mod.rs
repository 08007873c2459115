//! THE provider state: toggles, keys, cooldowns and counters. Every change goes through a
//! few methods here that take `now` explicitly (so tests control time) and bump a version
//! that viewers (HTTP status, tray, persistence) watch; viewers read a [`Snapshot`].
//! The lock is a `std::sync::Mutex` held for microseconds and never across `.await`.
//! This module does no I/O.
//!
//! Its rooms: this file holds the handle ([`Pool`]), the per-key and per-provider state
//! and the transitions of a request (pick, report, bench); `reload.rs` the merge of a
//! new config; `persist.rs` the records kept across restarts; `catalogs.rs` what the
//! model catalogs say; `snapshot.rs` the read-only view every viewer reads.

mod catalogs;
mod cause;
mod persist;
mod reload;
mod shared;
mod snapshot;
pub mod store;

pub use cause::{quota_reason, Cause, CauseKind};
use persist::fnv_hex;
pub use persist::{key_hash, KeyRecord, ProviderRecord};
pub use reload::Reload;
pub use shared::{
    endpoint_id, shared_key_id, Facts, Freed, KeyFacts, Remote, SharedHold, SharedStatus,
};
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::config::{Limits, ProviderConfig, RoutingConfig};
use crate::headroom::{self, Counts, Headroom, Reading};
use crate::secrets::{ApiKey, ProviderKey};
use crate::upstream::limits::Budget;
use crate::upstream::scrub::KeyMask;

pub use snapshot::{
    countdown, ConfigSnapshot, KeySnapshot, ProviderSnapshot, ProviderStateKind, SharedMachine,
    SharedSnapshot, Snapshot,
};

/// Which providers a request may go to, decided from its `model` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Any provider, each with its own default model (`model` absent, "auto" or unknown).
    Any,
    /// Only providers listing this model.
    Model(String),
    /// Any provider that lists embedding models, each with its first (`"auto"` or no
    /// model on `/v1/embeddings`).
    AnyEmbedding,
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
    /// The key's place in the provider's key list (0 for keyless providers): how the
    /// usage history tells keys apart without storing any part of them.
    pub key_index: u32,
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
    /// The model sent is retired or unknown at this provider (Groq
    /// `model_decommissioned`, OpenAI `model_not_found`, Gemini "models/… is not found",
    /// Mistral "Invalid model", OpenRouter "No endpoints found"): the (provider, model)
    /// pair is skipped until the config or the key changes.
    ModelRetired {
        /// What the provider said.
        reason: String,
    },
    /// The key may not use the model sent (Gemini's free tier answers `limit: 0` for
    /// paid-only models): the (key, model) pair is skipped until the key or config
    /// changes.
    NotInTier {
        /// What the provider said.
        reason: String,
    },
    /// 410 Gone: the whole endpoint was retired (GitHub Models); the provider is skipped
    /// until its config changes.
    ProviderGone {
        /// What the provider said.
        reason: String,
    },
    /// A client error relayed unchanged (400, 404, 413, 422...): no cooldown.
    Relayed {
        /// HTTP status.
        status: u16,
    },
}

/// What one provider can be asked for (see [`Pool::offered_models`]).
#[derive(Debug, Clone, Default)]
pub struct Offered {
    /// The endpoint is gone (410).
    pub gone: bool,
    /// Models it said are retired.
    pub retired: std::collections::HashSet<String>,
    /// Its catalog's models that have not shut down; `None` when the catalog is unknown.
    pub listed: Option<std::collections::HashSet<String>>,
    /// Its whole catalog, sorted (empty when unknown).
    pub catalog: Vec<String>,
}

impl Offered {
    /// Whether a configured model is still offered: not retired, and listed by the
    /// catalog (or the catalog is unknown).
    pub fn serves(&self, model: &str) -> bool {
        !self.gone
            && !self.retired.contains(model)
            && self.listed.as_ref().is_none_or(|l| l.contains(model))
    }
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

/// What kind of pause a key's cooldown is: decides what a wake from sleep clears and
/// what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// A 429 with the provider's own wait (Retry-After or a reset header): kept.
    RateLimit,
    /// A 429 without a hint: our own growing guess, cleared on wake.
    RateLimitGuess,
    /// 5xx, timeouts, connection errors, broken streams: cleared on wake.
    Transient,
    /// A billing problem (402): kept.
    Payment,
    /// A spent quota or allowance with a known refill time (daily benches): kept.
    Bench,
}

impl Hold {
    /// Whether a wake from sleep clears it: the pause was ours, not the provider's.
    pub fn cleared_on_wake(self) -> bool {
        matches!(self, Hold::Transient | Hold::RateLimitGuess)
    }
}

#[derive(Debug)]
struct KeyState {
    id: u64,
    key: Option<ApiKey>,
    mask: Arc<KeyMask>,
    label: String,
    cooldown_until: Option<DateTime<Utc>>,
    /// Why `cooldown_until` is set (its kind is [`Cause::hold`]).
    cause: Option<Cause>,
    consecutive_429: u32,
    auth_failed: bool,
    /// Requests and tokens today and this minute (`requests_today` is persisted).
    counts: Counts,
    /// Models this key may not use (a paid-only model on a free key).
    out_of_tier: BTreeMap<String, String>,
    /// Tokens left in the provider's current token window and when it refills, from the
    /// last answer's rate-limit headers (not persisted: it is minutes long).
    token_budget: Option<(u64, DateTime<Utc>)>,
    /// The provider's last word on this key's windows: the reading, when it was taken
    /// and the key's requests today then (not persisted: a restart reads it anew).
    reading: Option<(Reading, DateTime<Utc>, u64)>,
    /// Its id in the shared pool (`None` for a keyless provider: nothing to share).
    shared_id: Option<Arc<str>>,
    /// What the other machines of a shared pool used of it today: (day, requests,
    /// tokens), all of them together.
    others: Option<(NaiveDate, u64, u64)>,
}

impl KeyState {
    /// Ends its cooldown or bench (not a rejection).
    fn clear_cooldown(&mut self) {
        self.cooldown_until = None;
        self.cause = None;
        self.consecutive_429 = 0;
        self.token_budget = None;
    }

    /// Starts a cooldown for `cause` until `until`.
    fn hold(&mut self, cause: Cause, until: DateTime<Utc>) {
        self.cooldown_until = Some(until);
        self.cause = Some(cause);
    }

    /// The kind of its cooldown, if it has one.
    fn hold_kind(&self) -> Option<Hold> {
        self.cause.as_ref().map(Cause::hold)
    }

    fn cooling(&self, now: DateTime<Utc>) -> bool {
        self.cooldown_until.is_some_and(|t| t > now)
    }

    /// What it has left at `now`, from the provider's reading or the configured limits
    /// (`day_end`: when the local day ends, see [`headroom::day_bounds`]).
    fn headroom(&self, limits: &Limits, day_end: DateTime<Utc>, now: DateTime<Utc>) -> Headroom {
        let (reading, at_reading) = match &self.reading {
            Some((r, _, n)) => (Some(r), *n),
            None => (None, 0),
        };
        headroom::for_key(
            &headroom::KeyInput {
                reading,
                requests_at_reading: at_reading,
                counts: &self.day_counts(),
                limits,
                day_end,
            },
            now,
        )
    }

    /// Rests the key when the agent's own count reached a limit set in the config (the
    /// provider would refuse the next request anyway).
    fn rest_if_own_limit_reached(&mut self, limits: &Limits, now: DateTime<Utc>) {
        if *limits == Limits::default() {
            return;
        }
        let day_end = headroom::day_bounds(now).1;
        let Some((until, daily)) = self.headroom(limits, day_end, now).own_limit_reached() else {
            return;
        };
        if until <= now || self.cooldown_until.is_some_and(|t| t >= until) {
            return;
        }
        let cause = if daily {
            Cause::DailyQuota { until }
        } else {
            Cause::Allowance {
                until,
                configured: true,
            }
        };
        self.hold(cause, until);
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
    /// What `last_error` was about.
    last_error_kind: Option<CauseKind>,
    next_key: usize,
    /// Models the provider said are retired or unknown (model → what it said).
    retired: BTreeMap<String, String>,
    /// Why the whole provider is gone (a 410), if it is.
    gone: Option<String>,
    /// The provider's own list of models, when it could be read.
    catalog: Option<Catalog>,
    /// Why the last catalog read failed.
    catalog_error: Option<String>,
    /// Stream events refused for their size (since start).
    oversized_events: u64,
}

impl ProviderState {
    fn enabled(&self) -> bool {
        self.enabled_override.unwrap_or(self.config.enabled)
    }

    /// The model this provider sends for `route` with key `k`: for "auto", the first of
    /// its preference list that is not retired (nor out of the key's tier); for a named
    /// model, that model if it is still served. `None` when it cannot serve the route.
    fn model_for<'a>(&'a self, route: &'a Route, k: &KeyState) -> Option<&'a str> {
        if self.gone.is_some() {
            return None;
        }
        let ok = |m: &str| !self.retired.contains_key(m) && !k.out_of_tier.contains_key(m);
        match route {
            Route::Any => {
                let listed = |m: &str| self.catalog_allows(m);
                let mut usable = self
                    .config
                    .preferred
                    .iter()
                    .map(String::as_str)
                    .filter(|m| ok(m));
                let first = usable.clone().find(|m| listed(m));
                first.or_else(|| usable.next())
            }
            Route::AnyEmbedding => self
                .config
                .embedding_models
                .iter()
                .map(String::as_str)
                .find(|m| ok(m)),
            Route::Model(m) => (self.config.serves(m) && ok(m)).then_some(m.as_str()),
            Route::Pinned { provider, model } => {
                (self.config.name == *provider && ok(model)).then_some(model.as_str())
            }
        }
    }

    /// Whether every model of its preference list is retired (or the provider is gone):
    /// it is skipped for "auto" until the config changes.
    fn all_retired(&self) -> bool {
        let unusable = |m: &String| {
            self.retired.contains_key(m)
                || (!self.keys.is_empty()
                    && self.keys.iter().all(|k| k.out_of_tier.contains_key(m)))
        };
        self.gone.is_some() || self.config.preferred.iter().all(unusable)
    }

    /// The model "auto" uses now: the first preferred one not retired, preferring those
    /// the catalog lists.
    fn model_in_use(&self) -> Option<&str> {
        if self.gone.is_some() {
            return None;
        }
        let mut usable = self
            .config
            .preferred
            .iter()
            .map(String::as_str)
            .filter(|m| !self.retired.contains_key(*m));
        let first = usable.clone().find(|m| self.catalog_allows(m));
        first.or_else(|| usable.next())
    }

    /// Whether the catalog (when known) lists `model` and does not say it has shut
    /// down. A provider whose catalog lists none of its preferred models is trusted to
    /// answer for itself: ids may be spelled differently in its list.
    fn catalog_allows(&self, model: &str) -> bool {
        self.catalog
            .as_ref()
            .is_none_or(|c| c.offers(model) && !c.shut_down(model))
    }

    /// What retired marks are valid for: the endpoint, the models and the keys. When any
    /// of them changes, the marks are cleared.
    fn marks_key(&self) -> String {
        let mut text = format!("{}\n", self.config.base_url);
        for m in self.config.configured_models() {
            text.push_str(m);
            text.push('\n');
        }
        let mut keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| key_hash(&self.config.name, k.key.as_ref()))
            .collect();
        keys.sort();
        text.push_str(&keys.join(","));
        fnv_hex(text.as_bytes())
    }

    fn kind(&self, now: DateTime<Utc>) -> ProviderStateKind {
        if !self.enabled() {
            ProviderStateKind::Disabled
        } else if self.all_retired() {
            ProviderStateKind::ModelRetired
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
                k.counts.requests_today = 0;
                k.counts.tokens_today = 0;
                k.others = None;
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
    /// Why `state.json` cannot be saved, while it cannot (see `crate::state`).
    state_error: Option<String>,
    /// Requests waiting for a provider to come back (see `proxy::wait`).
    waiting: usize,
    /// The shared pool, when one is configured (see `crate::shared`).
    shared: Option<SharedStatus>,
    /// Keys freed by hand, for the shared pool's other machines.
    shared_freed: Vec<Freed>,
}

/// The shared provider state. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Mutex<Inner>>,
    version: Arc<watch::Sender<u64>>,
    catalog_wanted: Arc<tokio::sync::Notify>,
    catalog_rounds: Arc<watch::Sender<u64>>,
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
            state_error: None,
            waiting: 0,
            shared: None,
            shared_freed: Vec::new(),
        };
        inner.apply(providers, keys, now);
        let (tx, _rx) = watch::channel(0);
        Pool {
            inner: Arc::new(Mutex::new(inner)),
            version: Arc::new(tx),
            catalog_wanted: Arc::new(tokio::sync::Notify::new()),
            catalog_rounds: Arc::new(watch::channel(0).0),
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
                p.keys.iter().any(|k| {
                    k.usable(now)
                        && k.fits(need, now)
                        && !tried.contains(&k.id)
                        && p.model_for(route, k).is_some()
                })
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
            .filter(|(_, k)| {
                k.usable(now)
                    && k.fits(need, now)
                    && !tried.contains(&k.id)
                    && p.model_for(route, k).is_some()
            })
            .map(|(i, _)| i)
            .collect();
        let ki = usable[p.next_key % usable.len()];
        p.next_key = p.next_key.wrapping_add(1);
        let k = &p.keys[ki];
        let model = p.model_for(route, k).unwrap_or(&p.config.model).to_string();
        Some(Attempt {
            provider: Arc::clone(&p.config),
            key: k.key.clone(),
            key_id: k.id,
            key_index: u32::try_from(ki).unwrap_or(u32::MAX),
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
                // Counters saturate: a provider reporting absurd numbers cannot wrap them.
                p.request_count = p.request_count.saturating_add(1);
                p.total_requests = p.total_requests.saturating_add(1);
            }
            let Some(k) = p.keys.iter_mut().find(|k| k.id == attempt.key_id) else {
                return;
            };
            if reached {
                let tokens = match outcome {
                    Outcome::Success { tokens } => tokens.unwrap_or(0),
                    _ => 0,
                };
                k.counts.add(1, tokens, now);
            }
            // Provider text is stored (and shown, and persisted) only masked.
            let stored = |reason: &str| attempt.mask.text(reason);
            match outcome {
                Outcome::Success { tokens } => {
                    p.total_tokens = p.total_tokens.saturating_add(tokens.unwrap_or(0));
                    k.consecutive_429 = 0;
                    p.last_error = None;
                    p.last_error_kind = None;
                }
                Outcome::RateLimited {
                    retry_after,
                    reason,
                } => {
                    k.consecutive_429 = k.consecutive_429.saturating_add(1);
                    let wait = match retry_after {
                        // A plain rate limit rests at most max_cooldown_secs, whatever the
                        // provider asked (a Retry-After in the year 9999, say).
                        Some(d) => (*d).min(routing.max_cooldown),
                        None => {
                            let factor = 1u32 << (k.consecutive_429 - 1).min(16);
                            routing
                                .default_cooldown
                                .saturating_mul(factor)
                                .min(routing.max_cooldown)
                        }
                    };
                    let cause = Cause::RateLimit {
                        said: stored(reason),
                        hinted: retry_after.is_some(),
                    };
                    k.hold(cause, now + to_chrono(wait));
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::RateLimit);
                }
                Outcome::AuthFailed { reason } => {
                    k.auth_failed = true;
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::KeyRejected);
                }
                Outcome::PaymentRequired { reason } => {
                    let cause = Cause::Credits {
                        said: stored(reason),
                    };
                    k.hold(cause, now + to_chrono(routing.payment_cooldown));
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::Credits);
                }
                Outcome::Transient { reason, .. } => {
                    let cause = Cause::Transient {
                        said: stored(reason),
                    };
                    k.hold(cause, now + to_chrono(routing.transient_cooldown));
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::Transient);
                }
                Outcome::QuotaExhausted { until, reason } => {
                    k.hold(Cause::DailyQuota { until: *until }, *until);
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::DailyQuota);
                }
                Outcome::ModelRetired { reason } => {
                    tracing::warn!(
                        provider = %p.config.name,
                        model = %attempt.model,
                        "the provider says this model is retired or unknown; skipping it until the config or key changes"
                    );
                    p.retired.insert(attempt.model.clone(), stored(reason));
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::ModelRetired);
                    // What does it offer instead? Read its catalog again now.
                    self.catalog_wanted.notify_one();
                }
                Outcome::NotInTier { reason } => {
                    k.out_of_tier.insert(attempt.model.clone(), stored(reason));
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::NotInTier);
                }
                Outcome::ProviderGone { reason } => {
                    tracing::warn!(
                        provider = %p.config.name,
                        "the provider's endpoint is gone (HTTP 410); skipping it until its config changes"
                    );
                    p.gone = Some(stored(reason));
                    p.last_error = Some(stored(reason));
                    p.last_error_kind = Some(CauseKind::EndpointGone);
                }
                Outcome::Relayed { .. } => {}
            }
            if reached {
                k.rest_if_own_limit_reached(&p.config.limits, now);
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
            let cause = if daily {
                Cause::DailyQuota { until }
            } else {
                Cause::Allowance {
                    until,
                    configured: false,
                }
            };
            k.hold(cause, until);
        }
        self.changed();
    }

    /// Records what a successful answer's rate-limit headers said about its key: the
    /// tokens left in its current token window (for picking) and every window read (its
    /// headroom), as of `now`.
    pub fn note_limits(&self, attempt: &Attempt, budget: &Budget, now: DateTime<Utc>) {
        let mut inner = self.lock();
        if let Some(k) = inner
            .providers
            .iter_mut()
            .find(|p| p.config.name == attempt.provider.name)
            .and_then(|p| p.keys.iter_mut().find(|k| k.id == attempt.key_id))
        {
            if let Some(tokens) = budget.tokens {
                k.token_budget = Some(tokens);
            }
            if !budget.reading.is_empty() {
                // The provider's figures already count the request these headers came
                // with; the pool counts it when the answer is reported, just after.
                let counted = k.day_counts().requests_today.saturating_add(1);
                k.reading = Some((budget.reading, now, counted));
            }
        }
    }

    /// Adds tokens counted after the fact (at the end of a stream) to the provider's
    /// total and the key's counts.
    pub fn add_tokens(&self, attempt: &Attempt, tokens: u64, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            if let Some(p) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == attempt.provider.name)
            {
                p.total_tokens = p.total_tokens.saturating_add(tokens);
                let limits = p.config.limits;
                if let Some(k) = p.keys.iter_mut().find(|k| k.id == attempt.key_id) {
                    k.counts.add(0, tokens, now);
                    k.rest_if_own_limit_reached(&limits, now);
                }
            }
        }
        self.changed();
    }

    /// A stream event past the size limit: the key gets a transient cooldown and the
    /// provider's count of such events (in `/status`) goes up.
    pub fn count_oversized(&self, attempt: &Attempt) {
        let now = Utc::now();
        {
            let mut inner = self.lock();
            let cooldown = to_chrono(inner.routing.transient_cooldown);
            let Some(p) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == attempt.provider.name)
            else {
                return;
            };
            p.oversized_events = p.oversized_events.saturating_add(1);
            let reason = format!(
                "sent an SSE event larger than {} MB",
                crate::proxy::sse::MAX_EVENT_BYTES / 1024 / 1024
            );
            p.last_error = Some(reason.clone());
            p.last_error_kind = Some(CauseKind::Transient);
            if let Some(k) = p.keys.iter_mut().find(|k| k.id == attempt.key_id) {
                k.hold(Cause::Transient { said: reason }, now + cooldown);
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
                p.last_error_kind = Some(CauseKind::Transient);
            }
        }
        self.changed();
    }

    /// How many requests wait for a provider to come back (shown in `/status` and the
    /// menu).
    pub fn set_waiting(&self, count: usize) {
        {
            let mut inner = self.lock();
            if inner.waiting == count {
                return;
            }
            inner.waiting = count;
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
                        .and_then(|k| k.cause.as_ref())
                        .filter(|c| c.kind() == CauseKind::DailyQuota)
                        .map(|c| c.words(now))
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

    /// Turns a provider on or off at runtime. Returns false for an unknown name. Turning
    /// it on also clears its keys' rejections, cooldowns and benches.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let found = {
            let mut inner = self.lock();
            match inner.providers.iter().position(|p| p.config.name == name) {
                Some(i) => {
                    let p = &mut inner.providers[i];
                    p.enabled_override = (enabled != p.config.enabled).then_some(enabled);
                    if enabled {
                        // Re-enabling is the user's way to say "try this key again": also
                        // after a cooldown or bench the provider set (a far-off one, say).
                        for k in &mut p.keys {
                            k.auth_failed = false;
                            k.clear_cooldown();
                        }
                        Pool::note_freed(&mut inner, i, true);
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

    /// Ends every cooldown and bench of a provider's keys by hand (the menu's "Reset
    /// cooldowns", `POST /providers/{name}/reset`), as turning it on does; rejected keys
    /// and retired models stay. Returns its fresh snapshot; `None` for an unknown name.
    pub fn reset(&self, name: &str, now: DateTime<Utc>) -> Option<ProviderSnapshot> {
        {
            let mut inner = self.lock();
            let i = inner.providers.iter().position(|p| p.config.name == name)?;
            let p = &mut inner.providers[i];
            for k in &mut p.keys {
                k.clear_cooldown();
            }
            p.last_error = None;
            p.last_error_kind = None;
            Pool::note_freed(&mut inner, i, false);
        }
        self.changed();
        self.snapshot(now)
            .providers
            .into_iter()
            .find(|p| p.name == name)
    }

    /// After the machine slept: ends the cooldowns that were our own caution (transient
    /// failures, 429s without a hint) and keeps the provider's own waits still in the
    /// future (Retry-After, daily benches, billing). Returns how many keys were freed.
    pub fn woke(&self, now: DateTime<Utc>) -> usize {
        let mut freed = 0;
        {
            let mut inner = self.lock();
            for p in &mut inner.providers {
                for k in &mut p.keys {
                    if k.cooling(now) && k.hold_kind().is_some_and(Hold::cleared_on_wake) {
                        k.clear_cooldown();
                        freed += 1;
                    } else if !k.cooling(now) {
                        // The sleep was a long rest: a 429 after it starts the guess anew.
                        k.consecutive_429 = 0;
                    }
                }
            }
        }
        if freed > 0 {
            self.changed();
        }
        freed
    }

    /// After the network came back: as after a wake ([`Pool::woke`]), and the snapshot is
    /// published anew either way, so every viewer re-reads the headroom. Returns how many
    /// keys were freed.
    pub fn network_changed(&self, now: DateTime<Utc>) -> usize {
        let freed = self.woke(now);
        if freed == 0 {
            self.changed();
        }
        freed
    }

    /// Whether a provider with this name exists.
    pub fn has_provider(&self, name: &str) -> bool {
        self.lock().providers.iter().any(|p| p.config.name == name)
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

    /// Records why the state file cannot be saved (None = saved again), so `/status` and
    /// the menu say so, not only the log.
    pub fn set_state_error(&self, error: Option<String>) {
        {
            let mut inner = self.lock();
            if inner.state_error == error {
                return;
            }
            inner.state_error = error;
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
}

fn route_matches(route: &Route, p: &ProviderConfig) -> bool {
    match route {
        Route::Any => true,
        Route::AnyEmbedding => !p.embedding_models.is_empty(),
        Route::Model(m) => p.serves(m),
        Route::Pinned { provider, .. } => p.name == *provider,
    }
}

fn secs_until(t: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (t - now).num_milliseconds().max(0);
    u64::try_from(ms).unwrap_or(0).div_ceil(1000)
}

/// Decides the route for a requested model against the configured providers.
/// The route of an embeddings request: "auto" or no model → any provider with embedding
/// models; otherwise as [`route_for`].
pub fn route_for_embeddings(model: Option<&str>, providers: &[Arc<ProviderConfig>]) -> Route {
    match route_for(model, providers) {
        Route::Any => Route::AnyEmbedding,
        other => other,
    }
}

/// The route a request's `model` asks for: a provider's configured model, a provider by
/// name, or any provider when it names nothing configured.
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
