//! The plain f32 CPU reference: the oracle every GPU kernel is tested against, and the
//! `--device cpu` backend for small models. Loops are written to be obviously right; rayon
//! spreads rows and heads over the cores.
//!
//! - [`ops`], [`rope`], [`attention`], [`matmul`]: one reference per GPU kernel.
//! - [`forward`]: the whole model, incremental over a [`KvCache`].
//! - [`fp8`]: e4m3 and the per-row scaling of the FP8 KV cache.

pub mod attention;
pub mod forward;
pub mod fp8;
pub mod kv_cache;
pub mod matmul;
pub mod ops;
pub mod rope;

pub use attention::{attention, AttentionShape};
pub use forward::{
    decoder_layers, forward, forward_last, forward_rows, forward_traced, lm_head_rows, Activation, AttendFn,
    CpuSession,
};
pub use kv_cache::KvCache;
pub use matmul::matmul;
pub use ops::{embedding, rmsnorm, swiglu};
pub use rope::{rope, rope_cos_sin, rope_inv_freq, rope_pair};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuError {
    #[error("no tokens to run")]
    NoTokens,
    #[error("token {token} at index {index} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { index: usize, token: u32, vocab_size: usize },
    #[error("context full: {held} tokens held + {new} new exceed the {max}-token context")]
    ContextFull { held: usize, new: usize, max: usize },
    #[error("logits requested for row {row}, but only {n_tokens} tokens were given")]
    RowOutOfRange { row: usize, n_tokens: usize },
    #[error(
        "KV cache built for {cache_layers} layers x {cache_kv_dim}, model has {model_layers} x {model_kv_dim}"
    )]
    CacheMismatch { cache_layers: usize, cache_kv_dim: usize, model_layers: usize, model_kv_dim: usize },
}
