//! `POST /v1/chat/completions`: a conversation (with tools) -> the assistant's message, whole
//! or streamed as chunks.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::generate::{check_model, finish_reason, next_choice, read_body, start};
use super::AppState;
use crate::server::choices::{Choices, UsageSum};
use crate::server::engine_loop::GenEvent;
use crate::server::error::ApiError;
use crate::server::model::ServedModel;
use crate::server::openai::parse::{body_text, read_json};
use crate::server::openai::request::{ChatFields, SharedFields};
use crate::server::openai::response::*;
use crate::server::openai::{response_id, unix_time};
use crate::server::output::{OutputSpec, Piece};
use crate::server::params::{generation_params, MAX_TOP_LOGPROBS};
use crate::server::sse::{sse_response, StreamFormat};
use crate::tokenizer::ChatRequest;

pub async fn handle(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let bytes = read_body(&state, &headers, body).await?;
    let text = body_text(&bytes)?;
    let shared: SharedFields = read_json(text)?;
    let own: ChatFields = read_json(text)?;
    let mut chat: ChatRequest = read_json(text)?;
    check_model(&state, &shared.model)?;
    let max_tokens = match (own.max_completion_tokens, shared.max_tokens) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let params = generation_params(&shared, max_tokens, state.model.sampling_defaults())?;
    let logprobs = logprobs(&own)?;
    refuse_unsupported(&own)?;
    let use_tools = tool_choice(&own)?;
    if !use_tools {
        chat.tools = None; // `none`: the model is not shown the tools
    }
    let has_tools = chat.tools.as_ref().is_some_and(|t| !t.is_empty());
    if has_tools && !state.model.supports_tools() {
        return Err(ApiError::invalid_param(
            "tools",
            format!("the model `{}` has no chat format with tools (Mistral's v3 template renders them)", state.model.name()),
        ));
    }
    let model = state.model.clone();
    let prompt = tokio::task::spawn_blocking(move || model.encode_chat(&chat))
        .await
        .map_err(|e| ApiError::internal(format!("encoding the conversation failed: {e}")))?
        .map_err(ApiError::bad_request)?;
    let output = OutputSpec { stop_strings: params.stop_strings.clone(), tool_calls: has_tools, min_tokens: params.min_tokens };
    let choices = start(&state, prompt, &params, logprobs, output, arrived).await?;
    let format = ChatOutput {
        id: response_id("chatcmpl-"),
        created: unix_time(),
        model: state.model.clone(),
        include_usage: params.include_usage,
        logprobs: logprobs.is_some(),
        n: params.n,
        usage: UsageSum::default(),
    };
    if params.stream {
        return Ok(sse_response(choices, format, state.config.keepalive));
    }
    Ok(Json(collect(choices, format).await?).into_response())
}

/// `logprobs` / `top_logprobs` -> how many alternatives per token, if any.
fn logprobs(own: &ChatFields) -> Result<Option<usize>, ApiError> {
    let top = own.top_logprobs;
    if let Some(k) = top.filter(|k| !(0..=MAX_TOP_LOGPROBS).contains(k)) {
        return Err(ApiError::invalid_param("top_logprobs", format!("top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {k}")));
    }
    match own.logprobs {
        Some(true) => Ok(Some(top.unwrap_or(0) as usize)),
        _ if top.is_some_and(|k| k > 0) => {
            Err(ApiError::invalid_param("top_logprobs", "top_logprobs needs logprobs set to true"))
        }
        _ => Ok(None),
    }
}

fn refuse_unsupported(own: &ChatFields) -> Result<(), ApiError> {
    if own.functions.is_some() || own.function_call.is_some() {
        let field = if own.functions.is_some() { "functions" } else { "function_call" };
        return Err(ApiError::invalid_param(field, "the deprecated `functions` API is not supported: use `tools`"));
    }
    if let Some(format) = &own.response_format {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(ApiError::invalid_param(
                "response_format",
                "only response_format {\"type\": \"text\"} is supported (no JSON mode or schemas)",
            ));
        }
    }
    Ok(())
}

/// `tool_choice`: `auto` (the default) or `none`; false for `none`.
fn tool_choice(own: &ChatFields) -> Result<bool, ApiError> {
    match &own.tool_choice {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(serde_json::Value::String(s)) if s == "auto" => Ok(true),
        Some(serde_json::Value::String(s)) if s == "none" => Ok(false),
        Some(serde_json::Value::String(s)) if s == "required" => Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice \"required\" is not supported (the model cannot be forced to call); use \"auto\" or \"none\"",
        )),
        Some(serde_json::Value::Object(_)) => Err(ApiError::invalid_param(
            "tool_choice",
            "naming a function in tool_choice is not supported; use \"auto\" or \"none\"",
        )),
        Some(other) => Err(ApiError::invalid_param("tool_choice", format!("tool_choice must be \"auto\" or \"none\", got {other}"))),
    }
}

struct ChatOutput {
    id: String,
    created: u64,
    model: Arc<dyn ServedModel>,
    include_usage: bool,
    logprobs: bool,
    /// Choices (`n`).
    n: usize,
    usage: UsageSum,
}

