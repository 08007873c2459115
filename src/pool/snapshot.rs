//! The read-only picture of the pool that `/status`, `/stats`, the CLI and the tray show.
//! Field names match the integration guide apps are written against: keep them.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{secs_until, Cause, CauseKind, Inner};
use crate::headroom::{self, Headroom, PoolHeadroom};

/// What a provider is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStateKind {
    /// Can serve now.
    Ready,
    /// Every usable key is cooling down.
    CoolingDown,
    /// Turned off.
    Disabled,
    /// Needs a key and has none.
    NoKey,
    /// Every key was rejected.
    AuthFailed,
    /// Every model of its preference list is retired, or the endpoint is gone (410).
    ModelRetired,
}

impl ProviderStateKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderStateKind::Ready => "ready",
            ProviderStateKind::CoolingDown => "cooling_down",
            ProviderStateKind::Disabled => "disabled",
            ProviderStateKind::NoKey => "no_key",
            ProviderStateKind::AuthFailed => "auth_failed",
            ProviderStateKind::ModelRetired => "model_retired",
        }
    }

    /// The words people read, the same in `llm-rotator status` and the menu (see the
    /// glossary at the top of the crate).
    pub fn words(self) -> &'static str {
        match self {
            ProviderStateKind::Ready => "ready",
            ProviderStateKind::CoolingDown => "cooling down",
            ProviderStateKind::Disabled => "disabled",
            ProviderStateKind::NoKey => "no key",
            ProviderStateKind::AuthFailed => "key rejected",
            ProviderStateKind::ModelRetired => "model retired",
        }
    }
}

/// A time left as people read it in the CLI and the menu: `2:41`, `1:01:01`.
pub fn countdown(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// One key of a provider, never the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySnapshot {
    /// Origin and fingerprint, e.g. "env GROQ_API_KEY …WXYZ".
    pub label: String,
    /// `ready`, `cooling_down` or `auth_failed`.
    pub state: String,
    /// Requests today on this key.
    pub request_count: u64,
    /// Cooldown deadline (RFC 3339 UTC).
    pub rate_limited_until: Option<String>,
    /// Seconds left in the cooldown.
    pub cooldown_remaining_secs: u64,
    /// Why it cools down.
    pub cooldown_reason: Option<String>,
    /// What its cooldown is about (`rate_limit`, `daily_quota`, `allowance`, `credits`,
    /// `transient`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_cause: Option<CauseKind>,
    /// What it has left, and when each window refills.
    #[serde(default)]
    pub headroom: Headroom,
    /// When the provider's headers were last read for it (RFC 3339 UTC); `None`: they
    /// never said anything, the figures (if any) are from the configured limits.
    #[serde(default)]
    pub headroom_read_at: Option<String>,
    /// Tokens left in the provider's current token window, from the last answer's
    /// rate-limit headers, while that window lasts (`None`: not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_left: Option<u64>,
    /// With a shared pool: requests today on this key from every machine in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_all_machines: Option<u64>,
}

