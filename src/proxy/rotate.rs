//! The rotation core: the one owner of the attempt loop (pick, shape, send, classify,
//! report) and the only code that writes to the pool for a request. Front-ends (chat
//! completions, and the translators over it) parse their request into a [`ChatBody`], call
//! [`rotate`], and render the [`Answer`] or the [`ApiError`] in their own wire format.
//!
//! A request goes to the best eligible provider; rate limits, auth failures, retired
//! models and transient errors move it on to the next one, as long as nothing has reached
//! the client yet. When everything is cooling down but back soon, it waits (see
//! [`super::wait`]). Every failed attempt is kept as data ([`Failed`]) until the edge
//! renders the aggregate. Sending sits behind [`Sender`], so the policy is tested without
//! sockets. Prompts and completions are never logged.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use chrono::Utc;

use super::body::ChatBody;
use super::{contract, stream, wait};
use crate::engine::Engine;
use crate::http::error::ApiError;
use crate::pool::{route_for, route_for_embeddings, Attempt, Outcome, Unavailable};
use crate::telemetry::{Answered, ApiRoute, Reason, Tally};
use crate::upstream::{self, limits, Endpoint, SendFailure, Verdict};

/// Sends one attempt upstream: the seam between the rotation policy and the network.
pub trait Sender: Sync {
    /// Sends `body` for `attempt` to `endpoint`; `Err` when no HTTP response came within
    /// `timeout`.
    fn send<'a>(
        &'a self,
        attempt: &'a Attempt,
        endpoint: Endpoint,
        body: Bytes,
        stream: bool,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<reqwest::Response, SendFailure>> + Send + 'a>>;
}

/// The real sender: the serving thread's HTTP client.
pub struct Http<'c>(pub &'c reqwest::Client);

impl Sender for Http<'_> {
    fn send<'a>(
        &'a self,
        attempt: &'a Attempt,
        endpoint: Endpoint,
        body: Bytes,
        stream: bool,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<reqwest::Response, SendFailure>> + Send + 'a>> {
        Box::pin(upstream::send(
            self.0, attempt, endpoint, body, stream, timeout,
        ))
    }
}

/// A stream of chat-completions SSE events, checked, fixed and masked, as they arrive.
pub type ChatEvents =
    Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send>>;

/// What answered, and how.
pub struct Answer {
    /// The attempt that answered (provider, key, model).
    pub attempt: Attempt,
    /// The answer.
    pub body: AnswerBody,
}

/// The answer itself.
pub enum AnswerBody {
    /// A whole chat completion (with `usage` and `finish_reason` made sure of).
    Json {
        /// The provider's status (a 2xx).
        status: StatusCode,
        /// Its content type.
        content_type: HeaderValue,
        /// The completion.
        body: Bytes,
    },
    /// A stream of chat-completion events.
    Stream {
        /// Its content type.
        content_type: HeaderValue,
        /// The events.
        events: ChatEvents,
    },
    /// A provider error that is the request's fault (400, 404, 413, 422...), relayed.
    Relayed {
        /// The provider's status.
        status: StatusCode,
        /// Its content type.
        content_type: HeaderValue,
        /// Its body.
        body: Bytes,
    },
}

impl AnswerBody {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            AnswerBody::Json { status, .. } | AnswerBody::Relayed { status, .. } => *status,
            AnswerBody::Stream { .. } => StatusCode::OK,
        }
    }
}

/// A response's content type, or `fallback`.
pub(super) fn content_type(
    headers: &reqwest::header::HeaderMap,
    fallback: &'static str,
) -> HeaderValue {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static(fallback))
}

/// Serves one chat-completions request: picks, shapes, sends, classifies and reports
/// each attempt until one answers, or until nothing can (then the aggregate of every
/// failure, as the edge error). The only code that writes to the pool for a request;
/// after the first byte of a stream, the stream's own handle reports tokens and its end.
pub async fn rotate(
    engine: &Engine,
    sender: &dyn Sender,
    chat: &ChatBody<'_>,
    endpoint: Endpoint,
    api: ApiRoute,
) -> Result<Answer, ApiError> {
    rotate_with(engine, sender, chat, endpoint, api, None).await
}

