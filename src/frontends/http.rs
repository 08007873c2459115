//! The HTTP handlers of the translating front-ends: `POST /v1/responses` (OpenAI
//! Responses, for Codex CLI) and `POST /v1/messages` (+ `/count_tokens`, Anthropic
//! Messages, for Claude Code). Each parses its request, translates it to chat completions,
//! calls the rotation core, and translates the answer (or the error) back into its own
//! wire format, streamed as it arrives. They get every guarantee of the chat route:
//! cooldowns and rotation, the stream-start budget, waiting out short cooldowns, key
//! masking, the Host/Origin/token guard, counting and the request log.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{messages, responses};
use crate::engine::Engine;
use crate::http::error::ApiError;
use crate::proxy::body::ChatBody;
use crate::proxy::events::{self, ChatEvent};
use crate::proxy::read_body;
use crate::proxy::rotate::{self, AnswerBody};
use crate::upstream::Endpoint;

/// Most responses remembered for `previous_response_id`.
const RESPONSES_KEPT: usize = 256;

/// Recent responses' conversations (chat messages), for `previous_response_id`; bounded,
/// oldest forgotten first, in memory only.
#[derive(Default)]
pub struct ResponseStore {
    inner: Mutex<Remembered>,
}

/// Conversations by response id, and the ids oldest first.
type Remembered = (HashMap<String, Vec<Value>>, VecDeque<String>);

impl ResponseStore {
    /// Remembers the conversation that `id` answered.
    pub fn put(&self, id: String, history: Vec<Value>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        if map.insert(id.clone(), history).is_none() {
            order.push_back(id);
        }
        while order.len() > RESPONSES_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    /// The conversation `id` answered, if it is still remembered.
    pub fn get(&self, id: &str) -> Option<Vec<Value>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(id).cloned()
    }
}

fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{prefix}{:016x}", h.finish())
}

fn now_secs() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn sse_response(events: rotate::ChatEvents) -> Response {
    crate::proxy::stream_response(HeaderValue::from_static("text/event-stream"), events)
}

/// The provider's message in a relayed error body (already masked), for re-wrapping.
fn relayed_message(body: &[u8]) -> String {
    crate::upstream::error_message(body)
        .unwrap_or_else(|| "the provider refused the request".into())
}

/// The chat body to rotate, from a translated request.
fn chat_bytes(body: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `POST /v1/responses`.
pub async fn responses(State(engine): State<Engine>, body: Body) -> Result<Response, ApiError> {
    let config = engine.config();
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let req: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let mut chat_req = responses::to_chat(&req).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            e.code(),
            e.to_string(),
        )
        .with_param(e.param())
    })?;
    if let Some(prev) = &chat_req.previous_response_id {
        let history = engine.responses.get(prev).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "previous_response_not_found",
                format!(
                    "previous response {prev:?} is not known here: llm-rotator keeps the last {RESPONSES_KEPT} responses in memory (none across restarts); send the whole conversation in `input`"
                ),
            )
            .with_param("previous_response_id")
        })?;
        responses::prepend_history(&mut chat_req.body, &history);
    }
    let request_messages: Vec<Value> = chat_req.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let model = chat_req.model.clone().unwrap_or_else(|| "auto".into());
    let wire = chat_bytes(&chat_req.body)?;
    let chat = ChatBody::parse(&wire).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let answer = rotate::rotate(
        &engine,
        &rotate::Http(&engine.client),
        &chat,
        Endpoint::Chat,
        crate::telemetry::ApiRoute::Responses,
    )
    .await?;
    let id = new_id("resp_");
    let created = now_secs();
    let store = chat_req.store;
    let mut resp = match answer.body {
        AnswerBody::Json { body, .. } => {
            let chat: Value = serde_json::from_slice(&body).unwrap_or_default();
            if store {
                engine.responses.put(
                    id.clone(),
                    responses::history_entry(&request_messages, &chat),
                );
            }
            let out = responses::from_chat_with(&chat, &model, &id, created, &chat_req.echo);
            json_response(StatusCode::OK, &out)
        }
        AnswerBody::Relayed { status, body, .. } => {
            let out =
                responses::error_body(status.as_u16(), "upstream_error", &relayed_message(&body));
            json_response(status, &out)
        }
        AnswerBody::Stream { events, .. } => {
            let mut tr = responses::StreamTranslator::new(id.clone(), model, created)
                .with_echo(chat_req.echo.clone());
            let head = tr.start();
            let store_to = store.then(|| {
                (
                    std::sync::Arc::clone(&engine.responses),
                    id,
                    request_messages,
                )
            });
            let events = events::translate(
                events,
                (tr, store_to),
                |(tr, store_to), ev| match ev {
                    ChatEvent::Chunk(c) => tr.chunk(&c),
                    ChatEvent::Done => {
                        let out = tr.finish(None);
                        if let Some((store, id, msgs)) = store_to.take() {
                            store.put(id, responses::history_entry(&msgs, &tr.chat_completion()));
                        }
                        out
                    }
                    ChatEvent::Error { message, kind } => tr.fail(&message, &kind),
                },
                |(tr, _)| tr.finish(None),
            );
            let first = futures_util::stream::iter([Ok(Bytes::from(head.concat()))]);
            sse_response(Box::pin(futures_util::StreamExt::chain(first, events)))
        }
    };
    crate::proxy::provider_headers(resp.headers_mut(), &answer.attempt);
    Ok(resp)
}

