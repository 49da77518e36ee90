//! The summary `nemo inspect` prints: what was found and what it will cost to run.

use std::fmt;
use std::path::{Path, PathBuf};

use super::config::DEFAULT_MAX_CONTEXT;
use super::error::LoadError;
use super::layout::Layout;
use super::load::{load, LoadedModel};
use super::{ModelConfig, RopeLayout};

#[derive(Clone, Debug)]
pub struct InspectSummary {
    pub dir: PathBuf,
    pub layout: Layout,
    pub rope_layout: RopeLayout,
    pub config: ModelConfig,
    pub config_file: PathBuf,
    pub weight_files: Vec<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub tensor_count: usize,
    pub tensor_bytes: usize,
    /// bf16 K and V for all layers at the default 131072-token context.
    pub kv_bytes_128k: usize,
    /// The same as an FP8 e4m3 cache (`--kv-cache-dtype fp8`: codes and one f32 scale a row).
    pub kv_bytes_128k_fp8: usize,
    pub warnings: Vec<String>,
}

impl InspectSummary {
    pub fn of(model: &LoadedModel) -> Self {
        let c = &model.checkpoint;
        InspectSummary {
            dir: c.dir.clone(),
            layout: c.layout,
            rope_layout: model.weights.rope_layout,
            config: model.weights.config.clone(),
            config_file: c.config_file.clone(),
            weight_files: c.weight_files.clone(),
            tokenizer: c.tokenizer.clone(),
            tensor_count: model.tensor_count,
            tensor_bytes: model.tensor_bytes,
            kv_bytes_128k: model.weights.config.kv_bytes_per_token() * DEFAULT_MAX_CONTEXT,
            kv_bytes_128k_fp8: crate::engine::KvCacheDtype::Fp8E4m3.gpu_bytes_per_token(&model.weights.config) * DEFAULT_MAX_CONTEXT,
            warnings: model.warnings.clone(),
        }
    }
}

/// Loads (hence fully validates) the checkpoint in `dir` and summarises it.
pub fn inspect(dir: &Path) -> Result<InspectSummary, LoadError> {
    Ok(InspectSummary::of(&load(dir)?))
}

fn gib(bytes: usize) -> String {
    format!(
        "{:.2} GiB ({bytes} bytes)",
        bytes as f64 / (1u64 << 30) as f64
    )
}

impl fmt::Display for InspectSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "model:        {}", self.dir.display())?;
        writeln!(
            f,
            "layout:       {} (RoPE {:?})",
            self.layout, self.rope_layout
        )?;
        writeln!(f, "config:       {}", self.config_file.display())?;
        for w in &self.weight_files {
            writeln!(f, "weights:      {}", w.display())?;
        }
        match &self.tokenizer {
            Some(t) => writeln!(f, "tokenizer:    {}", t.display())?,
            None => writeln!(f, "tokenizer:    none (prompts must be given as token ids)")?,
        }
        writeln!(f, "dim:          {}", c.dim)?;
        writeln!(f, "layers:       {}", c.n_layers)?;
        writeln!(
            f,
            "heads:        {} query, {} KV, head_dim {}",
            c.n_heads, c.n_kv_heads, c.head_dim
        )?;
        writeln!(f, "ffn_dim:      {}", c.ffn_dim)?;
        writeln!(f, "vocab:        {}", c.vocab_size)?;
        writeln!(f, "rope_theta:   {}", c.rope_theta)?;
        writeln!(f, "norm_eps:     {:e}", c.norm_eps)?;
        writeln!(f, "tied lm_head: {}", c.tied_embeddings)?;
        writeln!(f, "context:      {} tokens", c.max_context)?;
        writeln!(f, "tensors:      {}", self.tensor_count)?;
        writeln!(f, "weights:      {}", gib(self.tensor_bytes))?;
        write!(
            f,
            "KV cache:     {} for {DEFAULT_MAX_CONTEXT} tokens (bf16; {} with --kv-cache-dtype fp8)",
            gib(self.kv_bytes_128k),
            gib(self.kv_bytes_128k_fp8)
        )?;
        for w in &self.warnings {
            write!(f, "\nwarning:      {w}")?;
        }
        Ok(())
    }
}