/// Like [`rotate`], for a legacy completions request translated to `chat`: providers that
/// serve `/completions` themselves (`legacy_completions = true`) get `native` (the
/// client's own body) there instead, and answer in that format (the answer's attempt
/// says which).
pub async fn rotate_with(
    engine: &Engine,
    sender: &dyn Sender,
    chat: &ChatBody<'_>,
    endpoint: Endpoint,
    api: ApiRoute,
    native: Option<&ChatBody<'_>>,
) -> Result<Answer, ApiError> {
    let config = engine.config();
    let started = Instant::now();
    crate::memory::note_activity();
    let tally = engine.telemetry.begin(api);
    // Why the last attempt failed, until the next one goes out (then it was a rotation).
    let mut rotating: Option<Reason> = None;
    let route = match endpoint {
        Endpoint::Chat | Endpoint::Completions => route_for(chat.model(), &config.providers),
        Endpoint::Embeddings => route_for_embeddings(chat.model(), &config.providers),
    };
    let stream = chat.stream() && endpoint == Endpoint::Chat;
    let routing = &config.routing;
    // A streaming client hears nothing until the first event is relayed: every wait
    // (sending, rotating, the first event) comes out of this one budget, kept under the
    // 120 s after which clients such as Osaurus give up on a silent stream.
    let start_deadline = tokio::time::Instant::now() + routing.stream_start_timeout;
    let need_tokens = chat.max_tokens();
    let usage_for = chat.include_usage().then(|| chat.prompt_estimate());
    let mut tried: Vec<u64> = Vec::new();
    let mut failures: Vec<Failed> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    // Whether some attempt failed for another reason than a rate limit (then the client
    // gets a 502 listing the attempts rather than a 429).
    let mut hard_failure = false;
    // Why the loop stopped early: the start budget ran out.
    let mut timed_out: Option<String> = None;
    // A non-streaming request has one budget too, across every attempt, until a
    // provider's answer starts: clients such as Osaurus give up after 300 s.
    let answer_deadline = tokio::time::Instant::now() + routing.request_start_timeout;
    let budget_deadline = if stream {
        start_deadline
    } else {
        answer_deadline
    };
    let wait_for = |limit: std::time::Duration| {
        limit.min(budget_deadline.saturating_duration_since(tokio::time::Instant::now()))
    };
    // Waiting for a cooling provider ends this long after the request came (for a
    // stream, early enough in its start budget to still be sent).
    let wait_deadline = {
        let by = tokio::time::Instant::now() + routing.max_wait;
        if stream {
            by.min(start_deadline - STREAM_SEND_RESERVE.min(routing.stream_start_timeout))
        } else {
            by
        }
    };
    let mut seat: Option<wait::Seat> = None;
    let mut attempts = 0usize;
    // Failed attempts already looked at for a rotation (see the usage history).
    let mut rotations_noted = 0usize;
    loop {
        loop {
            if routing.max_attempts > 0 && attempts >= routing.max_attempts {
                break;
            }
            if wait_for(routing.first_byte_timeout).is_zero() {
                hard_failure = true;
                timed_out = Some(if stream {
                    format!(
                        "no provider started answering within routing.stream_start_timeout_secs ({}s)",
                        routing.stream_start_timeout.as_secs()
                    )
                } else {
                    format!(
                        "no provider started answering within routing.request_start_timeout_secs ({}s)",
                        routing.request_start_timeout.as_secs()
                    )
                });
                break;
            }
            let Some(attempt) = engine
                .pool
                .pick_for(&route, &tried, need_tokens, Utc::now())
            else {
                break;
            };
            // Going on: the next waiting request for this route may go too.
            seat = None;
            if let Some(reason) = rotating.take() {
                engine.telemetry.rotation(reason);
            }
            // A request that moves on from a failed attempt is a rotation away from it.
            if let Some(last) = failures.get(rotations_noted..).and_then(<[Failed]>::last) {
                if last.attempt.key_id != attempt.key_id || last.attempt.model != attempt.model {
                    engine.history.rotation(&last.attempt, Utc::now());
                }
            }
            rotations_noted = failures.len();
            attempts += 1;
            tried.push(attempt.key_id);
            names.push(attempt.provider.name.clone());
            // One retry without a parameter the provider named in a 400/422.
            let mut also_drop: Vec<String> = Vec::new();
            let outcome = loop {
                let native_here = native.filter(|_| attempt.provider.legacy_completions);
                let endpoint = if native_here.is_some() {
                    Endpoint::Completions
                } else {
                    endpoint
                };
                let upstream_body = match (endpoint, native_here) {
                    // The provider's own legacy completions: the client's body as sent.
                    (_, Some(native)) => native.with_model(&attempt.model),
                    (Endpoint::Chat, _) => {
                        chat.shaped(&attempt.model, &attempt.provider.quirks, &also_drop)
                    }
                    // Embeddings go as the client sent them, with the provider's model.
                    (Endpoint::Embeddings | Endpoint::Completions, _) => {
                        chat.with_model(&attempt.model)
                    }
                };
                let sent_at = Instant::now();
                let sent = sender
                    .send(
                        &attempt,
                        endpoint,
                        upstream_body,
                        stream,
                        wait_for(routing.first_byte_timeout),
                    )
                    .await;
                let resp = match sent {
                    Ok(r) => r,
                    Err(fail) => break fail.outcome(),
                };
                let status = resp.status();
                if status.is_success() {
                    proactive_rotation(engine, &attempt, resp.headers());
                    let result = if stream {
                        stream::relay(
                            engine,
                            &attempt,
                            stream::Sent { tally, at: sent_at },
                            resp,
                            wait_for(routing.first_byte_timeout),
                            routing.stream_idle_timeout,
                            usage_for,
                        )
                        .await
                        .map(|body| (body, None))
                    } else {
                        relay_json(engine, &attempt, sent_at, resp, routing, endpoint).await
                    };
                    match result {
                        Ok((body, tokens)) => {
                            record(
                                engine,
                                &attempt,
                                &Outcome::Success { tokens },
                                &Answered {
                                    tally,
                                    answered_by: Some((&attempt.provider.name, &attempt.model)),
                                    model: echo(chat.model().unwrap_or("auto")),
                                    tried: &names,
                                    status: body.status().as_u16(),
                                    latency: started.elapsed(),
                                    tokens,
                                    stream,
                                },
                            );
                            log_answered(
                                &names,
                                &attempt.model,
                                body.status().as_u16(),
                                stream,
                                started.elapsed().as_millis() as u64,
                                tokens.unwrap_or(0),
                            );
                            return Ok(Answer { attempt, body });
                        }
                        Err(outcome) => break outcome,
                    }
                }
                // A failure status: read the (small) error body to classify it.
                let headers = resp.headers().clone();
                if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    note_headroom(engine, &attempt, &headers);
                }
                let err_body = match tokio::time::timeout(
                    routing.first_byte_timeout,
                    read_capped(resp, ERROR_BODY_MAX),
                )
                .await
                {
                    Ok(Ok(b)) => b,
                    Ok(Err(Capped::TooLarge)) => {
                        break Outcome::Transient {
                            reason: format!(
                                "HTTP {}: an error body larger than {} KB",
                                status.as_u16(),
                                ERROR_BODY_MAX / 1024
                            ),
                            reached: true,
                        }
                    }
                    Ok(Err(Capped::Broken)) | Err(_) => Bytes::new(),
                };
                match upstream::classify(
                    attempt.provider.quirks.kind,
                    status,
                    &headers,
                    &err_body,
                    attempt.key.as_ref(),
                    Utc::now(),
                ) {
                    Verdict::Rotate(outcome) => break outcome,
                    Verdict::RetryWithout(param)
                        if also_drop.is_empty()
                            && chat.has(&param)
                            && !matches!(param.as_str(), "model" | "messages") =>
                    {
                        tracing::info!(
                            provider = %attempt.provider.name,
                            param = %param,
                            status = status.as_u16(),
                            "provider refused a parameter; retrying once without it"
                        );
                        also_drop.push(param);
                    }
                    Verdict::RetryWithout(_) | Verdict::Relay => {
                        let relayed = Outcome::Relayed {
                            status: status.as_u16(),
                        };
                        report(engine, &attempt, &relayed, None);
                        record(
                            engine,
                            &attempt,
                            &relayed,
                            &Answered {
                                tally,
                                answered_by: Some((&attempt.provider.name, &attempt.model)),
                                model: echo(chat.model().unwrap_or("auto")),
                                tried: &names,
                                status: status.as_u16(),
                                latency: started.elapsed(),
                                tokens: None,
                                stream,
                            },
                        );
                        tracing::info!(
                            providers = %names.join(","),
                            model = %echo(&attempt.model),
                            status = status.as_u16(),
                            attempts,
                            stream,
                            latency_ms = started.elapsed().as_millis() as u64,
                            "request relayed a provider error"
                        );
                        // Relayed as the provider sent it, except for any echo of the key.
                        let body = AnswerBody::Relayed {
                            status: StatusCode::from_u16(status.as_u16())
                                .unwrap_or(StatusCode::BAD_GATEWAY),
                            content_type: content_type(&headers, "application/json"),
                            body: attempt.mask.relay(err_body),
                        };
                        return Ok(Answer { attempt, body });
                    }
                }
            };
            // A retired model is the provider's problem, not the request's: it moves on
            // as after a rate limit.
            hard_failure |= !matches!(
                outcome,
                Outcome::RateLimited { .. }
                    | Outcome::QuotaExhausted { .. }
                    | Outcome::ModelRetired { .. }
                    | Outcome::NotInTier { .. }
                    | Outcome::ProviderGone { .. }
            );
            report(engine, &attempt, &outcome, None);
            engine.telemetry.attempt(&attempt, &outcome, Utc::now());
            rotating = Reason::of(&outcome);
            if matches!(
                outcome,
                Outcome::ModelRetired { .. } | Outcome::NotInTier { .. }
            ) {
                // The key may still serve the next model of the provider's preference
                // list (the pool now skips the one refused), within this same request.
                tried.retain(|k| *k != attempt.key_id);
            }
            failures.push(Failed { attempt, outcome });
        }
        // Nothing can serve it now. When every provider that could is cooling down and the
        // first is back soon enough, wait for it rather than answer 429.
        if hard_failure || (routing.max_attempts > 0 && attempts >= routing.max_attempts) {
            break;
        }
        let Unavailable::AllCooling { retry_after, .. } =
            engine.pool.unavailable(&route, Utc::now())
        else {
            break;
        };
        // Never a busy loop: a provider due back "now" is tried again after a moment.
        let until = tokio::time::Instant::now() + retry_after.max(Duration::from_millis(10));
        if until > wait_deadline {
            break;
        }
        if seat.is_none() {
            seat = engine
                .waiting
                .enter(format!("{route:?}"), routing.max_waiting);
        }
        let Some(s) = &seat else {
            break;
        };
        // Going again after a wait is not a rotation.
        rotating = None;
        if s.wait(until).await.is_err() {
            let err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "shutting_down",
                "llm-rotator is shutting down; retry in a moment",
            );
            refused(engine, tally, chat, &names, &err, started, stream);
            return Err(err);
        }
        // Keys that were tried are back from their cooldown: they may be tried again.
        tried.clear();
    }
    let err = no_provider_error(engine, &route, &failures, timed_out, hard_failure);
    tracing::warn!(
        providers = %names.join(","),
        status = err.status.as_u16(),
        attempts,
        stream,
        latency_ms = started.elapsed().as_millis() as u64,
        "request failed: {}",
        err.code
    );
    refused(engine, tally, chat, &names, &err, started, stream);
    Err(err)
}

