//! `GET /v1/models`, `GET /health`, `GET /metrics`.

use std::fmt::Write;

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
    let mut text = state.metrics.render();
    if let Some(grammars) = state.model.grammars() {
        let (hits, misses) = grammars.cache_counts();
        let _ = writeln!(
            text,
            "# HELP nemo_grammar_cache_hits_total Structured-output constraints served from the compiled-grammar cache.\n\
             # TYPE nemo_grammar_cache_hits_total counter\nnemo_grammar_cache_hits_total {hits}\n\
             # HELP nemo_grammar_cache_misses_total Structured-output constraints not in the cache: compiled, or refused as invalid.\n\
             # TYPE nemo_grammar_cache_misses_total counter\nnemo_grammar_cache_misses_total {misses}"
        );
    }
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
