//! The command line, as clap parses it. Values are checked here only for syntax; ranges
//! (temperature >= 0, top_p in (0, 1], ...) are checked by the library so every front end
//! refuses the same values with the same message.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Generate a continuation of a prompt.
    Generate(GenerateArgs),
    /// Load and validate a checkpoint, then print its layout, config and memory needs.
    Inspect(InspectArgs),
    /// GPU end-to-end numbers: load time, prefill tokens/s, batch-1 decode ms/token.
    Bench(BenchArgs),
}

/// The model to run: a checkpoint, or a built-in shape with random weights.
#[derive(Args, Debug)]
pub struct ModelSource {
    /// The checkpoint directory (Mistral or HF layout).
    #[arg(long, value_name = "DIR", conflicts_with = "preset")]
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
    /// The checkpoint directory (Mistral or HF layout).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub source: ModelSource,

    #[command(flatten)]
    pub prompt: PromptArgs,

    /// Most tokens to generate (a stop or EOS token counts, and ends the run earlier).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_tokens: usize,

    /// Softmax temperature; 0 = greedy (argmax, lowest id on ties).
    #[arg(
        long,
        value_name = "T",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub temperature: f32,

    /// Nucleus sampling: keep the most probable tokens up to this mass, in (0, 1]; 1 = off.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub top_p: f32,

    /// Keep the K most probable tokens; 0 = off.
    #[arg(
        long,
        value_name = "K",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub top_k: usize,

    /// Drop tokens less probable than P times the most probable, in [0, 1]; 0 = off.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub min_p: f32,

    /// Seed of the per-step draws: the same seed, prompt and settings give the same tokens.
    #[arg(
        long,
        value_name = "S",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub seed: u64,

    /// Report each generated token's logprob and the K most probable tokens' (natural log of
    /// the softmax of the raw logits, before temperature). 0 = the chosen token's only.
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub logprobs: Option<usize>,

    /// A token id that ends generation (repeatable). EOS ends it too unless --ignore-eos.
    #[arg(long = "stop-token", value_name = "ID", allow_negative_numbers = true)]
    pub stop_tokens: Vec<u32>,

    /// Do not stop at the model's EOS token(s).
    #[arg(long)]
    pub ignore_eos: bool,

    /// Where to run: auto = the GPU when one is usable, else the CPU (with a notice).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,

    /// Print one JSON object on stdout (prompt_tokens, tokens, text, finish_reason, logprobs)
    /// instead of streaming; notices and timing go to stderr.
    #[arg(long)]
    pub json: bool,
}

/// Exactly one of the two prompt forms.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PromptArgs {
    /// The prompt as text (needs the checkpoint's tokenizer; BOS is prepended).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,

    /// The prompt as token ids, comma-separated (e.g. 1,1234,567), used as given.
    #[arg(long, value_name = "IDS", value_parser = parse_token_ids)]
    pub prompt_tokens: Option<TokenIds>,
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
mod tests {
    use super::*;

    #[test]
    fn token_ids_parse_with_spaces_and_refuse_junk() {
        assert_eq!(parse_token_ids("1, 2,3").unwrap(), TokenIds(vec![1, 2, 3]));
        assert!(parse_token_ids("1,,2")
            .unwrap_err()
            .contains("`` is not a token id"));
        assert!(parse_token_ids("1,-2").unwrap_err().contains("`-2`"));
        assert!(parse_token_ids("").is_err());
    }

    #[test]
    fn clap_accepts_the_documented_command_lines() {
        let cli = Cli::try_parse_from([
            "nemo",
            "generate",
            "--model",
            "m",
            "--prompt-tokens",
            "1,2",
            "--temperature",
            "0",
            "--logprobs",
            "5",
            "--stop-token",
            "7",
            "--stop-token",
            "9",
            "--json",
            "--device",
            "cpu",
        ])
        .unwrap();
        let Command::Generate(g) = cli.command else {
            panic!()
        };
        assert_eq!(g.prompt.prompt_tokens, Some(TokenIds(vec![1, 2])));
        assert_eq!(g.stop_tokens, vec![7, 9]);
        assert_eq!(g.logprobs, Some(5));
        assert_eq!(g.device, DeviceChoice::Cpu);
        // A negative temperature reaches the range check instead of looking like a flag.
        let cli = Cli::try_parse_from([
            "nemo",
            "generate",
            "--model",
            "m",
            "--prompt",
            "hi",
            "--temperature",
            "-1",
        ])
        .unwrap();
        let Command::Generate(g) = cli.command else {
            panic!()
        };
        assert_eq!(g.temperature, -1.0);
        // Both prompt forms, or neither, are usage errors.
        for argv in [
            &["nemo", "generate", "--model", "m"][..],
            &[
                "nemo",
                "generate",
                "--model",
                "m",
                "--prompt",
                "a",
                "--prompt-tokens",
                "1",
            ][..],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }
}