/// The pool has heard the attempt's outcome: telemetry hears it and the answer.
fn record(engine: &Engine, attempt: &Attempt, outcome: &Outcome, answered: &Answered<'_>) {
    let now = Utc::now();
    engine.telemetry.attempt(attempt, outcome, now);
    engine.telemetry.answered(answered, now);
}

/// Telemetry hears of a request no provider answered.
fn refused(
    engine: &Engine,
    tally: Tally,
    chat: &ChatBody<'_>,
    tried: &[String],
    err: &ApiError,
    started: Instant,
    stream: bool,
) {
    engine.telemetry.answered(
        &Answered {
            tally,
            answered_by: None,
            model: echo(chat.model().unwrap_or("auto")),
            tried,
            status: err.status.as_u16(),
            latency: started.elapsed(),
            tokens: None,
            stream,
        },
        Utc::now(),
    );
}

/// Of a stream's start budget, what is kept for sending after a wait for a cooling
/// provider: a stream waits at most until this long before its budget runs out.
const STREAM_SEND_RESERVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Most bytes of a provider's error body read (to classify it and relay it).
const ERROR_BODY_MAX: usize = 1024 * 1024;

/// Why a body was not read whole.
enum Capped {
    /// It broke off.
    Broken,
    /// It was larger than allowed.
    TooLarge,
}

