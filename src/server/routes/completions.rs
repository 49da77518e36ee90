//! `POST /v1/completions`: a plain prompt (text or token ids) -> its continuation, whole or
//! streamed. One prompt per request; no `echo`, `suffix` or `best_of`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::generate::{check_choice_count, check_model, finish_reason, next_choice, read_body, start};
use super::AppState;
use crate::server::choices::{Choices, UsageSum};
use crate::server::engine_loop::GenEvent;
use crate::server::error::ApiError;
use crate::server::model::ServedModel;
use crate::server::openai::parse::{body_text, read_json};
use crate::server::openai::request::{CompletionFields, Prompt, SharedFields};
use crate::server::openai::response::*;
use crate::server::openai::{response_id, unix_time};
use crate::server::output::{OutputSpec, Piece};
use crate::server::params::{generation_params, MAX_TOP_LOGPROBS};
use crate::server::sse::{sse_response, StreamFormat};

/// OpenAI's default for this endpoint.
const DEFAULT_MAX_TOKENS: i64 = 16;

pub async fn handle(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let bytes = read_body(&state, &headers, body).await?;
    let text = body_text(&bytes)?;
    let shared: SharedFields = read_json(text)?;
    let own: CompletionFields = read_json(text)?;
    check_model(&state, &shared.model)?;
    let max_tokens = ("max_tokens", shared.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS));
    let params = generation_params(&shared, Some(max_tokens), state.model.sampling_defaults())?;
    refuse_unsupported(&own)?;
    let logprobs = match own.logprobs {
        Some(k) if !(0..=MAX_TOP_LOGPROBS).contains(&k) => {
            return Err(ApiError::invalid_param("logprobs", format!("logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {k}")))
        }
        Some(k) => Some(k as usize),
        None => None,
    };
    // Before any prompt is encoded: a body of a million tiny prompts costs nothing to refuse.
    let count = match &own.prompt {
        Prompt::Texts(v) => v.len(),
        Prompt::IdLists(v) => v.len(),
        Prompt::Text(_) | Prompt::Ids(_) => 1,
    };
    check_choice_count(count, params.n)?;
    let prompts = match own.prompt {
        Prompt::Text(text) => vec![encode(&state, text).await?],
        Prompt::Ids(ids) => vec![token_ids(&ids)?],
        Prompt::Texts(texts) if texts.is_empty() => return Err(no_prompt()),
        Prompt::IdLists(lists) if lists.is_empty() => return Err(no_prompt()),
        Prompt::Texts(texts) => {
            let mut prompts = Vec::with_capacity(texts.len());
            for text in texts {
                prompts.push(encode(&state, text).await?);
            }
            prompts
        }
        Prompt::IdLists(lists) => lists.iter().map(|ids| token_ids(ids)).collect::<Result<_, _>>()?,
    };
    let output = OutputSpec { stop_strings: params.stop_strings.clone(), tool_calls: false, min_tokens: params.min_tokens, prefix: Vec::new() };
    let choices = start(&state, prompts, &params, logprobs, output, arrived).await?;
    let format = CompletionOutput {
        id: response_id("cmpl-"),
        created: unix_time(),
        model: state.model.clone(),
        include_usage: params.include_usage,
        logprobs: logprobs.is_some(),
        chars_sent: vec![0; choices.len],
        n: params.n,
        usage: UsageSum::default(),
    };
    if params.stream {
        return Ok(sse_response(choices, format, state.config.keepalive));
    }
    Ok(Json(collect(choices, format).await?).into_response())
}

fn refuse_unsupported(own: &CompletionFields) -> Result<(), ApiError> {
    if own.echo == Some(true) {
        return Err(ApiError::invalid_param("echo", "echo is not supported by this server"));
    }
    if own.suffix.is_some() {
        return Err(ApiError::invalid_param("suffix", "suffix (fill-in-the-middle) is not supported by this server"));
    }
    if let Some(n) = own.best_of.filter(|&n| n != 1) {
        return Err(ApiError::invalid_param("best_of", format!("only best_of = 1 is supported, got {n}")));
    }
    Ok(())
}

fn no_prompt() -> ApiError {
    ApiError::invalid_param("prompt", "the list of prompts is empty")
}

