//! The architecture hyper-parameters every backend reads. All dimensions come from the
//! checkpoint's config file; `head_dim` is 128 for Nemo, never `dim / n_heads`.

/// Default context: 128k tokens. HF's `max_position_embeddings` (1,024,000 for Nemo) is never
/// used to size anything.
pub const DEFAULT_MAX_CONTEXT: usize = 131_072;

/// Which pairs of q/k dimensions RoPE rotates, settled once at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs `(2i, 2i + 1)`: Mistral's `consolidated.safetensors`, and GGUF (llama.cpp permutes).
    Interleaved,
    /// Pairs `(i, i + head_dim / 2)`: HF checkpoints (`permute_for_rope`).
    RotateHalf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Hidden size (5120 for Nemo).
    pub dim: usize,
    pub n_layers: usize,
    /// Per-head dimension (128 for Nemo; not dim / n_heads).
    pub head_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// FFN intermediate size (14336 for Nemo).
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f64,
    pub norm_eps: f32,
    /// Longest sequence the engine accepts (positions 0..max_context).
    pub max_context: usize,
    /// The LM head reuses the embedding matrix (SmolLM2; not Nemo).
    pub tied_embeddings: bool,
}

impl ModelConfig {
    /// Mistral-Nemo-Instruct-2407, as in its params.json.
    pub fn nemo_12b() -> Self {
        ModelConfig {
            dim: 5120,
            n_layers: 40,
            head_dim: 128,
            n_heads: 32,
            n_kv_heads: 8,
            ffn_dim: 14336,
            vocab_size: 131_072,
            rope_theta: 1_000_000.0,
            norm_eps: 1e-5,
            max_context: DEFAULT_MAX_CONTEXT,
            tied_embeddings: false,
        }
    }

    /// Width of the q projection output: n_heads * head_dim (4096 for Nemo, != dim).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the k (and v) projection output: n_kv_heads * head_dim.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Bytes of bf16 K and V cache per token, all layers.
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.n_layers * self.kv_dim() * 2
    }
}