/// Reads a response body of at most `max` bytes (the declared length is checked first,
/// then what arrives), so a provider cannot make the agent buffer without bound.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Bytes, Capped> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(Capped::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                let len = first.as_ref().map_or(0, Bytes::len) + more.len() + c.len();
                if len > max {
                    return Err(Capped::TooLarge);
                }
                match &first {
                    // The usual case, a body in one piece: no copy.
                    None if more.is_empty() => first = Some(c),
                    _ => {
                        if let Some(f) = first.take() {
                            more.extend_from_slice(&f);
                        }
                        more.extend_from_slice(&c);
                    }
                }
            }
            Ok(None) => break,
            Err(_) => return Err(Capped::Broken),
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(more)))
}

/// The request line of an answered request. A rotation is worth a line at `info`; a plain
/// first-attempt success goes to `debug`, because formatting it for two sinks and waking
/// the log writer thread costs more CPU than proxying the request (see the benchmark).
fn log_answered(
    names: &[String],
    model: &str,
    status: u16,
    stream: bool,
    latency_ms: u64,
    tokens: u64,
) {
    // One line per answered request in the log file: who was tried, never what was said.
    tracing::info!(
        providers = %names.join(","),
        model = %echo(model),
        status,
        attempts = names.len(),
        stream,
        latency_ms,
        tokens,
        "request"
    );
}

