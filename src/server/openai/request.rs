//! Request bodies as OpenAI's API defines them. Each body is read in parts: the fields every
//! generation endpoint shares ([`SharedFields`]), then the endpoint's own ([`ChatFields`],
//! [`CompletionFields`]), and for chat the conversation itself (`tokenizer::ChatRequest`,
//! which keeps the exact text of tool schemas and arguments). Unknown fields are ignored, as
//! vLLM ignores them; known OpenAI features this server does not implement are refused by
//! `params` rather than silently dropped.
//!
//! Numbers are read wide (`f64`, `i64`) so that a value out of range is reported by name with
//! the allowed range, rather than as a type error.

use serde::Deserialize;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Fields of both `/v1/chat/completions` and `/v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct SharedFields {
    pub model: String,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// vLLM's extension; -1 or 0 = off.
    #[serde(default)]
    pub top_k: Option<i64>,
    /// vLLM's extension.
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// vLLM's extension.
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// vLLM's extension: generate past EOS until `max_tokens` or a stop string.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// vLLM's extension: no EOS, stop token or stop string ends the answer before this many
    /// tokens.
    #[serde(default)]
    pub min_tokens: Option<i64>,
    /// Structured outputs (`server::structured`): OpenAI's, on both endpoints as in vLLM.
    #[serde(default)]
    pub response_format: Option<serde_json::Value>,
    /// vLLM's structured-output extensions.
    #[serde(default)]
    pub guided_json: Option<serde_json::Value>,
    #[serde(default)]
    pub guided_regex: Option<serde_json::Value>,
    #[serde(default)]
    pub guided_choice: Option<serde_json::Value>,
    #[serde(default)]
    pub guided_grammar: Option<serde_json::Value>,
    #[serde(default)]
    pub structured_outputs: Option<serde_json::Value>,
}

/// Fields of `/v1/chat/completions` only (messages and tools are read separately).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatFields {
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// The pre-tools API (`functions` / `function_call`): refused with a pointer to `tools`.
    #[serde(default)]
    pub functions: Option<serde_json::Value>,
    #[serde(default)]
    pub function_call: Option<serde_json::Value>,
}

/// `prompt`: a string, token ids, or a one-element list of either (this server answers one
/// prompt per request).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<i64>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<i64>>),
}

/// Fields of `/v1/completions` only.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionFields {
    pub prompt: Prompt,
    /// The number of top logprobs per token (the legacy API's integer form).
    #[serde(default)]
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub best_of: Option<i64>,
}