/// An error in the Anthropic shape, with `retry-after` kept for rate limits.
fn anthropic_error(err: ApiError) -> Response {
    let kind = messages::error_type_for(err.status.as_u16());
    let retry = err.retry_after;
    let mut r = json_response(err.status, &messages::error_body(kind, &err.message));
    if let Some(wait) = retry {
        let secs = wait.as_millis().div_ceil(1000).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
    }
    r
}

/// The model a Messages request is routed to: the client's id through
/// `[model_aliases]` (exact, or a pattern ending in `*`); with no alias, ids no provider
/// serves (Claude Code's own `claude-…`) go to "auto".
fn route_model(engine: &Engine, client_model: &str) -> String {
    let config = engine.config();
    let bare = client_model.split('[').next().unwrap_or(client_model);
    if let Some(to) = config.model_aliases.iter().find_map(|(pattern, to)| {
        let hit = match pattern.strip_suffix('*') {
            Some(prefix) => bare.starts_with(prefix),
            None => pattern == bare,
        };
        hit.then(|| to.clone())
    }) {
        return to;
    }
    let served = config.providers.iter().any(|p| p.serves(bare))
        || bare
            .split_once('/')
            .is_some_and(|(p, _)| config.providers.iter().any(|c| c.name == p));
    if served {
        bare.to_string()
    } else {
        "auto".to_string()
    }
}

/// `POST /v1/messages`.
pub async fn messages(State(engine): State<Engine>, body: Body) -> Response {
    match messages_inner(&engine, body).await {
        Ok(r) => r,
        Err(e) => anthropic_error(e),
    }
}

async fn messages_inner(engine: &Engine, body: Body) -> Result<Response, ApiError> {
    let config = engine.config();
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let req: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let mut chat_req = messages::to_chat(&req).map_err(|e| ApiError::bad_request(e.to_string()))?;
    chat_req.body["model"] = json!(route_model(engine, &chat_req.model));
    let wire = chat_bytes(&chat_req.body)?;
    let chat = ChatBody::parse(&wire).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let answer = rotate::rotate(
        engine,
        &rotate::Http(&engine.client),
        &chat,
        Endpoint::Chat,
        crate::telemetry::ApiRoute::Messages,
    )
    .await?;
    let id = new_id("msg_");
    let model = chat_req.model.clone();
    let mut resp = match answer.body {
        AnswerBody::Json { body, .. } => {
            let chat: Value = serde_json::from_slice(&body).unwrap_or_default();
            json_response(StatusCode::OK, &messages::from_chat(&chat, &model, &id))
        }
        AnswerBody::Relayed { status, body, .. } => {
            let kind = messages::error_type_for(status.as_u16());
            json_response(status, &messages::error_body(kind, &relayed_message(&body)))
        }
        AnswerBody::Stream { events, .. } => {
            let mut tr = messages::StreamTranslator::new(id, model);
            let mut head = tr.start();
            head.push(tr.ping());
            let events = events::translate(
                events,
                tr,
                |tr, ev| match ev {
                    ChatEvent::Chunk(c) => tr.chunk(&c),
                    ChatEvent::Done => tr.finish(None, None),
                    ChatEvent::Error { message, .. } => tr.fail("api_error", &message),
                },
                |tr| tr.finish(None, None),
            );
            let first = futures_util::stream::iter([Ok(Bytes::from(head.concat()))]);
            sse_response(Box::pin(futures_util::StreamExt::chain(first, events)))
        }
    };
    crate::proxy::provider_headers(resp.headers_mut(), &answer.attempt);
    Ok(resp)
}

/// `POST /v1/messages/count_tokens`: an estimate (about four characters a token).
pub async fn count_tokens(State(engine): State<Engine>, body: Body) -> Response {
    let limit = engine.config().server.max_body_bytes;
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => return anthropic_error(e),
    };
    let req: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return anthropic_error(ApiError::bad_request(format!(
                "the request body is not valid JSON: {e}"
            )))
        }
    };
    match messages::count_tokens(&req) {
        Ok(n) => json_response(StatusCode::OK, &json!({"input_tokens": n})),
        Err(e) => anthropic_error(ApiError::bad_request(e.to_string())),
    }
}
