//! The OpenAI-compatible endpoints (`/v1/chat/completions`, `/v1/models`) as thin
//! handlers over the rotation core ([`rotate`]), plus what every front-end shares: the
//! request body reader, the chat body ([`body`]), the client contract, the stream relay,
//! and the edge error ([`crate::http::error`]).

pub mod body;
mod contract;
pub mod events;
pub mod legacy;
pub mod rotate;
pub mod sse;
mod stream;
pub mod wait;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::engine::Engine;
use crate::http::error::ApiError;
use crate::pool::Attempt;
use body::{BodyError, ChatBody};
use rotate::{echo, AnswerBody};

/// `X-Provider`: who answered.
pub const X_PROVIDER: &str = "x-provider";
/// `X-Model`: which model answered.
pub const X_MODEL: &str = "x-model";

/// Reads the request body up to the configured limit.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
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
    })?;
    // A body that came in one read is a slice of the connection's 8 KB read buffer, and
    // would keep that whole buffer alive for as long as the request runs (a stream's
    // whole life) while hyper takes a new one for the connection: a copy of a small body
    // frees it at once (1000 open streams: 8 MB).
    Ok(if bytes.len() <= SMALL_BODY {
        Bytes::copy_from_slice(&bytes)
    } else {
        bytes
    })
}

/// Request bodies up to this size are copied out of the connection's read buffer.
const SMALL_BODY: usize = 64 * 1024;

/// `POST /v1/chat/completions`: parse, rotate, and relay the answer as it came.
pub async fn chat_completions(
    State(engine): State<Engine>,
    body: Body,
) -> Result<Response, ApiError> {
    let config = engine.config();
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let chat = ChatBody::parse(&bytes).map_err(|e| body_error(&e))?;
    let answer = rotate::rotate(
        &engine,
        &rotate::Http(&engine.client),
        &chat,
        crate::upstream::Endpoint::Chat,
        crate::telemetry::ApiRoute::ChatCompletions,
    )
    .await?;
    Ok(chat_response(answer))
}

/// `POST /v1/completions` (legacy): translated to chat completions and back (see
/// [`legacy`]).
pub async fn completions(State(engine): State<Engine>, body: Body) -> Result<Response, ApiError> {
    let config = engine.config();
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let req: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let chat_bytes = serde_json::to_vec(&legacy::to_chat(&req)?)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let chat = ChatBody::parse(&chat_bytes).map_err(|e| body_error(&e))?;
    let native = ChatBody::parse(&bytes).map_err(|e| body_error(&e))?;
    let answer = rotate::rotate_with(
        &engine,
        &rotate::Http(&engine.client),
        &chat,
        crate::upstream::Endpoint::Chat,
        crate::telemetry::ApiRoute::Completions,
        Some(&native),
    )
    .await?;
    if answer.attempt.provider.legacy_completions {
        // The provider answered in the legacy format itself.
        return Ok(chat_response(answer));
    }
    let body = match answer.body {
        AnswerBody::Json {
            status,
            content_type,
            body,
        } => {
            let chat: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            AnswerBody::Json {
                status,
                content_type,
                body: Bytes::from(legacy::from_chat(&chat).to_string()),
            }
        }
        AnswerBody::Stream {
            content_type,
            events,
        } => AnswerBody::Stream {
            content_type,
            events: events::translate(
                events,
                (),
                |(), ev| legacy::stream_event(ev),
                |()| Vec::new(),
            ),
        },
        relayed @ AnswerBody::Relayed { .. } => relayed,
    };
    Ok(chat_response(rotate::Answer {
        attempt: answer.attempt,
        body,
    }))
}

/// `POST /v1/embeddings`: rotated among the providers that list embedding models
/// (`embedding_models`), with the same cooldown rules; `input`, `encoding_format` and
/// `dimensions` are passed on as sent.
pub async fn embeddings(State(engine): State<Engine>, body: Body) -> Result<Response, ApiError> {
    let config = engine.config();
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let req = ChatBody::parse(&bytes).map_err(|e| body_error(&e))?;
    if !req.has("input") {
        return Err(ApiError::bad_request(
            "`input` is required: a string or an array of strings or token arrays",
        ));
    }
    if req.stream() {
        return Err(ApiError::bad_request("embeddings cannot be streamed"));
    }
    if !config
        .providers
        .iter()
        .any(|p| !p.embedding_models.is_empty())
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "no_provider_available",
            "no provider is configured for embeddings; add embedding_models = [\"…\"] to a provider",
        ));
    }
    let answer = rotate::rotate(
        &engine,
        &rotate::Http(&engine.client),
        &req,
        crate::upstream::Endpoint::Embeddings,
        crate::telemetry::ApiRoute::Embeddings,
    )
    .await?;
    Ok(chat_response(answer))
}

/// Renders an answer as chat completions: the provider's bytes (checked and masked) with
/// `X-Provider` and `X-Model`.
fn chat_response(answer: rotate::Answer) -> Response {
    let mut resp = match answer.body {
        AnswerBody::Json {
            status,
            content_type,
            body,
        }
        | AnswerBody::Relayed {
            status,
            content_type,
            body,
        } => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            r
        }
        AnswerBody::Stream {
            content_type,
            events,
        } => stream_response(content_type, events),
    };
    provider_headers(resp.headers_mut(), &answer.attempt);
    resp
}

fn body_error(e: &BodyError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// A streamed answer: relayed as it arrives, never cached or buffered on the way.
pub(crate) fn stream_response(content_type: HeaderValue, events: rotate::ChatEvents) -> Response {
    let mut r = Response::new(Body::from_stream(events));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `X-Provider` and `X-Model`: who answered, with which model.
pub(crate) fn provider_headers(h: &mut HeaderMap, attempt: &Attempt) {
    if let Ok(v) = HeaderValue::from_str(&attempt.provider.name) {
        h.insert(X_PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(echo(&attempt.model)) {
        h.insert(X_MODEL, v);
    }
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

    /// Prompt, completion and total, each missing count derived from the others as
    /// [`contract`] fixes a `usage` (for the usage history).
    pub(crate) fn tokens(&self) -> crate::history::Tokens {
        let total = self.total();
        let (prompt, completion) = match (self.prompt_tokens, self.completion_tokens) {
            (Some(p), Some(c)) => (p, c),
            (Some(p), None) => (p, total.saturating_sub(p)),
            (None, Some(c)) => (total.saturating_sub(c), c),
            (None, None) => (0, total),
        };
        crate::history::Tokens {
            prompt,
            completion,
            total,
        }
    }

    /// Prompt, completion and total, when the provider gave at least the first two.
    pub(crate) fn whole(&self) -> Option<(u64, u64, u64)> {
        let (p, c) = (self.prompt_tokens?, self.completion_tokens?);
        Some((p, c, self.total_tokens.unwrap_or(p.saturating_add(c))))
    }
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
