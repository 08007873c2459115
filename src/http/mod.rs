//! The HTTP server: `router(engine)` (tests call it without sockets), the guard every
//! request passes (Host, Origin, optional bearer token), binding, and graceful shutdown.

pub mod admin;
mod connection;
pub mod error;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::engine::Engine;
use crate::proxy;
use error::ApiError;

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
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/completions", post(proxy::completions))
        .route("/v1/responses", post(crate::frontends::http::responses))
        .route("/responses", post(crate::frontends::http::responses))
        .route("/v1/messages", post(crate::frontends::http::messages))
        .route(
            "/v1/messages/count_tokens",
            post(crate::frontends::http::count_tokens),
        )
        .route("/completions", post(proxy::completions))
        .route("/embeddings", post(proxy::embeddings))
        .route("/v1/models", get(proxy::models))
        .route("/models", get(proxy::models))
        .route("/health", get(admin::health))
        .route("/status", get(admin::status))
        .route("/stats", get(admin::stats))
        .route("/metrics", get(admin::metrics))
        .route("/ui", get(crate::ui::page))
        .route("/ui/", get(crate::ui::page))
        .route("/ui/app.js", get(crate::ui::script))
        .route("/ui/style.css", get(crate::ui::style))
        .route("/ui/api/state", get(crate::ui::api_state))
        .route("/ui/api/series", get(crate::ui::api_series))
        .route("/stats/history", get(admin::history))
        .route("/catalog", get(admin::catalog))
        .route("/catalog/refresh", post(admin::refresh_catalog))
        .route("/providers/{name}/enable", post(admin::enable))
        .route("/providers/{name}/disable", post(admin::disable))
        .route("/providers/{name}/reset", post(admin::reset))
        .route("/notifications/enable", post(admin::notifications_on))
        .route("/notifications/disable", post(admin::notifications_off))
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

/// A `Host` header value or a request target's authority: a name (`localhost`,
/// `127.0.0.1`, `[::1]`, as written) and an optional port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostPort<'a> {
    name: &'a str,
    port: Option<&'a str>,
}

impl HostPort<'_> {
    /// Whether both name the same host and port (names compare without case).
    fn same_as(&self, other: &HostPort<'_>) -> bool {
        self.name.eq_ignore_ascii_case(other.name) && self.port == other.port
    }
}

/// Parses `name[:port]` or `[v6][:port]`. Anything else — a user part, stray bytes
/// after `]`, characters no host name has, a port that is not a number — is `None`, and
/// the guard refuses it: a value it cannot read is never waved through.
fn parse_host(text: &str) -> Option<HostPort<'_>> {
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let v6 = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
        if inside.is_empty() || !inside.bytes().all(v6) {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&text[..inside.len() + 2], port)
    } else {
        let (name, port) = match text.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        };
        let reg_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if name.is_empty() || !name.bytes().all(reg_name) {
            return None;
        }
        (name, port)
    };
    // An empty port ("localhost:") is allowed by RFC 3986 and means the default.
    if port.is_some_and(|p| p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(HostPort { name, port })
}

/// The host a request is for, or why the guard cannot tell (then it is refused): exactly
/// one `Host` header (HTTP/1.1 requires it), readable, and naming the same host as the
/// request target when that is in absolute form (`GET http://host/path`).
fn request_host(req: &Request) -> Result<HostPort<'_>, String> {
    let mut values = req.headers().get_all(header::HOST).iter();
    let Some(value) = values.next() else {
        return Err("the request has no Host header (HTTP/1.1 requires one)".into());
    };
    if values.next().is_some() {
        return Err("the request has more than one Host header".into());
    }
    let Ok(text) = value.to_str() else {
        return Err("the Host header is not plain ASCII".into());
    };
    let text = text.trim();
    let Some(host) = parse_host(text) else {
        return Err(format!(
            "the Host header {text:?} is not a host name with an optional port"
        ));
    };
    if let Some(authority) = req.uri().authority() {
        if !parse_host(authority.as_str()).is_some_and(|target| target.same_as(&host)) {
            return Err(format!(
                "the request target names {:?} but the Host header says {text:?}",
                authority.as_str()
            ));
        }
    }
    Ok(host)
}

