//! The HTTP server: `router(engine)` (tests call it without sockets), the guard every
//! request passes (Host, Origin, optional bearer token), binding, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::admin;
use crate::engine::Engine;
use crate::proxy::{self, error::ApiError};

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The port is taken or not allowed.
    #[error("cannot listen on {addr}: {source}; another program may be using the port; change server.port in the config or pass --port")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error")]
    Io(#[from] std::io::Error),
}

/// All routes, guarded.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/chat/completions", post(proxy::chat_completions))
        .route("/v1/models", get(proxy::models))
        .route("/models", get(proxy::models))
        .route("/health", get(admin::health))
        .route("/status", get(admin::status))
        .route("/stats", get(admin::stats))
        .route("/providers/{name}/enable", post(admin::enable))
        .route("/providers/{name}/disable", post(admin::disable))
        .route("/reload", post(admin::reload))
        .route("/keys/reload", post(admin::reload_keys))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(engine.clone(), guard))
        .with_state(engine)
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(req.uri().path()).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::method_not_allowed(req.method().as_str(), req.uri().path()).into_response()
}

fn forbidden(message: String) -> Response {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_error",
        "forbidden",
        message,
    )
    .into_response()
}

/// The `Host` header without its port, lower case.
fn host_name(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)?
        .to_str()
        .ok()?
        .trim()
        .to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8000
        format!("[{}]", rest.split(']').next().unwrap_or(""))
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host.clone(), |(h, _)| h.to_string())
    };
    Some(name)
}

/// Whether a request for `host` (lower case, no port) may be served: loopback names, the
/// address the server is bound to, and `server.allowed_hosts`. Anything else may be a DNS
/// rebinding attack from a web page.
fn host_allowed(host: &str, server: &crate::config::ServerConfig) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == server.host)
        || server.allowed_hosts.iter().any(|h| h == host)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Host (DNS rebinding), Origin (browser pages) and the optional bearer token.
async fn guard(State(engine): State<Engine>, req: Request, next: Next) -> Response {
    let config = engine.config();
    let server = &config.server;
    let headers = req.headers();
    if let Some(host) = host_name(headers) {
        if !host_allowed(&host, server) {
            return forbidden(format!(
                "requests for host {host:?} are refused; add it to server.allowed_hosts if this is intended"
            ));
        }
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase());
    if let Some(origin) = &origin {
        if !server.allowed_origins.iter().any(|o| o == origin) {
            return forbidden(format!(
                "browser origin {origin:?} is not allowed; add it to server.allowed_origins to let that page call the API"
            ));
        }
        if req.method() == Method::OPTIONS {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            cors(resp.headers_mut(), origin);
            return resp;
        }
    }
    if let Some(token) = &server.auth_token {
        if req.uri().path() != "/health" {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "invalid_api_key",
                    "this proxy requires Authorization: Bearer <server.auth_token>",
                )
                .into_response();
            }
        }
    }
    let mut resp = next.run(req).await;
    if let Some(origin) = &origin {
        cors(resp.headers_mut(), origin);
    }
    resp
}

fn cors(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-provider, x-model, retry-after"),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
}

/// Connections the kernel queues before they are accepted: a burst of clients (a tool
/// opening hundreds of streams at once) must not overflow the default 128 and wait a
/// second for a SYN retry.
const ACCEPT_BACKLOG: u32 = 1024;

/// Binds the listener for `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's TcpListener::bind does on unix: a restart can rebind at once.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(ACCEPT_BACKLOG)
    };
    bind().map_err(|source| ServeError::Bind { addr, source })
}

/// How many threads serve connections: one per core, at most four (a desktop client
/// keeps a handful of connections open; more threads would only cost memory).
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(1, 4)
}

/// Serves until `shutdown` completes, then lets in-flight requests (streams included)
/// finish for up to `grace`.
///
/// Requests are served by [`worker_count`] threads, each a single-threaded runtime with
/// its own upstream client that accepts connections on its own handle of the listening
/// socket: whichever thread is free takes the next connection, and a connection lives on
/// that thread from its first request to its last, as do the upstream connections its
/// requests use. A request and its stream never wake another thread, which is most of
/// what a proxied request costs at low concurrency.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    let listener = listener.into_std()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..worker_count() {
        let handle = listener.try_clone()?;
        workers.push(start_worker(i, handle, &engine, stop_rx.clone(), grace)?);
    }
    // The workers' handles keep the socket open; this one is not polled.
    drop(listener);
    shutdown.await;
    tracing::info!(
        "shutting down; letting running requests finish for up to {}s",
        grace.as_secs()
    );
    let _ = stop_tx.send(true);
    let mut cut_short = false;
    for done in workers {
        cut_short |= done.await.unwrap_or(false);
    }
    if cut_short {
        tracing::warn!("shutdown grace period over; closed the remaining connections");
    }
    Ok(())
}

