//! The benchmark's mock provider: a minimal hyper server on 127.0.0.1 on its own runtime,
//! so its work never queues behind the load generator's. The path says what to answer:
//!
//! - `/json/v1/chat/completions`: a non-streaming completion with `usage`;
//! - `/sse/{chunks}/{gap_ms}/v1/chat/completions`: an SSE stream of `chunks` events (the
//!   last one carries `usage`), `gap_ms` apart, then `data: [DONE]`;
//! - `/429/{ms|s}/{wait}/{slot}/v1/chat/completions`: always 429 with `Retry-After`
//! - `…/models` (the agent's catalog reads): 404, not counted
//!   (plus `retry-after-ms` in `ms` mode), counting calls per `slot`.
//!
//! Every request body is read in full before answering, as a real provider would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Number of 429 counters (`slot` in the path).
pub const SLOTS: usize = 4;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am a benchmark mock. How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":14,"total_tokens":38}}"#;
const CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\"},\"finish_reason\":null}]}\n\n";
const LAST_CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":20,\"total_tokens\":44}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached for requests per minute. Please try again later.","type":"requests","code":"rate_limit_exceeded"}}"#;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A running mock provider.
pub struct Mock {
    /// Where it listens.
    pub addr: SocketAddr,
    calls_429: Arc<[AtomicU64; SLOTS]>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Mock {
    /// Starts the mock on 127.0.0.1 with its own `threads`-worker runtime, whose threads
    /// are called `name` (so their CPU time can be told apart).
    pub fn start(threads: usize, name: &str) -> std::io::Result<Mock> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()?;
        let calls_429: Arc<[AtomicU64; SLOTS]> = Arc::new(Default::default());
        let listener = {
            let _enter = runtime.enter();
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            // A deep accept queue: the 1000-stream phase connects all at once.
            socket.listen(4096)?
        };
        let addr = listener.local_addr()?;
        let counters = Arc::clone(&calls_429);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    // Out of file descriptors or similar: back off and keep serving.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let counters = Arc::clone(&counters);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let counters = Arc::clone(&counters);
                        async move { Ok::<_, Infallible>(answer(req, &counters).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Mock {
            addr,
            calls_429,
            runtime: Some(runtime),
        })
    }

    /// `http://addr`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many 429s `slot` has answered.
    pub fn calls_429(&self, slot: usize) -> u64 {
        self.calls_429[slot].load(Ordering::SeqCst)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn full(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn answer(req: Request<Incoming>, counters: &[AtomicU64; SLOTS]) -> Response<Body> {
    let path = req.uri().path().to_string();
    // Drain the request body like a real provider.
    let _ = req.into_body().collect().await;
    if path.ends_with("/models") {
        // The agent's background catalog reads: a provider without a model list.
        return full(StatusCode::NOT_FOUND, "application/json", "{}");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["json", ..] => full(StatusCode::OK, "application/json", COMPLETION),
        ["sse", chunks, gap, ..] => {
            let chunks: u32 = chunks.parse().unwrap_or(20);
            let gap = Duration::from_millis(gap.parse().unwrap_or(0));
            sse(chunks, gap)
        }
        ["429", unit, wait, slot, ..] => {
            if let Some(c) = slot.parse::<usize>().ok().and_then(|s| counters.get(s)) {
                c.fetch_add(1, Ordering::SeqCst);
            }
            let mut resp = full(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                RATE_LIMITED,
            );
            let h = resp.headers_mut();
            let wait: u64 = wait.parse().unwrap_or(1);
            if *unit == "ms" {
                h.insert("retry-after-ms", wait.into());
                h.insert("retry-after", wait.div_ceil(1000).into());
            } else {
                h.insert("retry-after", wait.into());
            }
            resp
        }
        _ => full(StatusCode::NOT_FOUND, "text/plain", "no such mock path\n"),
    }
}

/// An SSE body: chunk `i` is sent at `start + i * gap` (an interval, so gaps do not drift).
fn sse(chunks: u32, gap: Duration) -> Response<Body> {
    let ticker = (!gap.is_zero()).then(|| {
        let mut t = tokio::time::interval(gap);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let body = stream::unfold((0u32, ticker), move |(i, mut ticker)| async move {
        if i > chunks {
            return None;
        }
        let data = if i == chunks {
            DONE
        } else {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            if i + 1 == chunks {
                LAST_CHUNK
            } else {
                CHUNK
            }
        };
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(data.as_bytes()))),
            (i + 1, ticker),
        ))
    });
    let mut resp = Response::new(StreamBody::new(body).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}
