//! Relaying a streamed answer: the first upstream chunk decides whether the attempt
//! succeeded (until then the loop may still rotate); after it, chunks go to the client as
//! they arrive, unchanged. A stream that breaks or goes silent ends with an SSE error
//! event; one that ends without `data: [DONE]` gets it appended. Usage is counted on the
//! side without copying chunks.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use chrono::Utc;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::{provider_headers, Usage};
use crate::config::RoutingConfig;
use crate::engine::Engine;
use crate::pool::{Attempt, Outcome};

type Upstream = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Waits for the first chunk, then commits to this provider and relays the rest.
pub(super) async fn relay(
    engine: &Engine,
    attempt: &Attempt,
    resp: reqwest::Response,
    routing: &RoutingConfig,
) -> Result<(Response, Option<u64>), String> {
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    let mut upstream: Upstream = Box::pin(resp.bytes_stream());
    let first = loop {
        match tokio::time::timeout(routing.first_byte_timeout, upstream.next()).await {
            Err(_) => {
                return Err(format!(
                    "no stream data within {}s",
                    routing.first_byte_timeout.as_secs()
                ))
            }
            Ok(None) => return Err("stream ended before any data".into()),
            Ok(Some(Err(e))) => return Err(format!("stream broke before any data: {e}")),
            Ok(Some(Ok(chunk))) if chunk.is_empty() => continue,
            Ok(Some(Ok(chunk))) => break chunk,
        }
    };
    engine
        .pool
        .report(attempt, &Outcome::Success { tokens: None }, Utc::now());
    let state = RelayState {
        upstream,
        first: Some(first),
        scan: Scanner::default(),
        idle: routing.stream_idle_timeout,
        engine: engine.clone(),
        provider: attempt.provider.name.clone(),
        finished: false,
    };
    let body = futures_util::stream::unfold(state, next_chunk);
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = StatusCode::OK;
    let h = out.headers_mut();
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    provider_headers(h, attempt);
    Ok((out, None))
}

struct RelayState {
    upstream: Upstream,
    first: Option<Bytes>,
    scan: Scanner,
    idle: Duration,
    engine: Engine,
    provider: String,
    finished: bool,
}

async fn next_chunk(
    mut st: RelayState,
) -> Option<(Result<Bytes, std::convert::Infallible>, RelayState)> {
    if st.finished {
        return None;
    }
    if let Some(first) = st.first.take() {
        st.observe(&first);
        return Some((Ok(first), st));
    }
    match tokio::time::timeout(st.idle, st.upstream.next()).await {
        Ok(Some(Ok(chunk))) => {
            st.observe(&chunk);
            Some((Ok(chunk), st))
        }
        Ok(Some(Err(e))) => {
            st.finished = true;
            let msg = format!("the provider's stream broke off: {e}");
            st.engine.pool.note_error(&st.provider, msg.clone());
            tracing::warn!(provider = %st.provider, "stream broke off midway");
            Some((
                Ok(error_event(&msg, "upstream_error", st.scan.partial())),
                st,
            ))
        }
        Ok(None) => {
            st.finished = true;
            if st.scan.saw_done {
                None
            } else {
                let mut tail = Vec::new();
                if st.scan.partial() {
                    tail.extend_from_slice(b"\n\n");
                }
                tail.extend_from_slice(b"data: [DONE]\n\n");
                Some((Ok(Bytes::from(tail)), st))
            }
        }
        Err(_) => {
            st.finished = true;
            let msg = format!(
                "the provider sent nothing for {}s; the stream was ended",
                st.idle.as_secs()
            );
            st.engine.pool.note_error(&st.provider, msg.clone());
            tracing::warn!(provider = %st.provider, "stream went silent");
            Some((Ok(error_event(&msg, "timeout", st.scan.partial())), st))
        }
    }
}

impl RelayState {
    fn observe(&mut self, chunk: &[u8]) {
        if let Some(tokens) = self.scan.feed(chunk) {
            self.engine.pool.add_tokens(&self.provider, tokens);
        }
    }
}

/// An SSE error event with string fields; starts on a fresh line if an event was cut.
fn error_event(message: &str, kind: &str, cut: bool) -> Bytes {
    let body = serde_json::json!({"error": {"message": message, "type": kind, "code": kind}});
    let prefix = if cut { "\n\n" } else { "" };
    Bytes::from(format!("{prefix}data: {body}\n\n"))
}

/// Watches SSE lines for `[DONE]` and `usage` without holding on to chunks: only an
/// unfinished last line is kept.
#[derive(Default)]
struct Scanner {
    carry: Vec<u8>,
    saw_done: bool,
}

#[derive(Deserialize)]
struct UsageEvent {
    usage: Option<Usage>,
}

impl Scanner {
    /// Whether the last chunk ended inside a line.
    fn partial(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Feeds a chunk; returns tokens when a usage event completes in it.
    fn feed(&mut self, chunk: &[u8]) -> Option<u64> {
        let mut tokens = None;
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let line_tail = &rest[..nl];
            if self.carry.is_empty() {
                self.line(line_tail, &mut tokens);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(line_tail);
                self.line(&line, &mut tokens);
            }
            rest = &rest[nl + 1..];
        }
        if !rest.is_empty() {
            // Long lines are only worth keeping while they might hold usage or [DONE].
            if self.carry.len() + rest.len() <= 64 * 1024 {
                self.carry.extend_from_slice(rest);
            } else {
                self.carry.clear();
            }
        }
        tokens
    }

    fn line(&mut self, line: &[u8], tokens: &mut Option<u64>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        if data == b"[DONE]" {
            self.saw_done = true;
        } else if contains(data, b"\"usage\"") {
            if let Some(u) = serde_json::from_slice::<UsageEvent>(data)
                .ok()
                .and_then(|e| e.usage)
            {
                *tokens = Some(tokens.unwrap_or(0) + u.total());
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_usage_and_done_across_chunk_boundaries() {
        let mut s = Scanner::default();
        assert_eq!(
            s.feed(b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"us"),
            None
        );
        assert!(s.partial());
        assert_eq!(
            s.feed(b"age\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n"),
            Some(7)
        );
        assert!(!s.saw_done);
        s.feed(b"data: [DO");
        s.feed(b"NE]\r\n\r\n");
        assert!(s.saw_done);
    }

    #[test]
    fn usage_null_is_ignored() {
        let mut s = Scanner::default();
        assert_eq!(s.feed(b"data: {\"usage\":null}\n\n"), None);
    }
}
