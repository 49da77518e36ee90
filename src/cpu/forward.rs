//! The f32 reference forward pass of the Mistral architecture, as transformers computes it:
//! embedding -> per layer [RMSNorm, q/k/v, RoPE, causal GQA attention, o, residual, RMSNorm,
//! SwiGLU FFN, residual] -> final RMSNorm -> LM head.
//!
//! Incremental: each call appends its tokens to the cache, so a prompt may be prefilled in
//! chunks and then decoded one token at a time; results equal one full pass.

use super::attention::{attention, AttentionShape};
use super::kv_cache::KvCache;
use super::matmul::matmul;
use super::ops::{add_in_place, embedding, rmsnorm, swiglu};
use super::rope::rope;
use super::CpuError;
use crate::model::ModelWeights;

/// An intermediate activation, `[n_tokens, dim]`, offered to a forward observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// The embedding rows (transformers' `hidden_states[0]`).
    Embedding,
    /// The residual stream after layer `i` (`hidden_states[i + 1]`).
    Layer(usize),
    /// After the final RMSNorm.
    FinalNorm,
}

/// Logits `[n, vocab]` for every token of `tokens`, appended at position `cache.len()`.
pub fn forward(
    w: &ModelWeights,
    tokens: &[u32],
    cache: &mut KvCache,
) -> Result<Vec<f32>, CpuError> {
    let rows: Vec<usize> = (0..tokens.len()).collect();
    forward_rows(w, tokens, cache, &rows)
}

/// Logits `[vocab]` of the last token only (the decode / end-of-prefill case).
pub fn forward_last(
    w: &ModelWeights,
    tokens: &[u32],
    cache: &mut KvCache,
) -> Result<Vec<f32>, CpuError> {
    let last = tokens.len().saturating_sub(1);
    forward_rows(w, tokens, cache, &[last])
}

/// Logits `[rows.len(), vocab]` for the tokens at indices `rows` of `tokens` (the LM head is the
/// costliest matmul for short sequences: skip the rows nobody reads).
pub fn forward_rows(
    w: &ModelWeights,
    tokens: &[u32],
    cache: &mut KvCache,
    rows: &[usize],
) -> Result<Vec<f32>, CpuError> {
    forward_traced(w, tokens, cache, rows, &mut |_, _| {})
}

/// [`forward_rows`], showing `observe` every [`Activation`] (for debugging against
/// transformers' per-layer hidden states).
pub fn forward_traced(
    w: &ModelWeights,
    tokens: &[u32],
    cache: &mut KvCache,
    rows: &[usize],
    observe: &mut dyn FnMut(Activation, &[f32]),
) -> Result<Vec<f32>, CpuError> {
    let c = &w.config;
    check_inputs(w, tokens, cache, rows)?;
    let n = tokens.len();
    let start = cache.len();
    let positions: Vec<usize> = (start..start + n).collect();
    let shape = AttentionShape {
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head_dim: c.head_dim,
    };

    let mut h = embedding(w.embedding.as_bf16(), c.dim, tokens);
    observe(Activation::Embedding, &h);
    decoder_layers(w, &mut h, &positions, observe, &mut |i, q, k, v| {
        let (k_all, v_all) = cache.append(i, k, v);
        attention(q, k_all, v_all, start, shape)
    });
    cache.commit(n);

    let normed = rmsnorm(&h, w.final_norm.as_bf16(), c.norm_eps);
    observe(Activation::FinalNorm, &normed);
    Ok(lm_head_rows(w, &normed, rows))
}

/// Stores one layer's new K/V rows (`k`, `v: [n, kv_dim]`, after RoPE) wherever the cache keeps
/// them and returns the attention output `[n, q_dim]` for the queries `q: [n, q_dim]`.
pub type AttendFn<'a> = dyn FnMut(usize, &[f32], &[f32], &[f32]) -> Vec<f32> + 'a;