/// Longest client-given text (a model name) echoed in a header or a log line.
const ECHO_MAX: usize = 200;

/// `text` cut to [`ECHO_MAX`] bytes (on a character boundary): a client's 3 MB model name
/// must not become a 3 MB header or log line.
pub(crate) fn echo(text: &str) -> &str {
    if text.len() <= ECHO_MAX {
        return text;
    }
    let mut end = ECHO_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One failed attempt: who, and what happened, kept as data until the edge renders it.
pub struct Failed {
    /// The attempt.
    pub attempt: Attempt,
    /// What happened.
    pub outcome: Outcome,
}

impl Failed {
    /// "provider (key label): what happened", masked.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}): {}",
            self.attempt.provider.name,
            self.attempt.key_label,
            self.attempt.mask.text(&outcome_text(&self.outcome))
        )
    }
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::RateLimited { reason, .. } => format!("rate limited ({reason})"),
        Outcome::AuthFailed { reason } => format!("key rejected ({reason})"),
        Outcome::PaymentRequired { reason } => format!("payment required ({reason})"),
        Outcome::Transient { reason, .. } => reason.clone(),
        Outcome::QuotaExhausted { until, reason } => format!(
            "quota used up until {} ({reason})",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        Outcome::ModelRetired { reason }
        | Outcome::NotInTier { reason }
        | Outcome::ProviderGone { reason } => reason.clone(),
        Outcome::Success { .. } => "ok".into(),
        Outcome::Relayed { status } => format!("HTTP {status}"),
    }
}