async fn encode(state: &AppState, text: String) -> Result<Vec<u32>, ApiError> {
    let model = state.model.clone();
    tokio::task::spawn_blocking(move || model.encode_prompt(&text))
        .await
        .map_err(|e| ApiError::internal(format!("encoding the prompt failed: {e}")))?
        .map_err(|m| ApiError::invalid_param("prompt", m))
}

/// Token ids as given; the engine checks them against the vocabulary.
fn token_ids(ids: &[i64]) -> Result<Vec<u32>, ApiError> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            u32::try_from(id).map_err(|_| ApiError::invalid_param(format!("prompt[{i}]"), format!("{id} is not a token id")))
        })
        .collect()
}

struct CompletionOutput {
    id: String,
    created: u64,
    model: Arc<dyn ServedModel>,
    include_usage: bool,
    logprobs: bool,
    /// Per choice, characters of text sent so far (the next token's `text_offset`).
    chars_sent: Vec<usize>,
    /// Choices per prompt.
    n: usize,
    usage: UsageSum,
}

impl CompletionOutput {
    fn payload(&self, choices: Vec<CompletionChoice>, usage: Option<UsageOut>) -> String {
        let body = Completion {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: self.model.name(),
            choices,
            usage,
        };
        serde_json::to_string(&body).expect("completions serialise")
    }
}

fn text_of(pieces: &[Piece]) -> String {
    pieces.iter().filter_map(|p| if let Piece::Text(t) = p { Some(t.as_str()) } else { None }).collect()
}

impl StreamFormat for CompletionOutput {
    fn start(&mut self) -> Vec<String> {
        Vec::new()
    }

    fn event(&mut self, index: usize, event: GenEvent) -> (Vec<String>, bool) {
        match event {
            GenEvent::Token { logprobs, pieces, .. } => {
                let text = text_of(&pieces);
                let logprobs = match (self.logprobs, logprobs) {
                    (true, Some(lp)) => {
                        let mut all = CompletionLogprobs::default();
                        all.push(self.model.tokenizer(), &lp, self.chars_sent[index]);
                        Some(all)
                    }
                    _ => None,
                };
                self.chars_sent[index] += text.chars().count();
                if text.is_empty() && logprobs.is_none() {
                    return (Vec::new(), false);
                }
                let choice = CompletionChoice { index, text, logprobs, finish_reason: None };
                (vec![self.payload(vec![choice], None)], false)
            }
            GenEvent::Finished { reason, usage, output } => {
                let reason = match finish_reason(&reason, false) {
                    Ok(r) => r,
                    Err(e) => return (vec![e.body_json()], true),
                };
                let text = text_of(&output.pieces);
                let choice = CompletionChoice { index, text, logprobs: None, finish_reason: Some(reason) };
                self.usage.add(index, self.n, usage);
                (vec![self.payload(vec![choice], None)], false)
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

async fn collect(mut choices: Choices, mut format: CompletionOutput) -> Result<serde_json::Value, ApiError> {
    let tok = format.model.tokenizer();
    let mut texts = vec![String::new(); choices.len];
    let mut all_logprobs: Vec<Option<CompletionLogprobs>> = (0..choices.len).map(|_| format.logprobs.then(CompletionLogprobs::default)).collect();
    let mut done: Vec<CompletionChoice> = Vec::with_capacity(choices.len);
    while let Some((index, event)) = next_choice(&mut choices).await? {
        let text = &mut texts[index];
        match event {
            GenEvent::Token { logprobs: lp, pieces, .. } => {
                if let (Some(all), Some(lp)) = (all_logprobs[index].as_mut(), lp) {
                    all.push(tok, &lp, format.chars_sent[index]);
                }
                let piece = text_of(&pieces);
                format.chars_sent[index] += piece.chars().count();
                text.push_str(&piece);
            }
            GenEvent::Finished { reason, usage, output } => {
                text.push_str(&text_of(&output.pieces));
                let finish_reason = Some(finish_reason(&reason, false)?);
                done.push(CompletionChoice { index, text: std::mem::take(text), logprobs: all_logprobs[index].take(), finish_reason });
                format.usage.add(index, choices.n, usage);
            }
            GenEvent::Accepted | GenEvent::Rejected(_) => {}
        }
    }
    done.sort_by_key(|c| c.index);
    let body = Completion {
        id: &format.id,
        object: "text_completion",
        created: format.created,
        model: format.model.name(),
        choices: done,
        usage: Some(format.usage.total().into()),
    };
    Ok(serde_json::to_value(&body).expect("completions serialise"))
}