impl ChatOutput {
    fn chunk(&self, index: usize, delta: Delta, logprobs: Option<ChatLogprobs>, finish_reason: Option<&'static str>) -> String {
        let choice = ChunkChoice { index, delta, logprobs, finish_reason };
        self.payload(vec![choice], None)
    }

    fn payload(&self, choices: Vec<ChunkChoice>, usage: Option<UsageOut>) -> String {
        let chunk = ChatChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.name(),
            choices,
            usage,
        };
        serde_json::to_string(&chunk).expect("chunks serialise")
    }
}

/// The delta of some pieces: their text, and tool-call announcements and argument parts.
fn delta(pieces: Vec<Piece>) -> Delta {
    let mut d = Delta::default();
    for piece in pieces {
        match piece {
            Piece::Text(t) => d.content.get_or_insert_with(String::new).push_str(&t),
            Piece::ToolCallStarted { index, id, name } => d.tool_calls.push(ToolCallDelta {
                index,
                id: Some(id),
                kind: Some("function"),
                function: FunctionDelta { name: Some(name), arguments: Some(String::new()) },
            }),
            Piece::ToolArguments { index, delta } => d.tool_calls.push(ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: FunctionDelta { name: None, arguments: Some(delta) },
            }),
        }
    }
    d
}

impl StreamFormat for ChatOutput {
    fn start(&mut self) -> Vec<String> {
        let first = || Delta { role: Some("assistant"), content: Some(String::new()), tool_calls: Vec::new() };
        (0..self.n).map(|i| self.chunk(i, first(), None, None)).collect()
    }

    fn event(&mut self, index: usize, event: GenEvent) -> (Vec<String>, bool) {
        match event {
            GenEvent::Token { logprobs, pieces, .. } => {
                let delta = delta(pieces);
                let logprobs = match (self.logprobs, logprobs) {
                    (true, Some(lp)) => {
                        Some(ChatLogprobs { content: vec![chat_logprob_entry(self.model.tokenizer(), &lp)] })
                    }
                    _ => None,
                };
                if delta.content.is_none() && delta.tool_calls.is_empty() && logprobs.is_none() {
                    return (Vec::new(), false);
                }
                (vec![self.chunk(index, delta, logprobs, None)], false)
            }
            GenEvent::Finished { reason, usage, output } => {
                let reason = match finish_reason(&reason, !output.tool_calls.is_empty()) {
                    Ok(r) => r,
                    Err(e) => return (vec![e.body_json()], true),
                };
                let mut out = Vec::new();
                if !output.pieces.is_empty() {
                    out.push(self.chunk(index, delta(output.pieces), None, None));
                }
                out.push(self.chunk(index, Delta::default(), None, Some(reason)));
                self.usage.add(usage);
                (out, false)
            }
            GenEvent::Accepted | GenEvent::Rejected(_) => (Vec::new(), false),
        }
    }

    fn finish(&mut self) -> Vec<String> {
        match self.include_usage {
            true => vec![self.payload(Vec::new(), Some(self.usage.total().into()))],
            false => Vec::new(),
        }
    }
}

async fn collect(mut choices: Choices, mut format: ChatOutput) -> Result<ChatCompletion, ApiError> {
    let tok = format.model.tokenizer();
    let mut contents = vec![String::new(); format.n];
    let mut all_logprobs: Vec<Option<ChatLogprobs>> = (0..format.n).map(|_| format.logprobs.then(ChatLogprobs::default)).collect();
    let mut done: Vec<ChatChoice> = Vec::with_capacity(format.n);
    while let Some((index, event)) = next_choice(&mut choices).await? {
        let content = &mut contents[index];
        match event {
            GenEvent::Token { logprobs: lp, pieces, .. } => {
                push_text(content, &pieces);
                if let (Some(all), Some(lp)) = (all_logprobs[index].as_mut(), lp) {
                    all.content.push(chat_logprob_entry(tok, &lp));
                }
            }
            GenEvent::Finished { reason, usage, output } => {
                push_text(content, &output.pieces);
                let content = std::mem::take(content);
                let has_calls = !output.tool_calls.is_empty();
                let finish_reason = finish_reason(&reason, has_calls)?;
                let tool_calls: Vec<ToolCallOut> = output
                    .tool_calls
                    .into_iter()
                    .map(|c| ToolCallOut {
                        id: c.id.clone(),
                        kind: "function",
                        function: FunctionOut { arguments: c.arguments_json(), name: c.name },
                    })
                    .collect();
                let content = if has_calls && content.is_empty() { None } else { Some(content) };
                let message = AssistantMessage { role: "assistant", content, tool_calls };
                let logprobs = all_logprobs[index].take();
                done.push(ChatChoice { index, message, logprobs, finish_reason });
                format.usage.add(usage);
            }
            GenEvent::Accepted | GenEvent::Rejected(_) => {}
        }
    }
    done.sort_by_key(|c| c.index);
    Ok(ChatCompletion {
        id: format.id.clone(),
        object: "chat.completion",
        created: format.created,
        model: format.model.name().to_string(),
        choices: done,
        usage: format.usage.total().into(),
    })
}

fn push_text(content: &mut String, pieces: &[Piece]) {
    for piece in pieces {
        if let Piece::Text(t) = piece {
            content.push_str(t);
        }
    }
}