/// Whether a request for `host` (no port; any case) may be served: loopback names, the
/// address the server is bound to, and `server.allowed_hosts`. Anything else may be a DNS
/// rebinding attack from a web page.
fn host_allowed(host: &str, server: &crate::config::ServerConfig) -> bool {
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == server.host)
        || server
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Host (DNS rebinding), Origin (browser pages) and the optional bearer token.
async fn guard(State(engine): State<Engine>, req: Request, next: Next) -> Response {
    if crate::upstream::looped(req.headers()) {
        // Sent by this very agent: a base_url that points back here. Answered at once,
        // so the loop costs one hop, not every file descriptor.
        return ApiError::new(
            StatusCode::LOOP_DETECTED,
            "invalid_request_error",
            "loop_detected",
            "this request already went through this llm-rotator: a provider's base_url points back at it",
        )
        .into_response();
    }
    let config = engine.config();
    let server = &config.server;
    // Fails closed: a Host the guard cannot read is refused like a foreign one.
    let host = match request_host(&req) {
        Err(why) => return forbidden(format!("{why}; the request is refused")),
        Ok(host) if !host_allowed(host.name, server) => {
            return forbidden(format!(
                "requests for host {:?} are refused; add it to server.allowed_hosts if this is intended",
                host.name.to_ascii_lowercase()
            ));
        }
        Ok(host) => host,
    };
    let headers = req.headers();
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        // The dashboard's own requests (its switches): the page was served by this very
        // agent under a Host that passed the check above, so its origin is no stranger.
        .filter(|o| !is_own_origin(o, host));
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
        // The dashboard's page and assets hold no data; the page asks for the token and
        // sends it with every call that does.
        let public =
            req.uri().path() == "/health" || crate::ui::PUBLIC_PATHS.contains(&req.uri().path());
        if !public {
            // Anthropic clients (Claude Code) send the key as x-api-key.
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
                .map(str::trim);
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                let err = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "authentication_error",
                    "invalid_api_key",
                    "this proxy requires Authorization: Bearer <server.auth_token> (or x-api-key)",
                );
                if req.uri().path().starts_with("/v1/messages") {
                    let body = crate::frontends::messages::error_body(
                        "authentication_error",
                        &err.message,
                    );
                    return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                }
                return err.into_response();
            }
        }
    }
    let mut resp = next.run(req).await;
    if let Some(origin) = &origin {
        cors(resp.headers_mut(), origin);
    }
    resp
}

