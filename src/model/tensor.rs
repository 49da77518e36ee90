//! bf16 tensors by role. Storage is a memory-mapped safetensors range (zero-copy) or an owned
//! buffer (GGUF dequantised at load, or a misaligned range copied once).

use std::sync::Arc;

use half::bf16;
use memmap2::Mmap;

use super::{ModelConfig, RopeLayout};

pub enum TensorData {
    /// `len` bf16 values at byte `offset` of `map`; `offset` is 2-byte aligned.
    Mapped { map: Arc<Mmap>, offset: usize, len: usize },
    Owned(Vec<bf16>),
}

/// A row-major bf16 tensor; linear weights are `[out_features, in_features]` as in PyTorch.
pub struct Tensor {
    /// The name in the checkpoint, for error messages.
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn as_bf16(&self) -> &[bf16] {
        match &self.data {
            TensorData::Mapped { map, offset, len } => {
                bytemuck::cast_slice(&map[*offset..*offset + *len * 2])
            }
            TensorData::Owned(v) => v,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct LayerWeights {
    pub attn_norm: Tensor, // [dim]
    pub wq: Tensor,        // [n_heads * head_dim, dim]
    pub wk: Tensor,        // [n_kv_heads * head_dim, dim]
    pub wv: Tensor,        // [n_kv_heads * head_dim, dim]
    pub wo: Tensor,        // [dim, n_heads * head_dim]
    pub ffn_norm: Tensor,  // [dim]
    pub w_gate: Tensor,    // [ffn_dim, dim]
    pub w_up: Tensor,      // [ffn_dim, dim]
    pub w_down: Tensor,    // [dim, ffn_dim]
}

pub struct ModelWeights {
    pub config: ModelConfig,
    /// How q/k rows are ordered, hence which pairs RoPE rotates.
    pub rope_layout: RopeLayout,
    pub embedding: Tensor, // [vocab_size, dim]
    pub layers: Vec<LayerWeights>,
    pub final_norm: Tensor, // [dim]
    /// `[vocab_size, dim]`; `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
}

impl ModelWeights {
    /// The LM head matrix, `[vocab_size, dim]` (the embedding when tied).
    pub fn lm_head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }
}
