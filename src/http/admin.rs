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
use crate::http::error::ApiError;

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
pub async fn metrics(State(engine): State<Engine>) -> Result<Response, ApiError> {
    if !engine.config().server.metrics {
        return Err(ApiError::not_found("/metrics"));
    }
    let snap = engine.pool.snapshot(Utc::now());
    let text = engine.telemetry.render_metrics(&snap);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::telemetry::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
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

fn unknown_provider(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_provider",
        format!("no provider named {name:?} is configured"),
    )
}

fn toggle(engine: &Engine, name: &str, enabled: bool) -> Result<Response, ApiError> {
    if !engine.set_enabled(name, enabled) {
        return Err(unknown_provider(name));
    }
    Ok(Json(json!({ "name": name, "enabled": enabled })).into_response())
}

/// `POST /providers/{name}/reset`: ends the provider's cooldowns and benches; answers
/// its fresh status (as in `/status`).
pub async fn reset(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let snap = engine
        .reset_provider(&name)
        .ok_or_else(|| unknown_provider(&name))?;
    Ok(Json(snap).into_response())
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
) -> Result<Response, ApiError> {
    let query = history::report::Query::parse(params.days.as_deref(), params.provider.as_deref())
        .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_days",
            e.to_string(),
        )
    })?;
    let configured: Vec<String> = engine
        .pool
        .snapshot(Utc::now())
        .by_priority()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let h = engine.history.clone();
    let report = tokio::task::spawn_blocking(move || {
        history::report::answer(&query, &configured, Utc::now(), |from| h.rows_since(from))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "history_failed",
            e.to_string(),
        )
    })?
    .map_err(|e| match e {
        history::report::AnswerError::Query(e) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_provider",
            e.to_string(),
        ),
        history::report::AnswerError::History(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "history_unavailable",
            crate::logging::error_chain(&e),
        ),
    })?;
    Ok(Json(report).into_response())
}

/// `POST /providers/{name}/enable`.
pub async fn enable(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    toggle(&engine, &name, true)
}

/// `POST /providers/{name}/disable`.
pub async fn disable(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    toggle(&engine, &name, false)
}

/// `POST /reload`: re-read the config file (and keys).
pub async fn reload(State(engine): State<Engine>) -> Result<Response, ApiError> {
    let config = engine.reload().await.map_err(|e| match e {
        EngineError::Config(e) => {
            let err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "invalid_config",
                format!("config not reloaded, the running one stays: {e}"),
            );
            match e.invalid() {
                Some(inv) => err.with_location(inv.line, inv.column),
                None => err,
            }
        }
        e => ApiError::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "reload_failed",
            e.to_string(),
        ),
    })?;
    Ok(Json(json!({
        "status": "reloaded",
        "providers": config.providers.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "restart_needed": engine.restart_needed(),
    }))
    .into_response())
}

/// `POST /keys/reload`: re-read keys from the store (sent by `llm-rotator keys ...`).
pub async fn reload_keys(State(engine): State<Engine>) -> Result<Response, ApiError> {
    engine.reload_keys().await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "keys_reload_failed",
            e.to_string(),
        )
    })?;
    Ok(Json(json!({ "status": "keys reloaded" })).into_response())
}
