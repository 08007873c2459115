//! The OpenAI-compatible endpoints and the rotation loop: the only caller of
//! [`Pool::pick`](crate::pool::Pool::pick) and [`Pool::report`](crate::pool::Pool::report).
//! A request goes to the best eligible provider; rate limits, auth failures and transient
//! errors move it on to the next one, as long as nothing has reached the client yet.
//! Prompts and completions are never logged.

pub mod body;
mod contract;
pub mod error;
pub mod sse;
mod stream;
pub mod wait;

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::engine::Engine;
use crate::pool::{route_for, Attempt, Outcome, Unavailable};
use crate::upstream::{self, limits, Verdict};
use body::{BodyError, ChatBody};
use error::ApiError;

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

/// `X-Provider`: who answered.
pub const X_PROVIDER: &str = "x-provider";
/// `X-Model`: which model answered.
pub const X_MODEL: &str = "x-model";

/// Reads the request body up to the configured limit.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_big = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_big {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!("the request body is larger than server.max_body_bytes ({limit} bytes)"),
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(engine): State<Engine>, body: Body) -> Response {
    let config = engine.config();
    let bytes = match read_body(body, config.server.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let chat = match ChatBody::parse(&bytes) {
        Ok(c) => c,
        Err(e) => return body_error(&e).into_response(),
    };
    let started = Instant::now();
    let route = route_for(chat.model(), &config.providers);
    let stream = chat.stream();
    let routing = &config.routing;
    // A streaming client hears nothing until the first event is relayed: every wait
    // (sending, rotating, the first event) comes out of this one budget, kept under the
    // 120 s after which clients such as Osaurus give up on a silent stream.
    let start_deadline = tokio::time::Instant::now() + routing.stream_start_timeout;
    let need_tokens = chat.max_tokens();
    let usage_for = chat.include_usage().then(|| chat.prompt_estimate());
    let mut tried: Vec<u64> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    // Whether some attempt failed for another reason than a rate limit (then the client
    // gets a 502 listing the attempts rather than a 429).
    let mut hard_failure = false;
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
    loop {
        loop {
            if routing.max_attempts > 0 && attempts >= routing.max_attempts {
                break;
            }
            if wait_for(routing.first_byte_timeout).is_zero() {
                hard_failure = true;
                failures.push(if stream {
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
            attempts += 1;
            tried.push(attempt.key_id);
            names.push(attempt.provider.name.clone());
            // One retry without a parameter the provider named in a 400/422.
            let mut also_drop: Vec<String> = Vec::new();
            let outcome = loop {
                let upstream_body =
                    chat.shaped(&attempt.model, &attempt.provider.quirks, &also_drop);
                let sent = upstream::send(
                    &engine.client,
                    &attempt,
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
                    proactive_rotation(&engine, &attempt, resp.headers());
                    let result = if stream {
                        stream::relay(
                            &engine,
                            &attempt,
                            resp,
                            wait_for(routing.first_byte_timeout),
                            routing.stream_idle_timeout,
                            usage_for,
                        )
                        .await
                        .map(|r| (r, None))
                    } else {
                        relay_json(&engine, &attempt, resp, routing).await
                    };
                    match result {
                        Ok((response, tokens)) => {
                            log_answered(
                                &names,
                                &attempt.model,
                                response.status().as_u16(),
                                stream,
                                started.elapsed().as_millis() as u64,
                                tokens.unwrap_or(0),
                            );
                            return response;
                        }
                        Err(outcome) => break outcome,
                    }
                }
                // A failure status: read the (small) error body to classify it.
                let headers = resp.headers().clone();
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
                        engine.pool.report(
                            &attempt,
                            &Outcome::Relayed {
                                status: status.as_u16(),
                            },
                            Utc::now(),
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
                        return relay_error(&attempt, status, &headers, err_body);
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
            failures.push(describe(&attempt, &outcome_text(&outcome)));
            engine.pool.report(&attempt, &outcome, Utc::now());
            if matches!(
                outcome,
                Outcome::ModelRetired { .. } | Outcome::NotInTier { .. }
            ) {
                // The key may still serve the next model of the provider's preference
                // list (the pool now skips the one refused), within this same request.
                tried.retain(|k| *k != attempt.key_id);
            }
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
        let until = tokio::time::Instant::now() + retry_after;
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
        if s.wait(until).await.is_err() {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "shutting_down",
                "llm-rotator is shutting down; retry in a moment",
            )
            .into_response();
        }
        // Keys that were tried are back from their cooldown: they may be tried again.
        tried.clear();
    }
    let err = no_provider_error(&engine, &route, &failures, hard_failure);
    tracing::warn!(
        providers = %names.join(","),
        status = err.status.as_u16(),
        attempts,
        stream,
        latency_ms = started.elapsed().as_millis() as u64,
        "request failed: {}",
        err.code
    );
    err.into_response()
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
fn echo(text: &str) -> &str {
    if text.len() <= ECHO_MAX {
        return text;
    }
    let mut end = ECHO_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn describe(attempt: &Attempt, what: &str) -> String {
    format!(
        "{} ({}): {}",
        attempt.provider.name,
        attempt.key_label,
        attempt.mask.text(what)
    )
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

fn body_error(e: &BodyError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

fn no_provider_error(
    engine: &Engine,
    route: &crate::pool::Route,
    failures: &[String],
    hard_failure: bool,
) -> ApiError {
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
            e.providers = failures.to_vec();
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

fn provider_headers(h: &mut HeaderMap, attempt: &Attempt) {
    if let Ok(v) = HeaderValue::from_str(&attempt.provider.name) {
        h.insert(X_PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(echo(&attempt.model)) {
        h.insert(X_MODEL, v);
    }
}

fn relay_error(
    attempt: &Attempt,
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: Bytes,
) -> Response {
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    // Relayed as the provider sent it, except for any echo of the key it was sent.
    let body = attempt.mask.relay(body);
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let ct = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    provider_headers(resp.headers_mut(), attempt);
    resp
}

/// `usage` as providers report it.
#[derive(Deserialize)]
pub(crate) struct Usage {
    total_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl Usage {
    pub(crate) fn total(&self) -> u64 {
        self.total_tokens.unwrap_or_else(|| {
            self.prompt_tokens
                .unwrap_or(0)
                .saturating_add(self.completion_tokens.unwrap_or(0))
        })
    }

    /// Prompt, completion and total, when the provider gave at least the first two.
    pub(crate) fn whole(&self) -> Option<(u64, u64, u64)> {
        let (p, c) = (self.prompt_tokens?, self.completion_tokens?);
        Some((p, c, self.total_tokens.unwrap_or(p.saturating_add(c))))
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
    }
    if let Some((left, reset)) = budget.tokens {
        engine.pool.set_token_budget(attempt, left, reset);
    }
}

/// Relays a successful non-streaming answer, with `usage` and `finish_reason` made sure
/// of; `Err` (the outcome) when its body could not be read or is an error object, so the
/// loop can rotate.
async fn relay_json(
    engine: &Engine,
    attempt: &Attempt,
    resp: reqwest::Response,
    routing: &crate::config::RoutingConfig,
) -> Result<(Response, Option<u64>), Outcome> {
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
    let (body, tokens) = match contract::completion(body) {
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
    engine
        .pool
        .report(attempt, &Outcome::Success { tokens }, Utc::now());
    // Gateways that echo the request can put the key in an answer too.
    let mut out = Response::new(Body::from(attempt.mask.relay(body)));
    *out.status_mut() = status;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        ct.unwrap_or(HeaderValue::from_static("application/json")),
    );
    provider_headers(out.headers_mut(), attempt);
    Ok((out, tokens))
}

/// `GET /v1/models`: "auto" plus every configured model, OpenAI list format. Answers even
/// with no key set.
pub async fn models(State(engine): State<Engine>) -> Response {
    let config = engine.config();
    // From memory only: never the network, never a 429 or 503 (Osaurus takes those for
    // a failed connection).
    let offered = engine.pool.offered_models();
    let mut seen = std::collections::HashSet::new();
    let mut data =
        vec![json!({"id": "auto", "object": "model", "created": 0, "owned_by": "llm-rotator"})];
    seen.insert("auto".to_string());
    for p in &config.providers {
        let Some(o) = offered.get(&p.name) else {
            continue;
        };
        for m in p.configured_models() {
            if o.serves(m) && seen.insert(m.clone()) {
                data.push(json!({"id": m, "object": "model", "created": 0, "owned_by": p.name}));
            }
        }
    }
    for p in config.providers.iter().filter(|p| p.list_all_models) {
        let Some(o) = offered.get(&p.name) else {
            continue;
        };
        for m in &o.catalog {
            let id = format!("{}/{m}", p.name);
            if seen.insert(id.clone()) {
                data.push(json!({"id": id, "object": "model", "created": 0, "owned_by": p.name}));
            }
        }
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
