//! `nemo chat` and `nemo tokenize`.

use std::path::PathBuf;

use clap::Args;

use super::{ConstraintArgs, DeviceChoice, ModelSource, SamplingArgs};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub source: ModelSource,

    /// The system message of every turn (kept by /reset).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub system: Option<String>,

    /// Most tokens per answer.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_tokens: usize,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Every answer follows this constraint (compiled once, started afresh each turn).
    #[command(flatten)]
    pub constraint: ConstraintArgs,

    /// Where to run: auto = the GPU when one is usable, else the CPU (with a notice).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// A tokenizer file (tekken.json, tokenizer.json, a .gguf) or a model directory holding
    /// one; no weights are read. Default: the demo model.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,

    #[command(flatten)]
    pub input: TokenizeInput,

    /// With --text: put BOS first.
    #[arg(long, conflicts_with = "chat")]
    pub bos: bool,

    /// With --text: put EOS last.
    #[arg(long, conflicts_with = "chat")]
    pub eos: bool,

    /// Print `{"ids": [...], "text": "..."}` (the ids decoded with special tokens shown)
    /// instead of the ids alone.
    #[arg(long)]
    pub json: bool,
}

/// Plain text, or a chat request rendered by the model's template.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TokenizeInput {
    /// Text to encode; special-token text in it ("[INST]", "<s>") stays ordinary text.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub text: Option<String>,

    /// An OpenAI-style chat request: {"messages": [...], "tools": [...]?,
    /// "continue_final_message": bool?}; `-` reads it from stdin.
    #[arg(long, value_name = "REQUEST.json")]
    pub chat: Option<PathBuf>,
}
