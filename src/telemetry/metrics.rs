//! The Prometheus side of [`super::Telemetry`]: counter families and the latency
//! histogram kept since start, and on each scrape the provider gauges read from the
//! pool's snapshot, all encoded by `prometheus-client` in the Prometheus text format
//! (0.0.4). Every name starts with `llm_rotator_`. Labels name providers, models, routes,
//! outcomes, reasons and a key's index among its provider's keys, never a key.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{ApiRoute, Reason};
use crate::pool::{Attempt, ProviderStateKind, Snapshot};
use crate::proxy::rotate::echo;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Most label sets a family keeps before new models are counted as `model="other"`: a
/// client pinning made-up model names cannot grow the agent's memory without bound.
const MAX_LABEL_SETS: usize = 1000;

/// Every metric name starts with this (and `_`).
const PREFIX: &str = "llm_rotator";

/// Latency buckets, in seconds: a fast local answer to a slow first token.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

const STATES: [ProviderStateKind; 6] = [
    ProviderStateKind::Ready,
    ProviderStateKind::CoolingDown,
    ProviderStateKind::Disabled,
    ProviderStateKind::NoKey,
    ProviderStateKind::AuthFailed,
    ProviderStateKind::ModelRetired,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: String,
    model: String,
    route: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    key: u32,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CooldownLabels {
    provider: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    provider: String,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    provider: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    provider: String,
    key: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    os: &'static str,
    arch: &'static str,
}

fn new_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The counters and the histogram, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    rotations: Family<ReasonLabels, Counter>,
    cooldowns: Family<CooldownLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Label sets created in `requests` and `tokens`, for [`MAX_LABEL_SETS`].
    request_sets: AtomicUsize,
    token_sets: AtomicUsize,
}

/// Adds `by` to the counter of `labels`: one lookup under a read lock when the label set
/// is known (the usual case); a new one is created while fewer than [`MAX_LABEL_SETS`]
/// were, else counted under `model="other"` (`fold` makes that label set).
fn count_bounded<S: Clone + std::hash::Hash + Eq>(
    family: &Family<S, Counter>,
    labels: S,
    by: u64,
    created: &AtomicUsize,
    fold: impl FnOnce(S) -> S,
) {
    if let Some(c) = family.get(&labels) {
        saturating_inc(&c, by);
        return;
    }
    let labels = if created.fetch_add(1, Ordering::Relaxed) < MAX_LABEL_SETS {
        labels
    } else {
        fold(labels)
    };
    saturating_inc(&family.get_or_create(&labels), by);
}

/// Adds `by`, stopping at `u64::MAX` instead of wrapping (a provider reporting absurd
/// token counts cannot make a counter go down).
fn saturating_inc(c: &Counter, by: u64) {
    c.inc_by(by.min(u64::MAX - c.get()));
}

