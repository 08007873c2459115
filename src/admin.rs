//! Admin routes: `/health`, `/status`, `/stats`, `/stats/history`, `/metrics`, provider
//! toggles and resets, the notifications toggle, config and key reloads.
//! They read pool snapshots and send commands through the [`Engine`]; they never change
//! state themselves.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::json;

use crate::engine::{Engine, EngineError};
use crate::history;
use crate::proxy::error::ApiError;

/// `GET /health`.
pub async fn health(State(engine): State<Engine>) -> Response {
    let snap = engine.pool.snapshot(Utc::now());
    Json(json!({
        "status": "ok",
        "service": "llm-rotator",
        "version": env!("CARGO_PKG_VERSION"),
        "providers_ready": snap.ready_count(),
        "providers_total": snap.providers.len(),
    }))
    .into_response()
}

/// `GET /status`: the full snapshot.
pub async fn status(State(engine): State<Engine>) -> Response {
    let snap = engine.pool.snapshot(Utc::now());
    let config = engine.config();
    let mut value = serde_json::to_value(&snap).unwrap_or_else(|_| json!({}));
    value["service"] = json!("llm-rotator");
    value["version"] = json!(env!("CARGO_PKG_VERSION"));
    value["endpoint"] = json!(config.endpoint_url());
    value["pid"] = json!(std::process::id());
    value["notifications"] = json!(engine.settings.notifications());
    Json(value).into_response()
}

/// `POST /notifications/enable`: desktop notifications on (as the menu's toggle).
pub async fn notifications_on(State(engine): State<Engine>) -> Response {
    engine.settings.set_notifications(true);
    Json(json!({ "notifications": true })).into_response()
}

/// `POST /notifications/disable`: desktop notifications off (as the menu's toggle).
pub async fn notifications_off(State(engine): State<Engine>) -> Response {
    engine.settings.set_notifications(false);
    Json(json!({ "notifications": false })).into_response()
}

/// `GET /metrics`: counters, the latency histogram and provider gauges in the Prometheus
/// text format; a 404 when `server.metrics = false`.
pub async fn metrics(State(engine): State<Engine>) -> Response {
    if !engine.config().server.metrics {
        return ApiError::not_found("/metrics").into_response();
    }
    let snap = engine.pool.snapshot(Utc::now());
    let text = engine.telemetry.render_metrics(&snap);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

/// `GET /catalog`: each provider's model catalog and configured models.
pub async fn catalog(State(engine): State<Engine>) -> Response {
    Json(json!({ "providers": crate::catalog::report(&engine) })).into_response()
}

/// `POST /catalog/refresh`: reads every catalog again now and answers when done (or after
/// 30 s, with what is known then).
pub async fn refresh_catalog(State(engine): State<Engine>) -> Response {
    let mut rounds = engine.pool.catalog_rounds();
    let before = *rounds.borrow_and_update();
    engine.pool.catalog_wanted().notify_one();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        rounds.wait_for(|n| *n > before),
    )
    .await;
    Json(json!({ "providers": crate::catalog::report(&engine) })).into_response()
}

/// `GET /stats`: counters only.
pub async fn stats(State(engine): State<Engine>) -> Response {
    let snap = engine.pool.snapshot(Utc::now());
    let providers: Vec<_> = snap
        .providers
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "request_count": p.request_count,
                "total_requests": p.total_requests,
                "is_rate_limited": p.is_rate_limited,
                "total_tokens_used": p.total_tokens_used,
            })
        })
        .collect();
    Json(json!({ "providers": providers })).into_response()
}

fn unknown_provider(name: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_provider",
        format!("no provider named {name:?} is configured"),
    )
    .into_response()
}

fn toggle(engine: &Engine, name: &str, enabled: bool) -> Response {
    if engine.set_enabled(name, enabled) {
        Json(json!({ "name": name, "enabled": enabled })).into_response()
    } else {
        unknown_provider(name)
    }
}

/// `POST /providers/{name}/reset`: ends the provider's cooldowns and benches; answers
/// its fresh status (as in `/status`).
pub async fn reset(State(engine): State<Engine>, Path(name): Path<String>) -> Response {
    match engine.reset_provider(&name) {
        Some(snap) => Json(snap).into_response(),
        None => unknown_provider(&name),
    }
}

/// The query of `GET /stats/history`, as sent (validated by [`history::report::Query`]).
#[derive(Debug, serde::Deserialize)]
pub struct HistoryParams {
    days: Option<String>,
    provider: Option<String>,
}

/// `GET /stats/history?days=N&provider=P`: the usage history per provider and day (see
/// [`history::report`]); `llm-rotator stats` reads it here while the agent runs, since
/// only one process may open the database.
pub async fn history(
    State(engine): State<Engine>,
    Query(params): Query<HistoryParams>,
) -> Response {
    let query =
        match history::report::Query::parse(params.days.as_deref(), params.provider.as_deref()) {
            Ok(q) => q,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_days",
                    e.to_string(),
                )
                .into_response()
            }
        };
    let configured: Vec<String> = engine
        .pool
        .snapshot(Utc::now())
        .by_priority()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let h = engine.history.clone();
    let answer = tokio::task::spawn_blocking(move || {
        history::report::answer(&query, &configured, Utc::now(), |from| h.rows_since(from))
    })
    .await;
    match answer {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(history::report::AnswerError::Query(e))) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_provider",
            e.to_string(),
        )
        .into_response(),
        Ok(Err(history::report::AnswerError::History(e))) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "history_unavailable",
            crate::logging::error_chain(&e),
        )
        .into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "history_failed",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `POST /providers/{name}/enable`.
pub async fn enable(State(engine): State<Engine>, Path(name): Path<String>) -> Response {
    toggle(&engine, &name, true)
}

/// `POST /providers/{name}/disable`.
pub async fn disable(State(engine): State<Engine>, Path(name): Path<String>) -> Response {
    toggle(&engine, &name, false)
}

/// `POST /reload`: re-read the config file (and keys).
pub async fn reload(State(engine): State<Engine>) -> Response {
    match engine.reload().await {
        Ok(config) => Json(json!({
            "status": "reloaded",
            "providers": config.providers.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            "restart_needed": engine.restart_needed(),
        }))
        .into_response(),
        Err(EngineError::Config(e)) => {
            let err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "invalid_config",
                format!("config not reloaded, the running one stays: {e}"),
            );
            let mut body = err.body();
            if let Some(inv) = e.invalid() {
                body["error"]["line"] = json!(inv.line);
                body["error"]["column"] = json!(inv.column);
            }
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
        Err(e) => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "reload_failed",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `POST /keys/reload`: re-read keys from the store (sent by `llm-rotator keys ...`).
pub async fn reload_keys(State(engine): State<Engine>) -> Response {
    match engine.reload_keys().await {
        Ok(()) => Json(json!({ "status": "keys reloaded" })).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "keys_reload_failed",
            e.to_string(),
        )
        .into_response(),
    }
}
