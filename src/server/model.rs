//! What the server needs to know about the model it serves, apart from the engine: its name,
//! its tokenizer, how a chat request or a plain prompt becomes ids, which ids end a turn, and
//! the sampling values it recommends. The command line implements this over its model loading
//! (`nemo serve`); tests implement it over a bare tokenizer.

use crate::structured::Grammars;
use crate::tokenizer::{ChatRequest, Tokenizer};

/// Sampling values used when a request leaves them out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingDefaults {
    /// 0.3 for Mistral-Nemo (its model card's recommendation) unless the model names another.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    pub min_p: f32,
}

impl Default for SamplingDefaults {
    /// Mistral-Nemo's recommendation: temperature 0.3, no filters.
    fn default() -> Self {
        SamplingDefaults { temperature: 0.3, top_p: 1.0, top_k: 0, min_p: 0.0 }
    }
}

/// The text side of a served model. Errors returned by the encoders are the request's fault
/// (they become 400 responses with the message as given), so they must say what to change.
pub trait ServedModel: Send + Sync + 'static {
    /// The name clients pass as `model` and `/v1/models` lists.
    fn name(&self) -> &str;
    /// Decodes generated ids (special tokens dropped) and names tokens in logprobs.
    fn tokenizer(&self) -> &Tokenizer;
    /// The prompt ids of a chat request, ending where the assistant's answer begins.
    fn encode_chat(&self, request: &ChatRequest) -> Result<Vec<u32>, String>;
    /// The prompt ids of a plain completion prompt (BOS first when the model wants it).
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, String>;
    /// Whether the chat format renders tools and the output may hold `[TOOL_CALLS]`.
    fn supports_tools(&self) -> bool;
    /// Ids that end generation (EOS, end of turn).
    fn stop_token_ids(&self) -> &[u32];
    fn sampling_defaults(&self) -> SamplingDefaults;
    /// The structured-output compiler over this tokenizer and the model's vocabulary; None when
    /// it could not be built (the server said why at start-up; such requests get a 400).
    fn grammars(&self) -> Option<&Grammars>;
}
