//! `GET /v1/models`, `GET /health`, `GET /metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::server::error::ApiError;

pub async fn models(State(state): State<AppState>) -> Json<serde_json::Value> {
    let limits = state.engine.info().limits;
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model.name(),
            "object": "model",
            "created": state.started,
            "owned_by": "nemo-engine",
            "max_model_len": limits.max_context,
        }]
    }))
}

/// 200 while the engine thread runs; 503 once it has stopped (or while draining, see the
/// middleware), so a load balancer stops sending work.
pub async fn health(State(state): State<AppState>) -> Response {
    if !state.engine.is_alive() {
        return ApiError::unavailable("the engine has stopped").into_response();
    }
    Json(json!({"status": "ok"})).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