impl Metrics {
    /// Registers every family (empty until something happens) and the build info.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let requests = Family::<RequestLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let attempts = Family::<AttemptLabels, Counter>::default();
        let rotations = Family::<ReasonLabels, Counter>::default();
        let cooldowns = Family::<CooldownLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            new_histogram,
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
            })
            .set(1);
        registry.register(
            "requests",
            "Client requests answered or refused, by the provider and model that answered (none when none did), the API route and the outcome",
            requests.clone(),
        );
        registry.register(
            "tokens",
            "Tokens used by answered requests (a stream's counted when it ends)",
            tokens.clone(),
        );
        registry.register(
            "attempts",
            "Attempts sent to providers, by the key's index among the provider's keys and the outcome",
            attempts.clone(),
        );
        registry.register(
            "rotations",
            "Requests moved on to another provider or key after a failed attempt, by why",
            rotations.clone(),
        );
        registry.register(
            "cooldowns",
            "Keys rested by the pool, by provider and why",
            cooldowns.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time until the answer started (for a stream, its first event), by provider and route",
            latency.clone(),
        );
        registry.register("build_info", "The running build", build);
        Metrics {
            registry,
            requests,
            tokens,
            attempts,
            rotations,
            cooldowns,
            latency,
            request_sets: AtomicUsize::new(0),
            token_sets: AtomicUsize::new(0),
        }
    }

    /// One request answered or refused.
    pub fn request(
        &self,
        provider: &str,
        model: &str,
        route: ApiRoute,
        outcome: &'static str,
        latency: Duration,
    ) {
        let labels = RequestLabels {
            provider: provider.to_string(),
            model: echo(model).to_string(),
            route: route.as_str(),
            outcome,
        };
        count_bounded(&self.requests, labels, 1, &self.request_sets, |l| {
            RequestLabels {
                model: "other".into(),
                ..l
            }
        });
        let latency_labels = LatencyLabels {
            provider: provider.to_string(),
            route: route.as_str(),
        };
        self.latency
            .get_or_create(&latency_labels)
            .observe(latency.as_secs_f64());
    }

    /// Tokens used by a request.
    pub fn tokens(&self, provider: &str, model: &str, route: ApiRoute, tokens: u64) {
        let labels = TokenLabels {
            provider: provider.to_string(),
            model: echo(model).to_string(),
            route: route.as_str(),
        };
        count_bounded(&self.tokens, labels, tokens, &self.token_sets, |l| {
            TokenLabels {
                model: "other".into(),
                ..l
            }
        });
    }

    /// One attempt and its outcome.
    pub fn attempt(&self, attempt: &Attempt, outcome: &'static str) {
        let labels = AttemptLabels {
            provider: attempt.provider.name.clone(),
            key: attempt.key_index,
            outcome,
        };
        // Providers and their keys are few: no bound needed.
        self.attempts.get_or_create(&labels).inc();
    }

    /// A rotation.
    pub fn rotation(&self, reason: Reason) {
        self.rotations
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A cooldown.
    pub fn cooldown(&self, provider: &str, reason: Reason) {
        self.cooldowns
            .get_or_create(&CooldownLabels {
                provider: provider.to_string(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The text a scrape gets: the counters, then the gauges of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let gauges = gauges(snapshot);
        // Text format 0.0.4 has no end marker: two registries encode one after the other.
        let encoded = prometheus_text::encode(&mut out, &self.registry)
            .and_then(|()| prometheus_text::encode(&mut out, &gauges));
        if encoded.is_err() {
            // Writing to a String fails only if a metric's own encoding does.
            tracing::warn!("could not encode every metric; /metrics is incomplete");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The provider gauges as the snapshot says now, in a registry of their own made per
/// scrape: a provider removed by a reload disappears from them.
fn gauges(snap: &Snapshot) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    let state = Family::<StateLabels, Gauge>::default();
    let enabled = Family::<ProviderLabels, Gauge>::default();
    let today = Family::<ProviderLabels, Gauge>::default();
    let cooldown = Family::<ProviderLabels, Gauge>::default();
    let key_cooldown = Family::<KeyLabels, Gauge>::default();
    let headroom = Family::<KeyLabels, Gauge>::default();
    for p in &snap.providers {
        let provider = || ProviderLabels {
            provider: p.name.clone(),
        };
        for s in STATES {
            state
                .get_or_create(&StateLabels {
                    provider: p.name.clone(),
                    state: s.as_str(),
                })
                .set(i64::from(p.state == s));
        }
        enabled.get_or_create(&provider()).set(i64::from(p.enabled));
        today
            .get_or_create(&provider())
            .set(i64::try_from(p.request_count).unwrap_or(i64::MAX));
        cooldown
            .get_or_create(&provider())
            .set(i64::try_from(p.cooldown_remaining_secs).unwrap_or(i64::MAX));
        for (i, k) in p.keys.iter().enumerate() {
            let key = KeyLabels {
                provider: p.name.clone(),
                key: u32::try_from(i).unwrap_or(u32::MAX),
            };
            key_cooldown
                .get_or_create(&key)
                .set(i64::try_from(k.cooldown_remaining_secs).unwrap_or(i64::MAX));
            if let Some(left) = k.tokens_left {
                headroom
                    .get_or_create(&key)
                    .set(i64::try_from(left).unwrap_or(i64::MAX));
            }
        }
    }
    r.register(
        "provider_state",
        "1 for the state each provider is in now (ready, cooling_down, disabled, no_key, auth_failed, model_retired), 0 for the others",
        state,
    );
    r.register(
        "provider_enabled",
        "Whether the provider is switched on",
        enabled,
    );
    r.register(
        "provider_requests_today",
        "Requests sent to the provider today (local day)",
        today,
    );
    r.register(
        "provider_cooldown_remaining_seconds",
        "Seconds until a cooling provider is ready again (0 when it is not cooling)",
        cooldown,
    );
    r.register(
        "key_cooldown_remaining_seconds",
        "Seconds until a cooling key is ready again, by the key's index among its provider's keys",
        key_cooldown,
    );
    r.register(
        "key_tokens_remaining",
        "Tokens left in the key's current rate-limit window, from the provider's last rate-limit headers (only while known)",
        headroom,
    );
    let waiting = Gauge::<i64>::default();
    waiting.set(i64::try_from(snap.waiting).unwrap_or(i64::MAX));
    r.register(
        "waiting_requests",
        "Requests waiting for a provider to come back from its cooldown",
        waiting,
    );
    let config_error = Gauge::<i64>::default();
    config_error.set(i64::from(snap.config.last_error.is_some()));
    r.register(
        "config_error",
        "1 while the config file on disk has an error and the last good one is in use",
        config_error,
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_registry_still_names_the_build() {
        let m = Metrics::new();
        let snap = Snapshot {
            providers: Vec::new(),
            key_store: None,
            config: crate::pool::ConfigSnapshot {
                path: None,
                last_error: None,
            },
            generated_at: String::new(),
            headroom: Default::default(),
            shared: None,
            waiting: 3,
            state_error: None,
        };
        let text = m.render(&snap);
        assert!(
            text.contains(&format!(
                "llm_rotator_build_info{{version=\"{}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("llm_rotator_waiting_requests 3\n"), "{text}");
        // Families with nothing counted yet are left out.
        assert!(!text.contains("llm_rotator_requests_total"), "{text}");
    }

    #[test]
    fn absurd_token_counts_saturate_and_huge_model_names_are_cut() {
        let m = Metrics::new();
        let huge = "m".repeat(100_000);
        for _ in 0..2 {
            m.tokens("p", &huge, ApiRoute::ChatCompletions, u64::MAX);
        }
        let labels = TokenLabels {
            provider: "p".into(),
            model: echo(&huge).to_string(),
            route: "chat_completions",
        };
        assert_eq!(m.tokens.get(&labels).map(|c| c.get()), Some(u64::MAX));
        assert!(labels.model.len() <= 200);
    }

    #[test]
    fn made_up_models_past_the_label_set_bound_are_counted_as_other() {
        let m = Metrics::new();
        for i in 0..MAX_LABEL_SETS + 5 {
            m.request(
                "p",
                &format!("m{i}"),
                ApiRoute::ChatCompletions,
                "ok",
                Duration::from_millis(1),
            );
        }
        let last = RequestLabels {
            provider: "p".into(),
            model: format!("m{}", MAX_LABEL_SETS - 1),
            route: "chat_completions",
            outcome: "ok",
        };
        assert_eq!(m.requests.get(&last).map(|c| c.get()), Some(1));
        let other = RequestLabels {
            provider: "p".into(),
            model: "other".into(),
            route: "chat_completions",
            outcome: "ok",
        };
        assert_eq!(m.requests.get(&other).map(|c| c.get()), Some(5));
    }
}
