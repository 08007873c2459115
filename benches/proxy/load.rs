//! The benchmark's load generator: plain hyper HTTP/1.1 client connections (one per
//! simulated client, kept alive), timing each request to its first body byte and to its
//! end, and counting SSE events as they arrive.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// One kept-alive client connection.
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

/// What one request took.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// To the first body byte.
    pub ttfb: Duration,
    /// To the end of the body.
    pub total: Duration,
    /// SSE events (`\n\n`-terminated) received.
    pub events: u32,
    /// For paced streams: the worst lateness of an event against its schedule (event `k`
    /// due `k * gap` after the first).
    pub max_lag: Duration,
    /// `x-provider` of the answer, if any.
    pub provider: Option<String>,
    /// HTTP status.
    pub status: u16,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        Ok(Conn { send, host })
    }

    /// POSTs `body` to `path`; an error unless the answer is a complete 200. `gap`: the
    /// expected spacing of SSE events, to measure lateness.
    pub async fn post(
        &mut self,
        path: &str,
        body: &Bytes,
        gap: Option<Duration>,
    ) -> Result<Timing, String> {
        let t = self.send_any(path, body, gap).await?;
        if t.status != 200 {
            return Err(format!("HTTP {}", t.status));
        }
        Ok(t)
    }

    /// POSTs `body` to `path` and reads the whole answer, whatever its status.
    pub async fn send_any(
        &mut self,
        path: &str,
        body: &Bytes,
        gap: Option<Duration>,
    ) -> Result<Timing, String> {
        self.send.ready().await.map_err(|e| format!("ready: {e}"))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let provider = resp
            .headers()
            .get("x-provider")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut t = Timing {
            provider,
            status: status.as_u16(),
            ..Timing::default()
        };
        let mut first: Option<Instant> = None;
        let mut last_byte = 0u8;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let now = Instant::now();
            let first_at = *first.get_or_insert_with(|| {
                t.ttfb = now - start;
                now
            });
            for &b in data.iter() {
                if b == b'\n' && last_byte == b'\n' {
                    if let Some(gap) = gap {
                        let due = gap * t.events;
                        let lag = (now - first_at).saturating_sub(due);
                        t.max_lag = t.max_lag.max(lag);
                    }
                    t.events += 1;
                }
                last_byte = b;
            }
        }
        t.total = start.elapsed();
        Ok(t)
    }
}

/// Results of a closed-loop run.
#[derive(Debug, Default)]
pub struct Run {
    /// Successful requests.
    pub timings: Vec<Timing>,
    /// Failed requests, with the first few reasons.
    pub errors: u64,
    /// Up to five error texts.
    pub error_samples: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Run {
    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        self.timings.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn absorb(&mut self, other: Run) {
        self.timings.extend(other.timings);
        self.errors += other.errors;
        for e in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(e);
            }
        }
    }
}

/// `conns` clients, each sending `body` to `path` back to back, until `duration` has
/// passed (or each has sent `per_conn` requests, when given).
pub async fn closed_loop(
    addr: SocketAddr,
    path: &'static str,
    body: Bytes,
    conns: usize,
    duration: Duration,
    per_conn: Option<usize>,
    gap: Option<Duration>,
) -> Run {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            let mut conn = match Conn::open(addr).await {
                Ok(c) => c,
                Err(e) => {
                    run.errors += 1;
                    run.error_samples.push(e);
                    return run;
                }
            };
            let mut sent = 0usize;
            while Instant::now() < deadline && per_conn.is_none_or(|n| sent < n) {
                sent += 1;
                match conn.post(path, &body, gap).await {
                    Ok(t) => run.timings.push(t),
                    Err(e) => {
                        run.errors += 1;
                        if run.error_samples.len() < 5 {
                            run.error_samples.push(e);
                        }
                        match Conn::open(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            run
        }));
    }
    let mut all = Run::default();
    for t in tasks {
        match t.await {
            Ok(run) => all.absorb(run),
            Err(e) => {
                all.errors += 1;
                all.error_samples.push(format!("client task: {e}"));
            }
        }
    }
    all.elapsed = start.elapsed();
    all
}
