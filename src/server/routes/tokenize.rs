//! `POST /tokenize` and `POST /detokenize`, as vLLM serves them: a prompt or a conversation
//! to the ids the engine would run (so a client can count tokens against `max_model_len`), and
//! ids back to text.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::chat::apply_tool_choice;
use super::generate::{check_model, read_body};
use super::AppState;
use crate::server::error::ApiError;
use crate::server::openai::parse::{body_text, read_json};
use crate::server::openai::request::ChatFields;
use crate::tokenizer::{ChatRequest, SpecialTokenPolicy};

#[derive(Deserialize)]
struct TokenizeFields {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Value>,
    /// With `prompt`: BOS first as the model wants (default), or the bare text's ids.
    #[serde(default)]
    add_special_tokens: Option<bool>,
}

#[derive(Deserialize)]
struct DetokenizeFields {
    #[serde(default)]
    model: Option<String>,
    tokens: Vec<i64>,
}

/// `{"prompt": ...}` as `/v1/completions` encodes it, or `{"messages": [...], "tools": ...}` as
/// `/v1/chat/completions` does; returns `{"count", "max_model_len", "tokens"}`.
pub async fn tokenize(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let text = body_text(&bytes)?;
    let fields: TokenizeFields = read_json(text)?;
    if let Some(model) = &fields.model {
        check_model(&state, model)?;
    }
    let model = state.model.clone();
    let tokens = match (fields.prompt, fields.messages.is_some()) {
        (Some(_), true) => return Err(ApiError::bad_request("give either `prompt` or `messages`, not both")),
        (None, false) => return Err(ApiError::bad_request("give `prompt` (a text) or `messages` (a conversation)")),
        (Some(prompt), false) => {
            let bare = fields.add_special_tokens == Some(false);
            blocking(move || match bare {
                true => model.tokenizer().encode(&prompt).map_err(|e| e.to_string()),
                false => model.encode_prompt(&prompt),
            })
            .await?
            .map_err(|m| ApiError::invalid_param("prompt", m))?
        }
        (None, true) => {
            // As the chat endpoint builds its prompt: `tool_choice` may hide the tools or
            // start the answer with a call.
            let mut chat: ChatRequest = read_json(text)?;
            let own: ChatFields = read_json(text)?;
            let (_, forced) = apply_tool_choice(model.as_ref(), &own, &mut chat)?;
            let mut tokens = blocking(move || model.encode_chat(&chat)).await?.map_err(ApiError::bad_request)?;
            tokens.extend(forced);
            tokens
        }
    };
    Ok(Json(json!({"count": tokens.len(), "max_model_len": state.engine.info().limits.max_context, "tokens": tokens})))
}

/// `{"tokens": [...]}` -> `{"prompt": text}`, special tokens written out (`<s>`, `[INST]`).
pub async fn detokenize(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&state, &headers, body).await?;
    let fields: DetokenizeFields = read_json(body_text(&bytes)?)?;
    if let Some(model) = &fields.model {
        check_model(&state, model)?;
    }
    let vocab = state.engine.info().limits.vocab_size;
    let mut ids = Vec::with_capacity(fields.tokens.len());
    for (i, &t) in fields.tokens.iter().enumerate() {
        match u32::try_from(t) {
            Ok(id) if (id as usize) < vocab => ids.push(id),
            _ => return Err(ApiError::invalid_param(format!("tokens[{i}]"), format!("{t} is not a token id of this model (vocabulary {vocab})"))),
        }
    }
    let model = state.model.clone();
    let prompt = blocking(move || model.tokenizer().decode(&ids, SpecialTokenPolicy::Keep)).await?.map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(json!({"prompt": prompt})))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))
}
