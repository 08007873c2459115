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
use axum::serve::ListenerExt;
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Host (DNS rebinding), Origin (browser pages) and the optional bearer token.
async fn guard(State(engine): State<Engine>, req: Request, next: Next) -> Response {
    let config = engine.config();
    let server = &config.server;
    let headers = req.headers();
    if let Some(host) = host_name(headers) {
        let bind = server.host.to_string();
        let ok = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
            || host == bind
            || host == format!("[{bind}]")
            || server.allowed_hosts.contains(&host);
        if !ok {
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

/// Serves until `shutdown` completes, then lets in-flight requests (streams included)
/// finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(engine);
    // Without TCP_NODELAY, each streamed chunk after the first waits for the client's
    // delayed ACK (Nagle): up to 40 ms per chunk on Linux.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        res = &mut server => return res.map_err(ServeError::Io),
        _ = stop_rx => {}
    }
    tracing::info!(
        "shutting down; letting running requests finish for up to {}s",
        grace.as_secs()
    );
    match tokio::time::timeout(grace, server).await {
        Ok(res) => res.map_err(ServeError::Io),
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing the remaining connections");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