/// One provider in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderSnapshot {
    /// Name.
    pub name: String,
    /// Effective toggle.
    pub enabled: bool,
    /// The toggle as written in the config file.
    pub enabled_in_config: bool,
    /// Whether it has a key (or needs none).
    pub has_key: bool,
    /// Priority (1 = first).
    pub priority: u32,
    /// Default model.
    pub model: String,
    /// Further models.
    pub models: Vec<String>,
    /// `ready|cooling_down|disabled|no_key|auth_failed`.
    pub state: ProviderStateKind,
    /// Requests today.
    pub request_count: u64,
    /// Requests ever.
    pub total_requests: u64,
    /// Tokens ever.
    pub total_tokens_used: u64,
    /// Whether it is cooling down.
    pub is_rate_limited: bool,
    /// When it is ready again (RFC 3339 UTC), if cooling.
    pub rate_limited_until: Option<String>,
    /// Seconds until ready, if cooling.
    pub cooldown_remaining_secs: u64,
    /// Why it cools down.
    pub cooldown_reason: Option<String>,
    /// What its cooldown is about (see [`CauseKind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_cause: Option<CauseKind>,
    /// Last failure.
    pub last_error: Option<String>,
    /// What the last failure was about (`rate_limit`, `key_rejected`, `model_retired`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_kind: Option<CauseKind>,
    /// Per key.
    pub keys: Vec<KeySnapshot>,
    /// The model "auto" is sent to now: the first of the preference list that is not
    /// retired (`None` when every one is).
    #[serde(default)]
    pub model_in_use: Option<String>,
    /// The `model` preference list, in order.
    #[serde(default)]
    pub preferred: Vec<String>,
    /// Models the provider said are retired or unknown, with what it said.
    #[serde(default)]
    pub retired_models: std::collections::BTreeMap<String, String>,
    /// Why the whole provider is gone (HTTP 410), if it is.
    #[serde(default)]
    pub gone: Option<String>,
    /// When its model catalog was last read (RFC 3339 UTC); `None`: catalog unknown.
    #[serde(default)]
    pub catalog_fetched_at: Option<String>,
    /// How many models its catalog lists.
    #[serde(default)]
    pub catalog_models: usize,
    /// A few models its catalog offers (new ones first), to pick from when one retires.
    #[serde(default)]
    pub offers: Vec<String>,
    /// Stream events it sent that were refused for their size (since start).
    #[serde(default)]
    pub oversized_events: u64,
    /// What its keys that can still serve have left, summed, and when each window
    /// refills first.
    #[serde(default)]
    pub headroom: Headroom,
    /// When it runs out of requests at today's pace, if that comes before its daily
    /// window refills.
    #[serde(default)]
    pub runs_out_at: Option<DateTime<Utc>>,
    /// With a shared pool: requests today on its keys from every machine in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_count_all_machines: Option<u64>,
}

impl ProviderSnapshot {
    /// For a provider skipped because its models are retired: "model retired: X (what
    /// the provider said)", or why the endpoint is gone. The one wording `/status`
    /// readers, the CLI and the menu show.
    pub fn retired_text(&self) -> Option<String> {
        if let Some(gone) = &self.gone {
            return Some(format!("endpoint retired: {gone}"));
        }
        if self.state != ProviderStateKind::ModelRetired {
            return None;
        }
        let names: Vec<&str> = self.preferred.iter().map(String::as_str).collect();
        // What the provider said is in `retired_models` and `last_error`; the line says
        // what to do.
        let offers = if self.offers.is_empty() {
            String::new()
        } else {
            format!("; provider offers {}", self.offers.join(", "))
        };
        Some(format!(
            "model retired: {}{offers}; set another model in the config",
            names.join(", ")
        ))
    }

    /// The model "auto" goes to, with the retired ones it stepped over:
    /// "gpt-oss-20b (gpt-oss-120b retired)".
    pub fn model_shown(&self) -> String {
        let Some(in_use) = &self.model_in_use else {
            return self.model.clone();
        };
        let skipped: Vec<&str> = self
            .preferred
            .iter()
            .take_while(|m| *m != in_use)
            .map(String::as_str)
            .collect();
        if skipped.is_empty() {
            in_use.clone()
        } else {
            format!("{in_use} ({} retired)", skipped.join(", "))
        }
    }
}

/// The config file's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// Where it lives.
    pub path: Option<String>,
    /// The last load error (with line and column), if the file on disk is not in use.
    pub last_error: Option<String>,
}

/// Everything at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Providers in config order.
    pub providers: Vec<ProviderSnapshot>,
    /// Note from the key store (e.g. no keychain available).
    pub key_store: Option<String>,
    /// The config file's state.
    pub config: ConfigSnapshot,
    /// When this snapshot was taken (RFC 3339 UTC).
    pub generated_at: String,
    /// Requests waiting for a provider to come back from its cooldown.
    #[serde(default)]
    pub waiting: usize,
    /// Why the state file (counters, cooldowns, toggles) cannot be saved, while it
    /// cannot; `None` when it is saved.
    #[serde(default)]
    pub state_error: Option<String>,
    /// Requests left today over the providers that can serve and know their figure.
    #[serde(default)]
    pub headroom: PoolHeadroom,
    /// The shared pool, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSnapshot>,
}