/// Every decoder layer over the residual stream `h: [n, dim]`, row `t` at `positions[t]`.
/// Shared by [`forward_traced`] (one contiguous cache) and the batched CPU backend (a paged
/// cache, several sequences per call): only `attend` differs, so both compute the same bits.
pub fn decoder_layers(
    w: &ModelWeights,
    h: &mut [f32],
    positions: &[usize],
    observe: &mut dyn FnMut(Activation, &[f32]),
    attend: &mut AttendFn<'_>,
) {
    let c = &w.config;
    for (i, l) in w.layers.iter().enumerate() {
        let x = rmsnorm(h, l.attn_norm.as_bf16(), c.norm_eps);
        let mut q = matmul(&x, l.wq.as_bf16(), c.dim);
        let mut k = matmul(&x, l.wk.as_bf16(), c.dim);
        let v = matmul(&x, l.wv.as_bf16(), c.dim);
        rope(&mut q, c.head_dim, positions, c.rope_theta, w.rope_layout);
        rope(&mut k, c.head_dim, positions, c.rope_theta, w.rope_layout);
        let attn = attend(i, &q, &k, &v);
        add_in_place(h, &matmul(&attn, l.wo.as_bf16(), c.q_dim()));

        let x = rmsnorm(h, l.ffn_norm.as_bf16(), c.norm_eps);
        let gate = matmul(&x, l.w_gate.as_bf16(), c.dim);
        let up = matmul(&x, l.w_up.as_bf16(), c.dim);
        add_in_place(h, &matmul(&swiglu(&gate, &up), l.w_down.as_bf16(), c.ffn_dim));
        observe(Activation::Layer(i), h);
    }
}

/// The LM head over rows `rows` of the final-normed stream `normed: [n, dim]` -> `[rows, vocab]`.
pub fn lm_head_rows(w: &ModelWeights, normed: &[f32], rows: &[usize]) -> Vec<f32> {
    let dim = w.config.dim;
    let selected: Vec<f32> = rows
        .iter()
        .flat_map(|&r| &normed[r * dim..(r + 1) * dim])
        .copied()
        .collect();
    matmul(&selected, w.lm_head().as_bf16(), dim)
}

/// Everything that could go wrong is checked before the cache is touched, so a refused call
/// leaves the session as it was.
fn check_inputs(
    w: &ModelWeights,
    tokens: &[u32],
    cache: &KvCache,
    rows: &[usize],
) -> Result<(), CpuError> {
    let c = &w.config;
    if tokens.is_empty() {
        return Err(CpuError::NoTokens);
    }
    if cache.n_layers() != c.n_layers || cache.kv_dim() != c.kv_dim() {
        return Err(CpuError::CacheMismatch {
            cache_layers: cache.n_layers(),
            cache_kv_dim: cache.kv_dim(),
            model_layers: c.n_layers,
            model_kv_dim: c.kv_dim(),
        });
    }
    if let Some((index, &token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= c.vocab_size)
    {
        return Err(CpuError::TokenOutOfRange {
            index,
            token,
            vocab_size: c.vocab_size,
        });
    }
    let needed = cache.len() + tokens.len();
    if needed > cache.max_len() {
        return Err(CpuError::ContextFull {
            held: cache.len(),
            new: tokens.len(),
            max: cache.max_len(),
        });
    }
    if let Some(&row) = rows.iter().find(|&&r| r >= tokens.len()) {
        return Err(CpuError::RowOutOfRange {
            row,
            n_tokens: tokens.len(),
        });
    }
    Ok(())
}

/// A prompt and its continuation on one cache: prefill (optionally in chunks), then decode.
pub struct CpuSession<'w> {
    pub weights: &'w ModelWeights,
    pub cache: KvCache,
}

impl<'w> CpuSession<'w> {
    pub fn new(weights: &'w ModelWeights) -> Self {
        CpuSession {
            weights,
            cache: KvCache::new(&weights.config),
        }
    }

    /// Feeds `tokens` in chunks of at most `chunk` tokens (bounding activation memory) and
    /// returns the logits of the last token.
    pub fn prefill(&mut self, tokens: &[u32], chunk: usize) -> Result<Vec<f32>, CpuError> {
        if tokens.is_empty() {
            return Err(CpuError::NoTokens);
        }
        let mut logits = Vec::new();
        for part in tokens.chunks(chunk.max(1)) {
            logits = forward_last(self.weights, part, &mut self.cache)?;
        }
        Ok(logits)
    }

    /// Feeds one token, returning its logits `[vocab]`.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>, CpuError> {
        forward_last(self.weights, &[token], &mut self.cache)
    }
}
