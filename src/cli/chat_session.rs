//! One conversation of `nemo chat`: the history as messages, re-encoded by the model's template
//! every turn (so the prompt is exactly what the template makes of the whole conversation),
//! and the tokens the backend already holds, so a turn whose encoding extends them prefills
//! only the new suffix. (Mistral's v3 template moves the system prompt to the last user
//! message, so with --system each turn is prefilled whole, as mistral_common would encode it.)

use std::io;

use anyhow::{bail, Context};

use nemo_engine::engine::Backend;
use nemo_engine::generate::{generate, generate_after, GenerateRequest, Generation};
use nemo_engine::sampling::{Penalties, SamplingParams, StopCriteria};
use nemo_engine::structured::Grammar;
use nemo_engine::tokenizer::{ChatMessage, ChatRequest};

use super::chat_format::ChatFormat;
use super::text::Text;

/// How every turn of a chat is generated.
pub struct TurnSettings<'a> {
    pub params: SamplingParams,
    pub penalties: &'a Penalties,
    /// Ids that end the answer (EOS, end of turn).
    pub stop_ids: &'a [u32],
    pub max_tokens: usize,
    /// The constraint every answer follows, in its start state (each turn runs a copy).
    pub grammar: Option<&'a Grammar>,
}

pub struct ChatSession<'m> {
    format: &'m ChatFormat,
    text: &'m Text,
    system: Option<String>,
    messages: Vec<ChatMessage>,
    /// What the backend holds: the last prompt and every generated token but the last.
    held: Vec<u32>,
}

/// What a turn did, for the stderr line after it.
pub struct Turn {
    pub generation: Generation,
    pub answer: String,
}

impl<'m> ChatSession<'m> {
    pub fn new(format: &'m ChatFormat, text: &'m Text, system: Option<String>) -> Self {
        ChatSession { format, text, system, messages: Vec::new(), held: Vec::new() }
    }

    /// Forgets the conversation (the system message stays).
    pub fn reset(&mut self, backend: &mut dyn Backend) {
        self.messages.clear();
        self.held.clear();
        backend.reset();
    }

    pub fn turns(&self) -> usize {
        self.messages.len() / 2
    }

    /// The prompt ids of the conversation so far plus `user`.
    pub fn encode_with(&self, user: &str) -> anyhow::Result<Vec<u32>> {
        let mut messages: Vec<ChatMessage> = self.system.iter().map(ChatMessage::system).collect();
        messages.extend(self.messages.iter().cloned());
        messages.push(ChatMessage::user(user));
        self.format.encode(self.text, &ChatRequest { messages, tools: None, continue_final_message: false })
    }

    /// Runs one turn, writing the answer's text to `out` as it comes. On failure the
    /// conversation is as it was before the turn.
    pub fn turn(
        &mut self,
        backend: &mut dyn Backend,
        user: &str,
        how: &TurnSettings,
        out: &mut dyn FnMut(&str) -> io::Result<()>,
    ) -> anyhow::Result<Turn> {
        let TurnSettings { params, penalties, stop_ids, max_tokens, grammar } = how;
        let (params, max_tokens) = (*params, *max_tokens);
        let prompt = self.encode_with(user)?;
        let context = backend.config().max_context;
        if prompt.len() >= context {
            bail!(
                "the conversation is {} tokens, the model's context {}: /reset to start over",
                prompt.len(),
                context
            );
        }
        let max_tokens = max_tokens.min(context - prompt.len());
        let request = GenerateRequest {
            prompt,
            params,
            penalties: (*penalties).clone(),
            stop: StopCriteria::new(max_tokens, stop_ids.to_vec(), Vec::new())?,
            logprobs: None,
            grammar: grammar.cloned(),
        };
        let reusable = self.held.len() == backend.len()
            && self.held.len() < request.prompt.len()
            && request.prompt.starts_with(&self.held);
        let mut stream = self.text.stream();
        let mut on_token = |t: &nemo_engine::generate::GeneratedToken| out(&stream.push(t.token)?);
        let result = if reusable && !self.held.is_empty() {
            generate_after(backend, self.held.len(), &request, &mut on_token)
        } else {
            generate(backend, &request, &mut on_token)
        };
        let generation = match result {
            Ok(g) => g,
            Err(e) => {
                // The backend may hold part of a run: start the next turn from scratch.
                self.held.clear();
                backend.reset();
                return Err(e).context("generating the answer");
            }
        };
        out(&stream.finish())?;
        let answer = self.text.decode(&generation.tokens)?;
        let n = generation.tokens.len();
        self.held = [&request.prompt[..], &generation.tokens[..n - 1]].concat();
        // An empty answer cannot be sent back (the v3 template refuses an assistant message
        // without content): the exchange is left out of the history.
        if !answer.trim().is_empty() {
            self.messages.push(ChatMessage::user(user));
            self.messages.push(ChatMessage::assistant(answer.clone()));
        }
        Ok(Turn { generation, answer })
    }
}