fn no_provider_error(
    engine: &Engine,
    route: &crate::pool::Route,
    failed: &[Failed],
    timed_out: Option<String>,
    hard_failure: bool,
) -> ApiError {
    let failures: Vec<String> = failed
        .iter()
        .map(Failed::describe)
        .chain(timed_out)
        .collect();
    if let Some(said) = engine.pool.retired_on_route(route) {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!(
                "no provider serves this model any more ({}); use \"auto\" or a model from GET /v1/models",
                said.join("; ")
            ),
        );
        e.providers = said;
        return e;
    }
    match engine.pool.unavailable(route, Utc::now()) {
        Unavailable::AllCooling {
            retry_after,
            states,
        } if !hard_failure => {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                format!(
                    "every provider that can serve this request is rate limited; the first is ready in {}s ({})",
                    retry_after.as_millis().div_ceil(1000),
                    states.join("; ")
                ),
            );
            e.retry_after = Some(retry_after);
            e.providers = states;
            e
        }
        _ if !failures.is_empty() => {
            let mut e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "all_providers_failed",
                format!("every provider attempt failed: {}", failures.join("; ")),
            );
            e.providers = failures;
            e
        }
        Unavailable::NoneUsable { states } | Unavailable::AllCooling { states, .. } => {
            let what = if states.is_empty() {
                "no configured provider serves this model; use \"auto\" or a model from GET /v1/models".to_string()
            } else {
                format!(
                    "no provider can serve this request ({}). Add a key with `llm-rotator keys set <provider>` or export NAME_API_KEY, or enable a provider",
                    states.join("; ")
                )
            };
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "no_provider_available",
                what,
            );
            e.providers = states;
            e
        }
    }
}

/// Proactive rotation: a successful answer whose rate-limit headers say the allowance is
/// used up (no requests left, or no tokens) benches the key until the window's reset
/// instead of waiting for a 429; the tokens left are remembered so a later request whose
/// `max_tokens` cannot fit prefers another key.
fn proactive_rotation(engine: &Engine, attempt: &Attempt, headers: &reqwest::header::HeaderMap) {
    let now = Utc::now();
    let budget = limits::budget(attempt.provider.quirks.kind, headers, now);
    if let Some((until, daily)) = budget.exhausted_until {
        tracing::info!(
            provider = %attempt.provider.name,
            key = %attempt.key_label,
            back_in_secs = (until - now).num_seconds(),
            daily,
            "allowance used up; resting the key until it refills"
        );
        engine.pool.bench(attempt, until, daily, now);
        engine
            .telemetry
            .cooldown(&attempt.provider.name, Reason::AllowanceUsed);
    }
    // The usual case, a provider that says nothing, costs no lock.
    if budget.tokens.is_some() || !budget.reading.is_empty() {
        engine.pool.note_limits(attempt, &budget, now);
    }
}

/// What a 429's rate-limit headers say is left (often "0 until 02:00"), kept as the key's
/// headroom; the cooldown itself is the classifier's.
fn note_headroom(engine: &Engine, attempt: &Attempt, headers: &reqwest::header::HeaderMap) {
    let now = Utc::now();
    let budget = limits::budget(attempt.provider.quirks.kind, headers, now);
    if budget.tokens.is_some() || !budget.reading.is_empty() {
        engine.pool.note_limits(attempt, &budget, now);
    }
}