/// Starts serving thread `index` on its handle of the listening socket. The receiver
/// gets `true` when the thread is done and the grace period cut requests short.
fn start_worker(
    index: usize,
    listener: std::net::TcpListener,
    engine: &Engine,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> Result<tokio::sync::oneshot::Receiver<bool>, ServeError> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut engine = engine.clone();
    std::thread::Builder::new()
        .name(format!("llm-rotator-http-{index}"))
        .spawn(move || {
            // Its own pool of upstream connections, driven by this thread.
            match crate::upstream::build_client(&engine.config().routing) {
                Ok(client) => engine.client = client,
                Err(e) => tracing::warn!("serving thread {index} shares the upstream client: {e}"),
            }
            let cut_short = runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve_connections(listener, router(engine), stop, grace).await,
                    Err(e) => {
                        tracing::error!(
                            "serving thread {index} cannot use the listening socket: {e}"
                        );
                        false
                    }
                }
            });
            // Closes whatever the grace period cut short.
            drop(runtime);
            let _ = done_tx.send(cut_short);
        })?;
    Ok(done)
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// A serving thread's loop: accepts connections and serves HTTP/1 on each until `stop`;
/// then each connection finishes its request in progress and closes, for up to `grace`.
/// Returns whether the grace period cut some short.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    stop: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> bool {
    let mut stopping = stop.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    // No header read timeout: hyper runs it while a kept-alive connection waits for its
    // next request too, so it would close idle client connections, and a client sending
    // a POST just as that happens sees a failure it may not retry.
    http.header_read_timeout(None);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Without TCP_NODELAY, each streamed chunk after the first waits for
                    // the client's delayed ACK (Nagle): up to 40 ms per chunk on Linux.
                    let _ = tcp.set_nodelay(true);
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    let mut stop = stop.clone();
                    conns.spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            // A client that goes away is nothing to report.
                            _ = conn.as_mut() => return,
                            _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                    });
                }
                // The client gave up before it was accepted: nothing to do.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors, say: wait for some connections to close.
                    tracing::error!("cannot accept connections: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    // New connections are refused from here on.
    drop(listener);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    drained.is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_allowed_are_loopback_the_bound_address_and_the_listed_ones() {
        let parse = |text: &str| {
            crate::config::Config::parse(text, None)
                .expect("config")
                .server
        };
        let local = parse("");
        for ok in ["localhost", "127.0.0.1", "[::1]"] {
            assert!(host_allowed(ok, &local), "{ok}");
        }
        for bad in ["attacker.example", "192.168.1.5", "[::2]", "127.0.0.2"] {
            assert!(!host_allowed(bad, &local), "{bad}");
        }
        let lan = parse(
            "[server]\nhost = \"192.168.1.5\"\nauth_token = \"0123456789abcdef0123\"\nallowed_hosts = [\"my-mac.local\"]\n",
        );
        assert!(host_allowed("192.168.1.5", &lan));
        assert!(host_allowed("my-mac.local", &lan));
        assert!(!host_allowed("192.168.1.6", &lan));
        let v6 = parse("[server]\nhost = \"fd00::5\"\nauth_token = \"0123456789abcdef0123\"\n");
        assert!(host_allowed("[fd00::5]", &v6));
        assert!(!host_allowed("[fd00::6]", &v6));
    }

    #[test]
    fn host_names_lose_their_port() {
        let mut h = HeaderMap::new();
        for (raw, want) in [
            ("localhost:8000", "localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]:8000", "[::1]"),
            ("Evil.Example:80", "evil.example"),
        ] {
            h.insert(header::HOST, HeaderValue::from_static(raw));
            assert_eq!(host_name(&h).as_deref(), Some(want));
        }
    }
}
