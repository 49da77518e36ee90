//! What [`super::Engine::step`] reports, in the order a streaming server forwards it.
//!
//! For each accepted request: zero or more `Token` events with `index` 0, 1, 2, ... (each
//! generated token exactly once, even across preemptions), then exactly one `Finished`, after
//! which the id never appears again. Within one step's events a request's `Token` precedes its
//! `Finished`.

use serde::Serialize;

use super::request::RequestId;
use crate::sampling::TokenLogprobs;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token {
        id: RequestId,
        /// 0 for the first generated token.
        index: usize,
        token: u32,
        /// When the request asked for logprobs.
        logprobs: Option<TokenLogprobs>,
    },
    Finished { id: RequestId, reason: FinishReason, usage: Usage },
}

impl Event {
    pub fn id(&self) -> RequestId {
        match self {
            Event::Token { id, .. } | Event::Finished { id, .. } => *id,
        }
    }
}

/// Why a request ended. `Stop` and `Length` are the OpenAI API's `"stop"` / `"length"`;
/// `Cancelled` and `Error` end a stream without a normal finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token was generated (and emitted), or the caller saw a stop string.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
    /// [`super::Engine::cancel`] (e.g. the client went away).
    Cancelled,
    /// The backend step or the sampler failed for this request; the message says why.
    Error(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
            FinishReason::Error(_) => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Tokens emitted (the stop token included).
    pub completion_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache instead of being computed.
    pub cached_tokens: usize,
    /// Times the request was preempted and recomputed (0 normally; a sign of a small KV cache).
    pub preemptions: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_name_themselves_as_the_api_does() {
        let names: Vec<_> =
            [FinishReason::Stop, FinishReason::Length, FinishReason::Cancelled, FinishReason::Error("x".into())]
                .iter()
                .map(|r| r.as_str())
                .collect();
        assert_eq!(names, ["stop", "length", "cancelled", "error"]);
        assert_eq!(serde_json::to_string(&FinishReason::Length).unwrap(), "\"length\"");
    }
}