/// Relays a successful non-streaming answer, with `usage` and `finish_reason` made sure
/// of; `Err` (the outcome) when its body could not be read or is an error object, so the
/// loop can rotate.
async fn relay_json(
    engine: &Engine,
    attempt: &Attempt,
    sent_at: Instant,
    resp: reqwest::Response,
    routing: &crate::config::RoutingConfig,
    endpoint: Endpoint,
) -> Result<(AnswerBody, Option<u64>), Outcome> {
    let timeout = routing.request_timeout;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let transient = |reason: String| Outcome::Transient {
        reason,
        reached: true,
    };
    let body =
        match tokio::time::timeout(timeout, read_capped(resp, routing.max_response_bytes)).await {
            Err(_) => {
                return Err(transient(format!(
                    "no complete answer within {}s",
                    timeout.as_secs()
                )))
            }
            Ok(Err(Capped::Broken)) => return Err(transient("the answer broke off".into())),
            Ok(Err(Capped::TooLarge)) => {
                return Err(transient(format!(
                    "an answer larger than routing.max_response_bytes ({} bytes)",
                    routing.max_response_bytes
                )))
            }
            Ok(Ok(b)) => b,
        };
    let checked = match endpoint {
        Endpoint::Chat => contract::completion(body),
        // Passed on as they came (the chat contract is for chat answers).
        Endpoint::Embeddings | Endpoint::Completions => contract::embeddings(body),
    };
    let (body, tokens) = match checked {
        contract::Completion::Ok(body, tokens) => (body, tokens),
        contract::Completion::Error(err) => {
            return Err(upstream::classify_stream_error(
                attempt.provider.quirks.kind,
                &err,
                attempt.key.as_ref(),
                Utc::now(),
            ))
        }
        // Nothing has reached the client yet, so a broken answer rotates.
        contract::Completion::NotJson => {
            return Err(transient("the answer is not valid JSON".into()))
        }
    };
    report(
        engine,
        attempt,
        &Outcome::Success {
            tokens: tokens.map(|t| t.total),
        },
        Some(sent_at.elapsed()),
    );
    if let Some(t) = tokens {
        engine.history.tokens(attempt, t, Utc::now());
    }
    // Gateways that echo the request can put the key in an answer too.
    let body = AnswerBody::Json {
        status,
        content_type: ct.unwrap_or(HeaderValue::from_static("application/json")),
        body: attempt.mask.relay(body),
    };
    Ok((body, tokens.map(|t| t.total)))
}

