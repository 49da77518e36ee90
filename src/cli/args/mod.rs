//! The command line, as clap parses it. Values are checked here only for syntax; ranges
//! (temperature >= 0, top_p in (0, 1], ...) are checked by the library so every front end
//! refuses the same values with the same message.

//!
//! - this file: the subcommands, the model source every one of them shares, small value types.
//! - [`generate`]: `nemo generate` and the sampling flags it shares with `nemo chat`.
//! - [`chat`]: `nemo chat` and `nemo tokenize`.
//! - [`serve`]: `nemo serve`.
//! - [`perplexity`]: `nemo perplexity`.

mod chat;
mod generate;
mod lab;
mod perplexity;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use nemo_engine::engine::KvCacheDtype;
pub use nemo_engine::gpu::model::KvSize;

pub use chat::{ChatArgs, TokenizeArgs};
pub use generate::{ConstraintArgs, GenerateArgs, SamplingArgs};
pub use lab::{BenchLab, KernelLabArgs};
pub use perplexity::PerplexityArgs;
pub use serve::ServeArgs;

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
    /// An OpenAI-compatible HTTP server: /v1/chat/completions (tools, streaming, logprobs),
    /// /v1/completions, /v1/models, /health, /metrics.
    Serve(ServeArgs),
    /// Load and validate a model, then print its layout, config and memory needs.
    Inspect(InspectArgs),
    /// The perplexity of a text file, in windows whose second halves are scored (as llama.cpp's
    /// llama-perplexity): for comparing models, KV cache formats and attention kernels.
    Perplexity(PerplexityArgs),
    /// End-to-end numbers: batch-1 latency (load, prefill, decode), offline serving throughput,
    /// and a decode batch sweep; `nemo bench kernels` is the kernel lab.
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
    /// lower it on GPUs with less memory. `max`: as many as the GPU's free memory holds (up to
    /// the context for one sequence; no limit for `bench --mode throughput|sweep`).
    #[arg(long, value_name = "N|max", value_parser = parse_kv_tokens, allow_negative_numbers = true)]
    pub kv_tokens: Option<KvSize>,

    /// How the GPU's KV cache stores K and V: auto (bf16) or fp8 (e4m3, one scale per token and
    /// KV head: half the bytes a token, so twice the tokens; docs/fp8-kv.md). On the CPU, fp8
    /// rounds the reference's values as the GPU would store them.
    #[arg(long, value_name = "auto|fp8", default_value = "auto", value_parser = parse_kv_cache_dtype)]
    pub kv_cache_dtype: KvCacheDtype,
}

/// `--kv-cache-dtype auto | fp8` (vLLM's names; `bf16` and `fp8_e4m3` accepted too).
pub fn parse_kv_cache_dtype(s: &str) -> Result<KvCacheDtype, String> {
    s.trim().parse()
}

/// `--kv-tokens N | max`.
pub fn parse_kv_tokens(s: &str) -> Result<KvSize, String> {
    match s.trim() {
        "max" => Ok(KvSize::MAX),
        v => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .map(KvSize::Tokens)
            .ok_or_else(|| format!("`{s}` is not a positive number of tokens or `max`")),
    }
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
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `nemo bench kernels ...`: the kernel lab instead of the end-to-end modes.
    #[command(subcommand)]
    pub lab: Option<BenchLab>,

    #[command(flatten)]
    pub source: ModelSource,

    /// Prompt lengths to time prefill at, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "512,2048,8192,32768")]
    pub prefill: Vec<usize>,

    /// Contexts to time batch-1 decode at, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "1024,32768,131072")]
    pub contexts: Vec<usize>,

    /// Latency mode: batch sizes at which one decode step per context is broken down by kernel
    /// (device time per kernel), comma-separated, after the longest prefill's last chunk; 0 for
    /// none.
    #[arg(long, value_name = "B,...", value_delimiter = ',', default_value = "1,64")]
    pub breakdown_batches: Vec<usize>,

    /// Decode steps timed per context (latency) or per batch size (sweep).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub steps: usize,

    /// What to measure.
    #[arg(long, value_enum, default_value_t = BenchMode::Latency)]
    pub mode: BenchMode,

    /// Throughput mode: input/output lengths, comma-separated IN/OUT pairs.
    #[arg(long, value_name = "IN/OUT,...", value_delimiter = ',', default_value = "128/128,1000/1000,2048/2048", value_parser = parse_io)]
    pub io: Vec<(usize, usize)>,

    /// Throughput mode: requests per input/output pair, all queued at once (or see
    /// --request-rate).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub requests: usize,

    /// Throughput mode: requests arrive as a Poisson process of this many a second (seeded, as
    /// vLLM's benchmark_serving --request-rate) instead of all at once; TTFT and request
    /// latency count from each arrival.
    #[arg(long, value_name = "R", value_parser = parse_request_rate, allow_negative_numbers = true)]
    pub request_rate: Option<f64>,

    /// Throughput mode: leading prompt tokens every request shares (one system prompt).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub shared_prefix: usize,

    /// Compute every prompt in full, even the blocks another request already computed.
    #[arg(long)]
    pub no_prefix_caching: bool,

    /// Throughput mode: when a waiting request joins the batch (as for `nemo serve`).
    #[arg(long, value_enum, default_value_t = AdmissionChoice::Reserve)]
    pub admission: AdmissionChoice,

    /// Sweep mode: batch sizes, comma-separated.
    #[arg(long, value_name = "B,...", value_delimiter = ',', default_value = "1,8,32,64,128,256")]
    pub batches: Vec<usize>,

    /// Sequences running at once (throughput) and the largest batch (sweep).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_batch: usize,

    /// Sweep mode: also write the throughput/latency plot here (SVG).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Throughput and sweep modes may run on the CPU reference (small models only).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cuda)]
    pub device: DeviceChoice,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Batch 1: load time, prefill tokens/s at --prefill lengths, decode ms/token at --contexts.
    Latency,
    /// Offline throughput: --requests requests per --io pair (at once or at --request-rate);
    /// tokens/s, TTFT, ITL and request latency percentiles.
    Throughput,
    /// Decode batch sweep over --batches: ms/step, tokens/s, achieved bandwidth.
    Sweep,
}

fn parse_request_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a positive number of requests a second (leave the flag out to queue all at once)")),
    }
}

fn parse_io(s: &str) -> Result<(usize, usize), String> {
    let (i, o) = s.split_once('/').ok_or_else(|| format!("`{s}` is not IN/OUT (e.g. 128/128)"))?;
    let n = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| format!("`{v}` in `{s}` is not a positive length"));
    Ok((n(i)?, n(o)?))
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(long, value_name = "PATH", help = MODEL_HELP)]
    pub model: Option<PathBuf>,
}

/// `--admission`: nemo_engine::scheduler::Admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdmissionChoice {
    /// Keep room for the tokens running requests are expected to generate (SGLang's policy):
    /// fewer preemptions, each of which recomputes a sequence from scratch.
    Reserve,
    /// Admit whenever the next prompt chunk fits (vLLM's): the most requests at once, and
    /// preemptions when they outgrow the cache.
    Optimistic,
}

impl AdmissionChoice {
    pub fn policy(self) -> nemo_engine::scheduler::Admission {
        match self {
            AdmissionChoice::Reserve => nemo_engine::scheduler::Admission::Reserve,
            AdmissionChoice::Optimistic => nemo_engine::scheduler::Admission::Optimistic,
        }
    }
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
