//! What the agent remembers about the traffic it served, for `GET /metrics` and the
//! dashboard: Prometheus counters and a latency histogram ([`metrics`]), hourly buckets
//! per provider ([`series`]) and the last requests ([`recent`]). The rotation core tells
//! it about attempts, rotations, cooldowns and answers; it never sees a prompt, a
//! completion or a key (keys are named by their index among the provider's keys).
//!
//! Recording is cheap: counters are atomics behind a label lookup that allocates only the
//! first time a label set is seen, the series and the ring are behind `std` mutexes held
//! for a few hundred nanoseconds, and nothing is recorded per streamed chunk (a stream's
//! tokens are counted once, when it ends). Provider state (cooldowns, toggles, waiting
//! requests) is not kept here: it is read from the pool's snapshot when asked for.

pub mod metrics;
pub mod recent;
pub mod series;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::pool::{Attempt, Outcome, Snapshot};
use crate::proxy::rotate::echo;

/// The client-facing API a request came in on (the `route` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiRoute {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions` (legacy).
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/responses` (OpenAI Responses).
    Responses,
    /// `/v1/messages` (Anthropic Messages).
    Messages,
}

impl ApiRoute {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRoute::ChatCompletions => "chat_completions",
            ApiRoute::Completions => "completions",
            ApiRoute::Embeddings => "embeddings",
            ApiRoute::Responses => "responses",
            ApiRoute::Messages => "messages",
        }
    }
}

/// Why an attempt moved a request on or rested a key: a small fixed set (the `reason`
/// label of rotations and cooldowns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// HTTP 429.
    RateLimited,
    /// A daily quota or a request allowance that refills at a known time.
    QuotaExhausted,
    /// A successful answer whose rate-limit headers said the allowance is used up.
    AllowanceUsed,
    /// The key was rejected.
    AuthFailed,
    /// Billing (402).
    PaymentRequired,
    /// 5xx, timeouts, broken connections, broken answers.
    Transient,
    /// The model is retired or the key may not use it.
    ModelUnavailable,
    /// The provider's endpoint is gone (410).
    ProviderGone,
    /// A stream event larger than allowed.
    OversizedEvent,
}

impl Reason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::QuotaExhausted => "quota_exhausted",
            Reason::AllowanceUsed => "allowance_used",
            Reason::AuthFailed => "auth_failed",
            Reason::PaymentRequired => "payment_required",
            Reason::Transient => "transient",
            Reason::ModelUnavailable => "model_unavailable",
            Reason::ProviderGone => "provider_gone",
            Reason::OversizedEvent => "oversized_event",
        }
    }

    /// Why a failed attempt failed; `None` for a success or a relayed client error.
    pub fn of(outcome: &Outcome) -> Option<Reason> {
        Some(match outcome {
            Outcome::Success { .. } | Outcome::Relayed { .. } => return None,
            Outcome::RateLimited { .. } => Reason::RateLimited,
            Outcome::QuotaExhausted { .. } => Reason::QuotaExhausted,
            Outcome::AuthFailed { .. } => Reason::AuthFailed,
            Outcome::PaymentRequired { .. } => Reason::PaymentRequired,
            Outcome::Transient { .. } => Reason::Transient,
            Outcome::ModelRetired { .. } | Outcome::NotInTier { .. } => Reason::ModelUnavailable,
            Outcome::ProviderGone { .. } => Reason::ProviderGone,
        })
    }

    /// Whether the pool rests the key for this reason (a cooldown).
    pub fn cools(self) -> bool {
        matches!(
            self,
            Reason::RateLimited
                | Reason::QuotaExhausted
                | Reason::AllowanceUsed
                | Reason::PaymentRequired
                | Reason::Transient
                | Reason::OversizedEvent
        )
    }
}

/// The `outcome` label of an attempt.
pub fn attempt_outcome(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Success { .. } => "success",
        Outcome::Relayed { .. } => "client_error",
        other => Reason::of(other).map_or("failed", Reason::as_str),
    }
}

/// The `outcome` label of a request, from the status the client got.
pub fn request_outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        429 => "rate_limited",
        400..=499 => "client_error",
        503 => "unavailable",
        _ => "failed",
    }
}

/// One request's identity between its answer and the end of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Its id in the list of recent requests.
    pub id: u64,
    /// The API it came in on.
    pub route: ApiRoute,
}

/// A request as it was answered (or refused), for the counters, the series and the ring.
#[derive(Debug, Clone)]
pub struct Answered<'a> {
    /// Which request.
    pub tally: Tally,
    /// Who answered, with which model; `None` when no provider did.
    pub answered_by: Option<(&'a str, &'a str)>,
    /// The model the client asked for (or "auto").
    pub model: &'a str,
    /// Providers tried, in order.
    pub tried: &'a [String],
    /// The status the client got.
    pub status: u16,
    /// Until the answer started (for a stream, its first event).
    pub latency: Duration,
    /// Tokens, when known now (a stream's come when it ends).
    pub tokens: Option<u64>,
    /// Whether the answer is a stream.
    pub stream: bool,
}

/// The agent's traffic memory. Shared by every serving thread (`Arc` in the engine).
pub struct Telemetry {
    metrics: metrics::Metrics,
    series: Mutex<series::Series>,
    recent: Mutex<recent::Recent>,
    next_id: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            metrics: metrics::Metrics::new(),
            series: Mutex::new(series::Series::default()),
            recent: Mutex::new(recent::Recent::default()),
            next_id: AtomicU64::new(1),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these are held; a poisoned one still holds valid counts.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Telemetry {
    /// A fresh id and identity for a request on `route`.
    pub fn begin(&self, route: ApiRoute) -> Tally {
        Tally {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            route,
        }
    }

    /// One attempt's outcome (after the pool heard it).
    pub fn attempt(&self, attempt: &Attempt, outcome: &Outcome, now: DateTime<Utc>) {
        self.metrics.attempt(attempt, attempt_outcome(outcome));
        if let Some(reason) = Reason::of(outcome) {
            if reason.cools() {
                self.metrics.cooldown(&attempt.provider.name, reason);
            }
        }
        if matches!(outcome, Outcome::RateLimited { .. }) {
            lock(&self.series)
                .bucket(&attempt.provider.name, now)
                .rate_limited();
        }
    }

    /// A request moved on to another provider or key after a failed attempt.
    pub fn rotation(&self, reason: Reason) {
        self.metrics.rotation(reason);
    }

    /// A key was rested for a reason the rotation loop does not see as an attempt's
    /// outcome (an allowance used up, an oversized stream event).
    pub fn cooldown(&self, provider: &str, reason: Reason) {
        self.metrics.cooldown(provider, reason);
    }

    /// A request answered or refused.
    pub fn answered(&self, a: &Answered<'_>, now: DateTime<Utc>) {
        let (provider, model) = a.answered_by.unwrap_or(("none", "none"));
        self.metrics.request(
            provider,
            model,
            a.tally.route,
            request_outcome(a.status),
            a.latency,
        );
        if let Some(t) = a.tokens.filter(|t| *t > 0) {
            self.metrics.tokens(provider, model, a.tally.route, t);
        }
        if a.answered_by.is_some() {
            let latency_ms = u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX);
            lock(&self.series)
                .bucket(provider, now)
                .answered(a.tokens.unwrap_or(0), latency_ms);
        }
        lock(&self.recent).push(recent::RecentRequest {
            id: a.tally.id,
            at: now,
            route: a.tally.route.as_str(),
            model: a.model.to_string(),
            answered_by: a.answered_by.map(|(_, m)| echo(m).to_string()),
            providers: a.tried.to_vec(),
            status: a.status,
            latency_ms: u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX),
            tokens: a.tokens,
            stream: a.stream,
        });
    }

    /// A stream ended having used `tokens` (counted once, when it is over).
    pub fn stream_tokens(&self, tally: Tally, attempt: &Attempt, tokens: u64, now: DateTime<Utc>) {
        self.metrics
            .tokens(&attempt.provider.name, &attempt.model, tally.route, tokens);
        lock(&self.series)
            .bucket(&attempt.provider.name, now)
            .add_tokens(tokens);
        lock(&self.recent).set_tokens(tally.id, tokens);
    }

    /// `GET /metrics`: every counter, and the provider gauges read from `snapshot`.
    pub fn render_metrics(&self, snapshot: &Snapshot) -> String {
        self.metrics.render(snapshot)
    }

    /// Hourly buckets per provider over the last `hours` (at most 30 days). The one seam
    /// the dashboard's charts read, so a persistent history can feed them later.
    pub fn series(&self, hours: u32, now: DateTime<Utc>) -> series::SeriesView {
        lock(&self.series).view(hours, now)
    }

    /// The last requests, newest first.
    pub fn recent(&self) -> Vec<recent::RecentRequest> {
        lock(&self.recent).newest_first()
    }
}