/// The shared pool in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedSnapshot {
    /// The pool's name.
    pub pool: String,
    /// The Redis or Valkey server (host and port).
    pub server: String,
    /// `online` or `offline`.
    pub state: String,
    /// Since when (RFC 3339 UTC).
    pub since: String,
    /// Why it is offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The machines sharing the pool, this one included.
    pub machines: Vec<SharedMachine>,
}

impl SharedSnapshot {
    /// Whether the agent is connected to the pool's server.
    pub fn online(&self) -> bool {
        self.state == "online"
    }

    /// The one line the CLI and the menu show: "shared pool home: 2 machines" or
    /// "shared pool offline: connection refused".
    pub fn headline(&self) -> String {
        if self.online() {
            let n = self.machines.len();
            format!(
                "shared pool {}: {n} machine{}",
                self.pool,
                if n == 1 { "" } else { "s" }
            )
        } else {
            match &self.error {
                Some(e) => format!("shared pool offline: {e}"),
                None => "shared pool offline".to_string(),
            }
        }
    }
}

impl SharedMachine {
    /// "laptop (this machine)", "desktop (seen 12 s ago)".
    pub fn words(&self) -> String {
        if self.this {
            return format!("{} (this machine)", self.name);
        }
        let s = self.last_seen_secs;
        let ago = match s {
            0..=2 => "just now".to_string(),
            3..=119 => format!("{s} s ago"),
            120..=7199 => format!("{} min ago", s / 60),
            7200..=172_799 => format!("{} h ago", s / 3600),
            _ => format!("{} days ago", s / 86_400),
        };
        format!("{} (seen {ago})", self.name)
    }
}

/// One machine of a shared pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedMachine {
    /// Its name.
    pub name: String,
    /// Whether it is this agent.
    pub this: bool,
    /// When it was last seen (RFC 3339 UTC).
    pub last_seen: String,
    /// Seconds since then.
    pub last_seen_secs: u64,
}

impl Snapshot {
    /// Providers by priority (then config order): the order the tray shows.
    pub fn by_priority(&self) -> Vec<&ProviderSnapshot> {
        let mut v: Vec<&ProviderSnapshot> = self.providers.iter().collect();
        v.sort_by_key(|p| p.priority);
        v
    }

    /// How many providers are ready.
    pub fn ready_count(&self) -> usize {
        self.providers
            .iter()
            .filter(|p| p.state == ProviderStateKind::Ready)
            .count()
    }
}

