//! The CPU reference's KV cache: per layer, K (after RoPE) and V in f32 as
//! `[len, n_kv_heads, head_dim]`, grown as tokens arrive. K stays in the checkpoint's own q/k
//! row order: attention scores are invariant to a permutation applied to both q and k.

use crate::cpu::fp8::round_row_through_e4m3;
use crate::model::ModelConfig;

pub struct KvCache {
    kv_dim: usize,
    max_len: usize,
    len: usize,
    /// Per layer: (k, v), each `[len, kv_dim]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Rows of this many values (a KV head of a token) are rounded through FP8 e4m3 with their
    /// own scale as they arrive ([`KvCache::store_fp8_e4m3`]); None keeps f32.
    fp8_rows: Option<usize>,
}

impl KvCache {
    /// An empty cache for `config`, accepting up to `config.max_context` tokens.
    pub fn new(config: &ModelConfig) -> Self {
        KvCache {
            kv_dim: config.kv_dim(),
            max_len: config.max_context,
            len: 0,
            layers: vec![(Vec::new(), Vec::new()); config.n_layers],
            fp8_rows: None,
        }
    }

    /// From now on, K and V are stored as an FP8 e4m3 cache with one scale per `head_dim`
    /// values stores them (docs/fp8-kv.md), as `--kv-cache-dtype fp8` asks.
    pub fn store_fp8_e4m3(&mut self, head_dim: usize) {
        assert!(head_dim > 0 && self.kv_dim % head_dim == 0, "head_dim {head_dim} must divide kv_dim {}", self.kv_dim);
        self.fp8_rows = Some(head_dim);
    }

    /// Tokens held (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Forgets everything from position `len` on (e.g. to re-run a suffix).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            for (k, v) in &mut self.layers {
                k.truncate(len * self.kv_dim);
                v.truncate(len * self.kv_dim);
            }
            self.len = len;
        }
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Appends the new tokens' K and V rows of `layer` (`[n, kv_dim]` each) and returns the
    /// whole layer, old and new. The token count advances once every layer was appended to,
    /// by [`KvCache::commit`].
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) -> (&[f32], &[f32]) {
        let (kc, vc) = &mut self.layers[layer];
        debug_assert_eq!(
            kc.len(),
            self.len * self.kv_dim,
            "layer {layer} appended twice"
        );
        let (k_start, v_start) = (kc.len(), vc.len());
        kc.extend_from_slice(k);
        vc.extend_from_slice(v);
        if let Some(head_dim) = self.fp8_rows {
            kc[k_start..].chunks_exact_mut(head_dim).for_each(round_row_through_e4m3);
            vc[v_start..].chunks_exact_mut(head_dim).for_each(round_row_through_e4m3);
        }
        (kc, vc)
    }

    pub(crate) fn commit(&mut self, n_new: usize) {
        self.len += n_new;
        debug_assert!(self
            .layers
            .iter()
            .all(|(k, _)| k.len() == self.len * self.kv_dim));
    }

    /// K and V of `layer`, `[len, n_kv_heads, head_dim]` each.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.layers[layer];
        (k, v)
    }
}
