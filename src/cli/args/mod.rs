//! The command line, as clap parses it. Values are checked here only for syntax; ranges
//! (temperature >= 0, top_p in (0, 1], ...) are checked by the library so every front end
//! refuses the same values with the same message.

//!
//! - this file: the subcommands, the model source every one of them shares, small value types.
//! - [`generate`]: `nemo generate` and the sampling flags it shares with `nemo chat`.
//! - [`chat`]: `nemo chat` and `nemo tokenize`.

mod chat;
mod generate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use chat::{ChatArgs, TokenizeArgs};
pub use generate::{GenerateArgs, SamplingArgs};

#[derive(Parser, Debug)]
#[command(
    name = "nemo",
    version,
    about = "Inference for Mistral-Nemo-Instruct-2407: a CUDA engine with an f32 CPU reference"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a continuation of a prompt, or with --chat the answer to it.
    Generate(GenerateArgs),
    /// Talk to the model: one line per turn, answers streamed, history kept.
    Chat(ChatArgs),
    /// Text or a chat request to token ids, exactly as the model's template encodes them.
    Tokenize(TokenizeArgs),
    /// Load and validate a model, then print its layout, config and memory needs.
    Inspect(InspectArgs),
    /// GPU end-to-end numbers: load time, prefill tokens/s, batch-1 decode ms/token.
    Bench(BenchArgs),
}

/// Help text of every `--model`.
const MODEL_HELP: &str = "A checkpoint directory (Mistral or HF layout), a .gguf file, or a \
directory holding one .gguf. Default: the demo model SmolLM2-135M-Instruct that scripts/setup.sh \
puts in models/";

/// The model to run: a checkpoint, or a built-in shape with random weights.
#[derive(Args, Debug)]
pub struct ModelSource {
    #[arg(long, value_name = "PATH", conflicts_with = "preset", help = MODEL_HELP)]
    pub model: Option<PathBuf>,

    /// A built-in model shape instead of a checkpoint (needs --dummy-weights): nemo-12b.
    #[arg(long, value_name = "NAME", value_enum, requires = "dummy_weights")]
    pub preset: Option<Preset>,

    /// Fill the weights with seeded random values generated on the GPU (vLLM's
    /// `--load-format dummy`): exact shapes, no files, for measuring.
    #[arg(long)]
    pub dummy_weights: bool,

    /// Tokens the preallocated KV cache holds (default: the model's context, 131072 for Nemo);
    /// lower it on GPUs with less memory.
    #[arg(long, value_name = "N")]
    pub kv_tokens: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Mistral-Nemo-Instruct-2407: 40 layers, dim 5120, 32/8 heads of 128, FFN 14336, vocab 131072.
    #[value(name = "nemo-12b")]
    Nemo12b,
}

impl Preset {
    pub fn config(self) -> nemo_engine::model::ModelConfig {
        match self {
            Preset::Nemo12b => nemo_engine::model::ModelConfig::nemo_12b(),
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub source: ModelSource,

    /// Prompt lengths to time prefill at, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "512,2048,8192,32768")]
    pub prefill: Vec<usize>,

    /// Contexts to time batch-1 decode at, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "1024,32768,131072")]
    pub contexts: Vec<usize>,

    /// Decode steps timed per context.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub steps: usize,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long, value_name = "PATH", help = MODEL_HELP)]
    pub model: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

/// A comma-separated list of token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIds(pub Vec<u32>);

fn parse_token_ids(s: &str) -> Result<TokenIds, String> {
    let ids = s
        .split(',')
        .map(|part| {
            let part = part.trim();
            part.parse::<u32>().map_err(|_| {
                format!("`{part}` is not a token id (expected comma-separated integers in 0..2^32)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TokenIds(ids))
}

#[cfg(test)]
mod tests;