/// Reports an attempt's outcome to the pool and to the usage history (with its latency,
/// send to answer, for a success).
pub(super) fn report(
    engine: &Engine,
    attempt: &Attempt,
    outcome: &Outcome,
    latency: Option<Duration>,
) {
    let now = Utc::now();
    engine.pool.report(attempt, outcome, now);
    engine.history.attempt(attempt, outcome, latency, now);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::Config;

    /// Answers each send from a script (provider name → replies in order), recording
    /// what was sent: the rotation policy without sockets.
    #[derive(Default)]
    struct Scripted {
        replies: Mutex<Vec<(String, u16, &'static str, String)>>,
        sent: Mutex<Vec<(String, String)>>,
    }

    impl Scripted {
        fn reply(self, provider: &str, status: u16, headers: &'static str, body: &str) -> Self {
            self.replies.lock().expect("lock").push((
                provider.into(),
                status,
                headers,
                body.into(),
            ));
            self
        }

        fn sent(&self) -> Vec<(String, String)> {
            self.sent.lock().expect("lock").clone()
        }
    }

    impl Sender for Scripted {
        fn send<'a>(
            &'a self,
            attempt: &'a Attempt,
            _endpoint: Endpoint,
            body: Bytes,
            _stream: bool,
            _timeout: Duration,
        ) -> Pin<Box<dyn Future<Output = Result<reqwest::Response, SendFailure>> + Send + 'a>>
        {
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            self.sent.lock().expect("lock").push((
                attempt.provider.name.clone(),
                sent["model"].as_str().unwrap_or_default().to_string(),
            ));
            let next = {
                let mut r = self.replies.lock().expect("lock");
                let i = r.iter().position(|(p, ..)| *p == attempt.provider.name);
                i.map(|i| r.remove(i))
            };
            Box::pin(async move {
                let Some((_, status, headers, body)) = next else {
                    return Err(SendFailure::Connect);
                };
                let mut b = axum::http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for h in headers.split(';').filter(|h| !h.is_empty()) {
                    if let Some((k, v)) = h.split_once(':') {
                        b = b.header(k.trim(), v.trim());
                    }
                }
                Ok(reqwest::Response::from(b.body(body).expect("response")))
            })
        }
    }

    fn engine(providers: &str) -> Engine {
        let text = format!("[routing]\nmax_wait_secs = 0\n{providers}");
        let config = Config::parse(&text, None).expect("config");
        Engine::new(config, None, Arc::new(crate::secrets::EnvKeys)).expect("engine")
    }

    fn provider(name: &str, priority: u32, model: &str) -> String {
        format!(
            "[[providers]]\nname = \"{name}\"\nbase_url = \"http://127.0.0.1:9/{name}\"\nmodel = {model}\npriority = {priority}\nrequires_key = false\n"
        )
    }

    const OK: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

    async fn ask(engine: &Engine, sender: &Scripted, body: &str) -> Result<Answer, ApiError> {
        let chat = ChatBody::parse(body.as_bytes()).expect("body");
        rotate(
            engine,
            sender,
            &chat,
            Endpoint::Chat,
            ApiRoute::ChatCompletions,
        )
        .await
    }

    #[tokio::test]
    async fn a_429_moves_the_request_to_the_next_provider_and_cools_the_first() {
        let e = engine(&(provider("a", 1, "\"ma\"") + &provider("b", 2, "\"mb\"")));
        let s = Scripted::default()
            .reply("a", 429, "retry-after: 30", "{}")
            .reply("b", 200, "", OK);
        let answer = ask(&e, &s, r#"{"messages":[]}"#)
            .await
            .map_err(|e| e.to_string());
        let answer = answer.expect("answered");
        assert_eq!(answer.attempt.provider.name, "b");
        assert_eq!(
            s.sent(),
            [("a".into(), "ma".into()), ("b".into(), "mb".into())]
        );
        let snap = e.pool.snapshot(Utc::now());
        assert!(snap.providers[0].is_rate_limited);
    }

    #[tokio::test]
    async fn a_retired_model_falls_to_the_next_preferred_one_of_the_same_provider() {
        let e = engine(&provider("a", 1, "[\"old\", \"new\"]"));
        let s = Scripted::default()
            .reply(
                "a",
                404,
                "",
                r#"{"error":{"message":"The model `old` does not exist","code":"model_not_found"}}"#,
            )
            .reply("a", 200, "", OK);
        let answer = ask(&e, &s, r#"{"messages":[]}"#)
            .await
            .map_err(|e| e.to_string());
        assert_eq!(answer.expect("answered").attempt.model, "new");
        assert_eq!(
            s.sent(),
            [("a".into(), "old".into()), ("a".into(), "new".into())]
        );
    }

    #[tokio::test]
    async fn a_request_error_is_relayed_as_the_provider_sent_it_without_rotating() {
        let e = engine(&(provider("a", 1, "\"ma\"") + &provider("b", 2, "\"mb\"")));
        let s = Scripted::default().reply("a", 413, "", r#"{"error":{"message":"too long"}}"#);
        let answer = ask(&e, &s, r#"{"messages":[]}"#)
            .await
            .map_err(|e| e.to_string());
        match answer.expect("answered").body {
            AnswerBody::Relayed { status, body, .. } => {
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
                assert!(String::from_utf8_lossy(&body).contains("too long"));
            }
            _ => panic!("not relayed"),
        }
        assert_eq!(s.sent().len(), 1);
    }

    #[tokio::test]
    async fn when_every_provider_is_cooling_the_aggregate_is_a_429_naming_each() {
        let e = engine(&(provider("a", 1, "\"ma\"") + &provider("b", 2, "\"mb\"")));
        let s = Scripted::default()
            .reply("a", 429, "retry-after: 30", "{}")
            .reply("b", 429, "retry-after: 40", "{}");
        let Err(err) = ask(&e, &s, r#"{"messages":[]}"#).await else {
            panic!("answered");
        };
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        let wait = err.retry_after.map(|d| d.as_millis().div_ceil(1000));
        assert_eq!(wait, Some(30), "the first provider back");
        assert_eq!(err.providers.len(), 2, "{:?}", err.providers);
        // Failures that are not rate limits make it a 502 listing every attempt.
        let e = engine(&(provider("a", 1, "\"ma\"") + &provider("b", 2, "\"mb\"")));
        let s = Scripted::default()
            .reply("a", 500, "", "{}")
            .reply("b", 503, "", "{}");
        let Err(err) = ask(&e, &s, r#"{"messages":[]}"#).await else {
            panic!("answered");
        };
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert!(
            err.message.contains("a (") && err.message.contains("b ("),
            "{err}"
        );
    }
}
