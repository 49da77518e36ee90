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
use crate::server::structured::forced_call;
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
    let mut params = generation_params(&shared, max_tokens, state.model.sampling_defaults())?;
    let logprobs = logprobs(&own)?;
    refuse_unsupported(&own)?;
    let (choice, forced) = apply_tool_choice(state.model.as_ref(), &own, &mut chat)?;
    let has_tools = chat.tools.as_ref().is_some_and(|t| !t.is_empty());
    // The call's grammar: well-formed JSON whose arguments follow the tool's schema. A server
    // without the grammar compiler (it said why at start-up) forces the call's start only.
    if !forced.is_empty() && state.model.grammars().is_some() {
        if let Some(other) = &params.constraint {
            return Err(ApiError::invalid_param(other.field, "a structured-output constraint cannot be combined with a forced tool call"));
        }
        let name = match &choice {
            ToolChoice::Function(name) => Some(name.as_str()),
            _ => None,
        };
        let single = own.parallel_tool_calls == Some(false);
        params.constraint = Some(forced_call(chat.tools.as_deref().unwrap_or_default(), name, single)?);
    }
    if let Some(c) = params.constraint.as_ref().filter(|_| chat.continue_final_message) {
        // The grammar would start after the partial answer, which it has not seen.
        return Err(ApiError::invalid_param(c.field, "a structured-output constraint cannot continue a final assistant message"));
    }
    let model = state.model.clone();
    let mut prompt = tokio::task::spawn_blocking(move || model.encode_chat(&chat))
        .await
        .map_err(|e| ApiError::internal(format!("encoding the conversation failed: {e}")))?
        .map_err(ApiError::bad_request)?;
    prompt.extend_from_slice(&forced);
    let output = OutputSpec { stop_strings: params.stop_strings.clone(), tool_calls: has_tools, min_tokens: params.min_tokens, prefix: forced };
    let choices = start(&state, vec![prompt], &params, logprobs, output, arrived).await?;
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
    Ok(())
}

#[derive(Debug, PartialEq)]
pub(super) enum ToolChoice {
    Auto,
    None,
    /// Some call: the answer starts with `[TOOL_CALLS]`.
    Required,
    /// This function: the answer starts with `[TOOL_CALLS][{"name": NAME, "arguments":`.
    Function(String),
}

/// `tool_choice`: `auto` (the default), `none`, `required`, or
/// `{"type": "function", "function": {"name": ...}}`.
fn tool_choice(own: &ChatFields) -> Result<ToolChoice, ApiError> {
    let bad = |what: String| Err(ApiError::invalid_param("tool_choice", what));
    match &own.tool_choice {
        None | Some(serde_json::Value::Null) => Ok(ToolChoice::Auto),
        Some(serde_json::Value::String(s)) if s == "auto" => Ok(ToolChoice::Auto),
        Some(serde_json::Value::String(s)) if s == "none" => Ok(ToolChoice::None),
        Some(serde_json::Value::String(s)) if s == "required" => Ok(ToolChoice::Required),
        Some(v @ serde_json::Value::Object(_)) => match (v.get("type").and_then(|t| t.as_str()), v.pointer("/function/name").and_then(|n| n.as_str())) {
            (Some("function"), Some(name)) => Ok(ToolChoice::Function(name.to_string())),
            _ => bad(format!("a named tool_choice is {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {v}")),
        },
        Some(other) => bad(format!("tool_choice must be \"auto\", \"none\", \"required\" or a named function, got {other}")),
    }
}

/// What `tool_choice` does to the prompt, the same for `/v1/chat/completions` and `/tokenize`:
/// `none` hides the tools from the model; `required` or a named function returns the tokens
/// that start the call, which follow the encoded conversation.
pub(super) fn apply_tool_choice(model: &dyn ServedModel, own: &ChatFields, chat: &mut ChatRequest) -> Result<(ToolChoice, Vec<u32>), ApiError> {
    let choice = tool_choice(own)?;
    if choice == ToolChoice::None {
        chat.tools = None;
    }
    if chat.tools.as_ref().is_some_and(|t| !t.is_empty()) && !model.supports_tools() {
        return Err(ApiError::invalid_param(
            "tools",
            format!("the model `{}` has no chat format with tools (Mistral's v3 template renders them)", model.name()),
        ));
    }
    let forced = forced_call_prefix(&choice, chat, model.tokenizer())?;
    Ok((choice, forced))
}

/// The tokens a `required` or named `tool_choice` puts at the start of the answer: appended to
/// the prompt, and read by the output parser first, so that the model continues a tool call
/// (under the call's grammar, `server::structured::forced_call`).
fn forced_call_prefix(choice: &ToolChoice, chat: &ChatRequest, tok: &crate::tokenizer::Tokenizer) -> Result<Vec<u32>, ApiError> {
    let tools = chat.tools.as_deref().unwrap_or_default();
    let bad = |what: String| Err(ApiError::invalid_param("tool_choice", what));
    let name = match choice {
        ToolChoice::Auto | ToolChoice::None => return Ok(Vec::new()),
        _ if tools.is_empty() => return bad("tool_choice \"required\" or a named function needs `tools`".into()),
        _ if chat.continue_final_message => return bad("a forced tool call cannot continue a final assistant message".into()),
        ToolChoice::Required => None,
        ToolChoice::Function(name) if tools.iter().any(|t| &t.function.name == name) => Some(name),
        ToolChoice::Function(name) => return bad(format!("tool_choice names `{name}`, which is not among the tools")),
    };
    let Some(marker) = tok.special_id("[TOOL_CALLS]") else {
        return bad("the model's tokenizer has no [TOOL_CALLS] token".into());
    };
    let mut ids = vec![marker];
    if let Some(name) = name {
        // As the template writes calls (Python's json.dumps); no trailing space, so that the
        // model writes ` {` as one token as it would.
        let head = format!("[{{\"name\": {}, \"arguments\":", crate::tokenizer::json_py::PyJson::Str(name.clone()).dumps());
        ids.extend(tok.encode(&head).map_err(|e| ApiError::internal(format!("encoding the forced call failed: {e}")))?);
    }
    Ok(ids)
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
                self.usage.add(index, self.n, usage);
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
                format.usage.add(index, format.n, usage);
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
