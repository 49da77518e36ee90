//! The HTTP routes and what every request goes through: the API key check on `/v1/*`,
//! counting responses for `/metrics`, refusing new work while draining, OpenAI-shaped errors
//! for unknown routes and methods.

mod chat;
mod completions;
pub(crate) mod generate;
mod info;
mod tokenize;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::engine_handle::EngineHandle;
use super::error::ApiError;
use super::metrics::Metrics;
use super::model::ServedModel;
use super::ServerConfig;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    pub model: Arc<dyn ServedModel>,
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    /// Set on SIGTERM: new requests get 503 while in-flight ones finish.
    pub draining: Arc<AtomicBool>,
    /// When the server started (the model's `created`).
    pub started: u64,
}

/// Route names as counted in `nemo_http_requests_total`.
const ROUTES: [&str; 7] = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize", "/detokenize", "/health", "/metrics"];

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/models", get(info::models))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_api_key));
    Router::new()
        .merge(v1)
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), count_and_drain))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn count_and_drain(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let route = ROUTES.iter().copied().find(|r| Some(*r) == matched.as_deref()).unwrap_or("other");
    let response = if state.draining.load(Ordering::SeqCst) && route != "/metrics" {
        ApiError::unavailable("the server is shutting down and accepts no new requests").into_response()
    } else {
        next.run(request).await
    };
    state.metrics.count_response(route, response.status().as_u16());
    response
}

async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let refusal = match given {
            None => Some("missing API key: send the header `Authorization: Bearer <key>`"),
            Some(given) if !keys_match(given.as_bytes(), key.as_bytes()) => Some("invalid API key"),
            Some(_) => None,
        };
        if let Some(message) = refusal {
            return ApiError::new(StatusCode::UNAUTHORIZED, message).with_code("invalid_api_key").into_response();
        }
    }
    next.run(request).await
}

/// Compares in time that depends only on the server's key length, never on where the
/// first difference is or how long the given key is.
fn keys_match(given: &[u8], key: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let mut equal = subtle::Choice::from((given.len() == key.len()) as u8);
    for (i, k) in key.iter().enumerate() {
        equal &= given.get(i).copied().unwrap_or(0).ct_eq(k);
    }
    equal.into()
}

async fn not_found(State(state): State<AppState>, request: Request) -> Response {
    state.metrics.count_response("other", 404);
    let message = format!("no route {} {}", request.method(), request.uri().path());
    ApiError::new(StatusCode::NOT_FOUND, message).into_response()
}

async fn method_not_allowed(State(state): State<AppState>, request: Request) -> Response {
    state.metrics.count_response("other", 405);
    let message = format!("{} is not allowed on {}", request.method(), request.uri().path());
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::keys_match;

    #[test]
    fn keys_match_only_when_equal() {
        assert!(keys_match(b"secret", b"secret"));
        for other in [&b""[..], b"secre", b"secrets", b"Secret", b"secreu", b"secret\0"] {
            assert!(!keys_match(other, b"secret"), "{other:?}");
        }
    }
}
