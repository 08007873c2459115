//! The local dashboard at `GET /ui`: one page, its script and its style sheet, embedded in
//! the binary from `assets/ui/` (no CDN, no third-party library), and the JSON it polls:
//! `GET /ui/api/state` (providers, waiting requests, config errors, the model catalog and
//! the last requests) and `GET /ui/api/series?hours=24` (hourly buckets per provider, the
//! seam a persistent history can feed later). It reads snapshots and the telemetry and
//! changes nothing; the page's on/off switches call the existing admin routes.
//!
//! The page is static, so it is served without the auth token (a browser cannot send one
//! on navigation); everything with data behind it asks for the token. Every answer here
//! carries a strict Content-Security-Policy (no inline script or style), and the JSON
//! carries an `ETag`: a poll that finds nothing changed gets a bodiless 304.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::engine::Engine;

const INDEX_HTML: &str = include_str!("../../assets/ui/index.html");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const STYLE_CSS: &str = include_str!("../../assets/ui/style.css");

/// The Content-Security-Policy of every dashboard answer: scripts, styles and requests to
/// this origin only, no inline code, no frames, no forms.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Paths that are served without the auth token: the page and its static assets, which
/// hold no data.
pub const PUBLIC_PATHS: [&str; 4] = ["/ui", "/ui/", "/ui/app.js", "/ui/style.css"];

fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A new build brings new assets on the same URL: always revalidate.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    hardened(resp)
}

/// `GET /ui`: the page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/style.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// FNV-1a of the body, as a strong ETag.
fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// `body` as JSON with its ETag, or a bodiless 304 when the client already has it.
fn json_if_changed(headers: &HeaderMap, value: &serde_json::Value) -> Response {
    let body = value.to_string();
    let tag = etag(body.as_bytes());
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    hardened(resp)
}

/// What the page shows, without anything that changes by itself every second (cooldowns
/// are sent as deadlines and counted down in the browser), so that an unchanged state has
/// an unchanged ETag.
pub fn state(engine: &Engine) -> serde_json::Value {
    let snap = engine.pool.snapshot(Utc::now());
    let config = engine.config();
    let providers: Vec<_> = snap
        .by_priority()
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name,
                "enabled": p.enabled,
                "state": p.state.as_str(),
                "priority": p.priority,
                "model": p.model_shown(),
                "request_count": p.request_count,
                "total_requests": p.total_requests,
                "total_tokens_used": p.total_tokens_used,
                "rate_limited_until": p.rate_limited_until,
                "cooldown_reason": p.cooldown_reason,
                "last_error": p.last_error,
                "retired": p.retired_text(),
                "keys": p.keys.len(),
            })
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "endpoint": config.endpoint_url(),
        "metrics": config.server.metrics,
        "providers": providers,
        "waiting": snap.waiting,
        "config": snap.config,
        "key_store": snap.key_store,
        "state_error": snap.state_error,
        "catalog": crate::catalog::report(engine),
        "recent": engine.telemetry.recent(),
    })
}

/// `GET /ui/api/state`.
pub async fn api_state(State(engine): State<Engine>, headers: HeaderMap) -> Response {
    json_if_changed(&headers, &state(&engine))
}

/// The query of `GET /ui/api/series`.
#[derive(Debug, Deserialize)]
pub struct SeriesQuery {
    /// Hours back from now (1 to 720; default 24).
    hours: Option<u32>,
}

/// `GET /ui/api/series?hours=24`: hourly buckets per provider.
pub async fn api_series(
    State(engine): State<Engine>,
    Query(q): Query<SeriesQuery>,
    headers: HeaderMap,
) -> Response {
    let hours = q.hours.unwrap_or(24);
    let now = Utc::now();
    // From the usage history where it runs (kept across restarts, 30 days back); from
    // what this run counted in memory where it does not.
    let from_db = if engine.history.enabled() {
        let history = engine.history.clone();
        let span = u64::from(hours.clamp(1, crate::telemetry::series::MAX_HOURS));
        let from = crate::history::hour_of(now).saturating_sub(span - 1);
        match tokio::task::spawn_blocking(move || history.rows_since(from)).await {
            Ok(Ok(rows)) => Some(crate::telemetry::series::from_history(&rows, hours, now)),
            Ok(Err(e)) => {
                tracing::debug!("dashboard charts from memory: {e}");
                None
            }
            Err(_) => None,
        }
    } else {
        None
    };
    let view = from_db.unwrap_or_else(|| engine.telemetry.series(hours, now));
    let value = serde_json::to_value(&view).unwrap_or_else(|_| json!({}));
    json_if_changed(&headers, &value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_only_its_own_assets() {
        let html = INDEX_HTML.to_ascii_lowercase();
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        for tag in html.split('<').skip(1) {
            let inside = tag.split('>').next().unwrap_or("");
            let handler = inside
                .split_whitespace()
                .skip(1)
                .any(|attr| attr.starts_with("on") && attr.contains('='));
            assert!(!handler, "inline event handler in <{inside}>");
        }
        for tag in html.split("<script").skip(1) {
            let head = tag.split('>').next().unwrap_or("");
            assert!(head.contains("src=\"/ui/app.js\""), "inline script: {tag}");
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(
            !APP_JS.contains("innerHTML"),
            "text is set as text, never as HTML"
        );
        assert!(!APP_JS.contains("eval("));
    }

    #[test]
    fn an_unchanged_body_gets_a_304_with_the_same_tag() {
        let value = json!({"a": 1});
        let first = json_if_changed(&HeaderMap::new(), &value);
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, tag.clone());
        let again = json_if_changed(&headers, &value);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag);
        let changed = json_if_changed(&headers, &json!({"a": 2}));
        assert_eq!(changed.status(), StatusCode::OK);
    }
}
