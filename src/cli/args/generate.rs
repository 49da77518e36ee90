//! `nemo generate`'s flags, and the sampling flags it shares with `nemo chat`.

use std::path::PathBuf;

use clap::Args;

use super::{parse_token_ids, DeviceChoice, ModelSource, TokenIds};
use nemo_engine::sampling::Penalties;
use nemo_engine::structured::Constraint;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub source: ModelSource,

    #[command(flatten)]
    pub prompt: PromptArgs,

    /// The prompt is one user message of the model's chat template (Mistral v3 for Nemo, the
    /// GGUF's own Jinja template otherwise), and the answer ends at the end of the turn.
    #[arg(long)]
    pub chat: bool,

    /// A system message before the prompt (needs --chat).
    #[arg(long, value_name = "TEXT", requires = "chat", allow_hyphen_values = true)]
    pub system: Option<String>,

    /// OpenAI-style tool definitions (a JSON list of {"type": "function", "function": {...}})
    /// offered to the model; tool calls in its answer are parsed and printed. Mistral template
    /// only. Needs --chat.
    #[arg(long, value_name = "FILE", requires = "chat")]
    pub tools: Option<PathBuf>,

    /// Most tokens to generate (a stop or EOS token counts, and ends the run earlier).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub max_tokens: usize,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub constraint: ConstraintArgs,

    /// Report each generated token's logprob and the K most probable tokens' (natural log of
    /// the softmax of the raw logits, before temperature). 0 = the chosen token's only.
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub logprobs: Option<usize>,

    /// A token id that ends generation (repeatable). EOS ends it too unless --ignore-eos.
    #[arg(long = "stop-token", value_name = "ID", allow_negative_numbers = true)]
    pub stop_tokens: Vec<u32>,

    /// Do not stop at the model's EOS / end-of-turn token(s).
    #[arg(long)]
    pub ignore_eos: bool,

    /// Where to run: auto = the GPU when one is usable, else the CPU (with a notice).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,

    /// Print one JSON object on stdout (prompt_tokens, tokens, text, finish_reason, logprobs,
    /// tool_calls) instead of streaming; notices and timing go to stderr.
    #[arg(long)]
    pub json: bool,
}

/// How tokens are drawn. A flag left out takes the model's recommended value (see
/// `cli::defaults`), else the neutral one.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 = greedy (argmax, lowest id on ties). Default: the model's
    /// recommendation (Mistral-Nemo: 0.3).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,

    /// Nucleus sampling: keep the most probable tokens up to this mass, in (0, 1]; 1 = off.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,

    /// Keep the K most probable tokens; 0 = off.
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    pub top_k: Option<usize>,

    /// Drop tokens less probable than P times the most probable, in [0, 1]; 0 = off.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f32>,

    /// Seed of the per-step draws: the same seed, prompt and settings give the same tokens.
    #[arg(long, value_name = "S", default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,

    /// Divide positive and multiply negative logits of every token already in the prompt or the
    /// answer by R, in [0.01, 100]; 1 = off (llama.cpp's --repeat-penalty, vLLM's
    /// repetition_penalty, over the whole prompt).
    #[arg(long, value_name = "R", default_value_t = 1.0, allow_negative_numbers = true)]
    pub repetition_penalty: f32,

    /// Subtract F x (times the token appeared in the answer) from its logit, in [-2, 2]; 0 = off.
    #[arg(long, value_name = "F", default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,

    /// Subtract P from the logit of every token already in the answer, in [-2, 2]; 0 = off.
    #[arg(long, value_name = "P", default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,

    /// Add BIAS, in [-100, 100], to token ID's logit before sampling (repeatable): `1234=-100`
    /// bans token 1234, `1234=100` forces it.
    #[arg(long = "logit-bias", value_name = "ID=BIAS", value_parser = parse_logit_bias, allow_hyphen_values = true)]
    pub logit_bias: Vec<(u32, f32)>,
}

impl SamplingArgs {
    /// The logit bias and penalties asked for, refused here (before any model is loaded) when
    /// out of range or naming a token twice; token ids are checked against the vocabulary
    /// once it is known.
    pub fn penalties(&self) -> Result<Penalties, String> {
        let mut logit_bias = self.logit_bias.clone();
        logit_bias.sort_unstable_by_key(|&(t, _)| t);
        if let Some(w) = logit_bias.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("--logit-bias names token {} twice", w[0].0));
        }
        let p = Penalties { repetition: self.repetition_penalty, frequency: self.frequency_penalty, presence: self.presence_penalty, logit_bias };
        p.validate(usize::MAX).map_err(|e| format!("invalid sampling parameters: {e}"))?;
        Ok(p)
    }
}

fn parse_logit_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s.split_once('=').ok_or_else(|| format!("`{s}` is not ID=BIAS (e.g. 1234=-100)"))?;
    let id = id.trim().parse::<u32>().map_err(|_| format!("`{id}` is not a token id"))?;
    let bias = bias.trim().parse::<f32>().map_err(|_| format!("`{bias}` is not a number"))?;
    Ok((id, bias))
}

/// Structured output: at most one constraint on what the answer may be (src/structured,
/// docs/structured.md). The answer ends once the constraint is complete.
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct ConstraintArgs {
    /// The answer is JSON valid under this JSON Schema file (llguidance's subset of the spec).
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,

    /// The answer is a JSON object.
    #[arg(long)]
    pub json_object: bool,

    /// The answer matches this regular expression (Rust `regex` syntax) as a whole.
    #[arg(long, value_name = "RX", allow_hyphen_values = true)]
    pub regex: Option<String>,

    /// The answer is exactly one of these strings (repeat the flag for each).
    #[arg(long = "choice", value_name = "TEXT", allow_hyphen_values = true)]
    pub choices: Vec<String>,

    /// The answer follows this grammar file, in llguidance's Lark syntax.
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
}

impl ConstraintArgs {
    /// The constraint asked for, with its file read and (for a schema) parsed.
    pub fn constraint(&self) -> Result<Option<Constraint>, String> {
        let read = |flag: &str, path: &PathBuf| std::fs::read_to_string(path).map_err(|e| format!("{flag} {}: {e}", path.display()));
        if let Some(path) = &self.json_schema {
            let schema = serde_json::from_str(&read("--json-schema", path)?)
                .map_err(|e| format!("--json-schema {}: not JSON: {e}", path.display()))?;
            return Ok(Some(Constraint::JsonSchema(schema)));
        }
        if let Some(path) = &self.grammar {
            return Ok(Some(Constraint::Lark(read("--grammar", path)?)));
        }
        Ok(match (&self.regex, self.choices.is_empty()) {
            (Some(rx), _) => Some(Constraint::Regex(rx.clone())),
            (None, false) => Some(Constraint::Choice(self.choices.clone())),
            _ if self.json_object => Some(Constraint::JsonObject),
            _ => None,
        })
    }
}

/// Exactly one of the two prompt forms.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PromptArgs {
    /// The prompt as text (needs the model's tokenizer).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub prompt: Option<String>,

    /// The prompt as token ids, comma-separated (e.g. 1,1234,567), used as given.
    #[arg(long, value_name = "IDS", value_parser = parse_token_ids, conflicts_with = "chat")]
    pub prompt_tokens: Option<TokenIds>,
}
