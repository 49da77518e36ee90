//! `nemo inspect`: load (so fully validate) a model and print what it is and costs. A
//! checkpoint directory gets the library's summary; a GGUF file the same fields plus what the
//! file carries (tensor types, tokenizer, chat template, sampling keys).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use nemo_engine::gguf::{load_llama, GgufFile};
use nemo_engine::model::config::DEFAULT_MAX_CONTEXT;
use nemo_engine::model::{self, ModelConfig};

use super::args::InspectArgs;
use super::loaded::GgufText;
use super::resolve::{resolve, ModelPath};

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    match resolve(args.model.as_deref())? {
        ModelPath::Checkpoint(dir) => {
            let summary = model::inspect(&dir)
                .with_context(|| format!("loading the model in {}", dir.display()))?;
            println!("{summary}");
        }
        ModelPath::Gguf(file) => print!("{}", gguf_summary(&file)?),
    }
    Ok(())
}

fn gib(bytes: usize) -> String {
    format!("{:.2} GiB ({bytes} bytes)", bytes as f64 / (1u64 << 30) as f64)
}

fn gguf_summary(path: &Path) -> anyhow::Result<String> {
    let file = GgufFile::open(path)?;
    let start = Instant::now();
    let weights = load_llama(&file)?;
    let load_s = start.elapsed().as_secs_f64();
    let text = GgufText::read(&file, path)?;
    let c = &weights.config;

    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for t in file.tensors() {
        *types.entry(t.ggml_type.name).or_default() += 1;
    }
    let types: Vec<String> = types.iter().map(|(name, n)| format!("{n} {name}")).collect();
    let stored: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let elements: u64 = file.tensors().iter().map(|t| t.numel()).sum();
    let name = file.opt_str("general.name")?.unwrap_or("(no general.name)");
    let tokenizer = text.text.tokenizer();
    let special = |id: u32| tokenizer.special_text(id).unwrap_or_else(|| "?".into());
    let stops: Vec<String> = text.stop.ids.iter().map(|&id| format!("{id} {}", special(id))).collect();

    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    line("model", path.display().to_string());
    line("layout", format!("GGUF v{} ({}, architecture llama, RoPE {:?})", file.version, name, weights.rope_layout));
    line("tensors", format!("{} ({})", file.tensors().len(), types.join(", ")));
    line("stored", gib(stored as usize));
    line("weights", format!("{} as bf16 after dequantisation ({load_s:.2} s)", gib(elements as usize * 2)));
    line("tokenizer", format!("{} tokens, byte-level BPE from tokenizer.ggml.* (pre: {})", tokenizer.vocab_size(), file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default")));
    line("stop ids", stops.join(", "));
    line("chat", match &text.chat {
        Some(f) => f.describe().to_string(),
        None => "none (no tokenizer.chat_template)".into(),
    });
    config_lines(c, &mut line);
    let fp8 = nemo_engine::engine::KvCacheDtype::Fp8E4m3.gpu_bytes_per_token(c) * c.max_context;
    line("KV cache", format!("{} for {} tokens (bf16; {} with --kv-cache-dtype fp8)", gib(c.kv_bytes_per_token() * c.max_context), c.max_context, gib(fp8)));
    Ok(out)
}

/// The config fields, under the same labels as a checkpoint's summary.
fn config_lines(c: &ModelConfig, line: &mut impl FnMut(&str, String)) {
    line("dim", c.dim.to_string());
    line("layers", c.n_layers.to_string());
    line("heads", format!("{} query, {} KV, head_dim {}", c.n_heads, c.n_kv_heads, c.head_dim));
    line("ffn_dim", c.ffn_dim.to_string());
    line("vocab", c.vocab_size.to_string());
    line("rope_theta", c.rope_theta.to_string());
    line("norm_eps", format!("{:e}", c.norm_eps));
    line("tied lm_head", c.tied_embeddings.to_string());
    line("context", format!("{} tokens (llama.context_length, at most {DEFAULT_MAX_CONTEXT})", c.max_context));
}