/// Whether `origin` is that of pages this agent serves under `host`: `http://` and the
/// same host and port.
fn is_own_origin(origin: &str, host: HostPort<'_>) -> bool {
    origin
        .strip_prefix("http://")
        .and_then(parse_host)
        .is_some_and(|o| o.same_as(&host))
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

/// The largest request head (request line and headers) accepted; larger ones get 431.
/// It also bounds what a client that sends half a header can make hyper buffer (by
/// default about 400 KB, so 2000 such clients held 808 MB).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What every client connection is held to, shared by the serving threads.
#[derive(Clone)]
struct Bounds {
    /// Its header and idle clocks.
    limits: connection::Limits,
    /// One per open client connection, `server.max_connections` in all. Past that, a new
    /// connection is closed as soon as it is accepted rather than left waiting: the
    /// client sees a failure at once instead of a hang, and the slow or idle connections
    /// that fill the slots are closed by their clocks within seconds.
    permits: Arc<tokio::sync::Semaphore>,
    /// `server.max_connections`, for the log.
    max: usize,
}

impl Bounds {
    fn of(server: &crate::config::ServerConfig) -> Bounds {
        let max = server
            .max_connections
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Bounds {
            limits: connection::Limits {
                header_read: server.header_read_timeout,
                idle: server.idle_timeout,
            },
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }
}

/// How many threads serve connections: one per core, at most four (a desktop client
/// keeps a handful of connections open; more threads would only cost memory).
fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(1, 4)
}

/// Serves until `shutdown` completes, then lets in-flight requests (streams included)
/// finish for up to `grace`. Client connections are held to `server.header_read_timeout_secs`,
/// `server.idle_timeout_secs` and `server.max_connections` as configured now (a change
/// takes effect after a restart).
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
    let bounds = Bounds::of(&engine.config().server);
    let mut workers = Vec::new();
    for i in 0..worker_count() {
        let handle = listener.try_clone()?;
        let worker = start_worker(i, handle, &engine, stop_rx.clone(), grace, bounds.clone())?;
        workers.push(worker);
    }
    // The workers' handles keep the socket open; this one is not polled.
    drop(listener);
    shutdown.await;
    // Requests waiting for a cooling provider are answered now, not cut by the grace.
    engine.waiting.close();
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
    bounds: Bounds,
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
                    Ok(listener) => {
                        serve_connections(listener, router(engine), stop, grace, bounds).await
                    }
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
    bounds: Bounds,
) -> bool {
    let mut stopping = stop.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Not hyper's header read timeout: hyper runs it while a kept-alive connection waits
    // for its next request too, so it would close idle client connections early, and a
    // client sending a POST just as that happens sees a failure it may not retry. Each
    // connection's own clock (see `connection`) times the headers from their first byte
    // and idleness separately.
    http.header_read_timeout(None);
    http.max_header_size(MAX_HEADER_BYTES);
    let mut conns = tokio::task::JoinSet::new();
    // Whether connections are being turned away (warned once per streak).
    let mut refusing = false;
    loop {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let Ok(permit) = Arc::clone(&bounds.permits).try_acquire_owned() else {
                        if !refusing {
                            tracing::warn!(
                                "{} client connections are open (server.max_connections); closing new ones until some close",
                                bounds.max
                            );
                        }
                        refusing = true;
                        drop(tcp);
                        continue;
                    };
                    refusing = false;
                    // Without TCP_NODELAY, each streamed chunk after the first waits for
                    // the client's delayed ACK (Nagle): up to 40 ms per chunk on Linux.
                    let _ = tcp.set_nodelay(true);
                    let clock = connection::Clock::new(bounds.limits);
                    let io = connection::Watched::new(tcp, Arc::clone(&clock));
                    let service = connection::Tracked::new(
                        hyper_util::service::TowerToHyperService::new(app.clone()),
                        Arc::clone(&clock),
                    );
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
                    let mut stop = stop.clone();
                    conns.spawn(async move {
                        let _permit = permit;
                        let mut conn = std::pin::pin!(conn);
                        tokio::select! {
                            // A client that goes away is nothing to report.
                            _ = conn.as_mut() => return,
                            _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                            // Dropping the connection closes it.
                            why = clock.expired() => {
                                tracing::debug!(?why, "closing a client connection");
                                return;
                            }
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
    fn only_http_with_the_same_host_and_port_is_the_agents_own_origin() {
        let host = HostPort {
            name: "127.0.0.1",
            port: Some("8000"),
        };
        assert!(is_own_origin("http://127.0.0.1:8000", host));
        for other in [
            "https://127.0.0.1:8000",
            "http://127.0.0.1:8001",
            "http://127.0.0.1",
            "http://localhost:8000",
            "http://127.0.0.1:8000.evil.com",
            "null",
        ] {
            assert!(!is_own_origin(other, host), "{other}");
        }
    }

    #[test]
    fn host_names_lose_their_port() {
        for (raw, name, port) in [
            ("localhost:8000", "localhost", Some("8000")),
            ("127.0.0.1", "127.0.0.1", None),
            ("[::1]:8000", "[::1]", Some("8000")),
            ("[::1]", "[::1]", None),
            ("Evil.Example:80", "Evil.Example", Some("80")),
            ("localhost:", "localhost", Some("")),
        ] {
            assert_eq!(parse_host(raw), Some(HostPort { name, port }), "{raw}");
        }
    }

    #[test]
    fn host_values_the_guard_cannot_read_are_not_parsed() {
        for bad in [
            "",
            "[::1]evil.com",
            "[::1]:80evil",
            "[::1]:evil.com",
            "[]",
            "[::1",
            "[evil.com]",
            "localhost:8000:1",
            "localhost:80x",
            "localhost:123456",
            "user@localhost",
            "local host",
            "localhost/path",
            "evil.com\\@localhost",
            ":8000",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    fn guarded(raw_hosts: &[&[u8]], uri: &str) -> Result<String, String> {
        let mut req = Request::builder().uri(uri);
        for h in raw_hosts {
            req = req.header(header::HOST, HeaderValue::from_bytes(h).expect("value"));
        }
        let req = req.body(axum::body::Body::empty()).expect("request");
        request_host(&req).map(|h| h.name.to_string())
    }

    #[test]
    fn the_request_host_is_refused_unless_it_is_one_readable_value_matching_the_target() {
        assert_eq!(
            guarded(&[b"localhost:8000"], "/status"),
            Ok("localhost".into())
        );
        assert_eq!(
            guarded(&[b"localhost:8000"], "http://LOCALHOST:8000/status"),
            Ok("localhost".into())
        );
        let refused = [
            (guarded(&[], "/status"), "no Host header"),
            (
                guarded(&[b"localhost", b"evil.com"], "/status"),
                "more than one Host header",
            ),
            (guarded(&[b"local\xffhost"], "/status"), "not plain ASCII"),
            (
                guarded(&[b"[::1]evil.com"], "/status"),
                "is not a host name",
            ),
            (
                guarded(&[b"localhost:8000"], "http://evil.com/status"),
                "the request target names",
            ),
            (
                guarded(&[b"localhost:8000"], "http://localhost:9/status"),
                "the request target names",
            ),
        ];
        for (got, why) in refused {
            assert!(
                got.as_ref().is_err_and(|e| e.contains(why)),
                "{got:?}: {why}"
            );
        }
    }
}