/// How many of a catalog's models a snapshot names as alternatives.
const OFFERS_SHOWN: usize = 5;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn build(inner: &Inner, now: DateTime<Utc>) -> Snapshot {
    let (day_start, day_end) = headroom::day_bounds(now);
    let providers: Vec<ProviderSnapshot> = inner
        .providers
        .iter()
        .map(|p| {
            let state = p.kind(now);
            let key_headroom: Vec<Headroom> = p
                .keys
                .iter()
                .map(|k| k.headroom(&p.config.limits, day_end, now))
                .collect();
            let headroom = headroom::for_provider(
                p.keys
                    .iter()
                    .zip(&key_headroom)
                    .filter(|(k, _)| !k.auth_failed)
                    .map(|(_, h)| h),
            );
            let all_machines = inner.shared.as_ref().map(|_| {
                let others: u64 = p
                    .keys
                    .iter()
                    .filter_map(|k| k.others.map(|(_, r, _)| r))
                    .sum();
                p.request_count.saturating_add(others)
            });
            let runs_out_at = headroom.requests_today.and_then(|d| {
                let used = all_machines.unwrap_or(p.request_count);
                headroom::runs_out_at(used, day_start, now, d.left)
                    .filter(|t| *t < d.resets_at && d.left > 0)
            });
            let ready_at = p
                .ready_at(now)
                .filter(|_| state == ProviderStateKind::CoolingDown);
            let reason = ready_at.and_then(|t| {
                p.keys
                    .iter()
                    .find(|k| k.cooldown_until == Some(t))
                    .and_then(|k| k.cause.as_ref())
            });
            let keys = if p.config.requires_key {
                p.keys
                    .iter()
                    .zip(&key_headroom)
                    .map(|(k, h)| {
                        let cooling = k.cooling(now);
                        KeySnapshot {
                            label: k.label.clone(),
                            state: if k.auth_failed {
                                "auth_failed"
                            } else if cooling {
                                "cooling_down"
                            } else {
                                "ready"
                            }
                            .to_string(),
                            request_count: k.counts.requests_today,
                            rate_limited_until: k.cooldown_until.filter(|_| cooling).map(rfc3339),
                            cooldown_remaining_secs: k
                                .cooldown_until
                                .filter(|_| cooling)
                                .map_or(0, |t| secs_until(t, now)),
                            cooldown_reason: k
                                .cause
                                .as_ref()
                                .filter(|_| cooling)
                                .map(|c| c.words(now)),
                            cooldown_cause: k.cause.as_ref().filter(|_| cooling).map(Cause::kind),
                            headroom: *h,
                            headroom_read_at: k.reading.map(|(_, at, _)| rfc3339(at)),
                            tokens_left: k
                                .token_budget
                                .filter(|(_, reset)| *reset > now)
                                .map(|(left, _)| left),
                            requests_all_machines: inner
                                .shared
                                .as_ref()
                                .map(|_| k.day_counts().requests_today),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            ProviderSnapshot {
                name: p.config.name.clone(),
                enabled: p.enabled(),
                enabled_in_config: p.config.enabled,
                has_key: !p.keys.is_empty(),
                priority: p.config.priority,
                model: p.config.model.clone(),
                models: p.config.models.clone(),
                state,
                request_count: p.request_count,
                total_requests: p.total_requests,
                total_tokens_used: p.total_tokens,
                is_rate_limited: ready_at.is_some(),
                rate_limited_until: ready_at.map(rfc3339),
                cooldown_remaining_secs: ready_at.map_or(0, |t| secs_until(t, now)),
                cooldown_reason: reason.map(|c| c.words(now)),
                cooldown_cause: reason.map(Cause::kind),
                last_error: p.last_error.clone(),
                last_error_kind: p.last_error.as_ref().and(p.last_error_kind),
                keys,
                model_in_use: p.model_in_use().map(str::to_string),
                preferred: p.config.preferred.clone(),
                retired_models: p.retired.clone(),
                gone: p.gone.clone(),
                oversized_events: p.oversized_events,
                catalog_fetched_at: p.catalog.as_ref().map(|c| rfc3339(c.fetched_at)),
                catalog_models: p.catalog.as_ref().map_or(0, |c| c.models.len()),
                offers: p.catalog.as_ref().map_or_else(Vec::new, |c| {
                    let mut out: Vec<String> = Vec::new();
                    for m in c.added.iter().chain(&c.models) {
                        if out.len() == OFFERS_SHOWN {
                            break;
                        }
                        if !p.retired.contains_key(m) && !c.shut_down(m) && !out.contains(m) {
                            out.push(m.clone());
                        }
                    }
                    out
                }),
                headroom,
                runs_out_at,
                request_count_all_machines: all_machines,
            }
        })
        .collect();
    let counted: Vec<u64> = providers
        .iter()
        .filter(|p| {
            matches!(
                p.state,
                ProviderStateKind::Ready | ProviderStateKind::CoolingDown
            )
        })
        .filter_map(|p| p.headroom.requests_today.map(|d| d.left))
        .collect();
    let pool_headroom = PoolHeadroom {
        requests_left_today: (!counted.is_empty()).then(|| counted.iter().sum()),
        providers: counted.len(),
    };
    Snapshot {
        providers,
        key_store: inner.key_note.clone(),
        config: ConfigSnapshot {
            path: inner.config_path.clone(),
            last_error: inner.config_error.clone(),
        },
        generated_at: rfc3339(now),
        waiting: inner.waiting,
        state_error: inner.state_error.clone(),
        headroom: pool_headroom,
        shared: inner.shared.as_ref().map(|s| SharedSnapshot {
            pool: s.pool.clone(),
            server: s.server.clone(),
            state: if s.online { "online" } else { "offline" }.to_string(),
            since: rfc3339(s.since),
            error: s.error.clone(),
            machines: s
                .machines
                .iter()
                .map(|(name, this, seen)| SharedMachine {
                    name: name.clone(),
                    this: *this,
                    last_seen: rfc3339(*seen),
                    last_seen_secs: secs_until(now, *seen),
                })
                .collect(),
        }),
    }
}
