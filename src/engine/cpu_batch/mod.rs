//! The f32 CPU reference as a [`BatchBackend`]: every entry's new tokens run through the same
//! per-op code as [`crate::cpu::forward`] (the shared [`decoder_layers`]), over a paged KV cache.
//!
//! All the step's tokens go through each matmul together (the weights are read once per step);
//! attention runs per entry over its prefix gathered from its blocks. Every op computes a row
//! the same way whatever rows surround it (see src/cpu/matmul.rs), so an entry's logits equal
//! those of a solo `cpu::forward_last` on a fresh cache, bit for bit.

mod paged_cache;

pub use paged_cache::PagedKvCache;

use super::batch_check::{check_batch, CacheShape};
use super::{BatchBackend, Draw, EngineError, HostLaunch, KvCacheDtype, SampleSpec, StepEntry};
use crate::cpu::{attention, decoder_layers, embedding, lm_head_rows, rmsnorm, AttentionShape};
use crate::model::{ModelConfig, ModelWeights};

/// Sizes chosen at start-up.
#[derive(Clone, Copy, Debug)]
pub struct CpuBatchOptions {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Most tokens one step may carry (bounds activation memory).
    pub max_step_tokens: usize,
}

pub struct CpuBatchBackend<'w> {
    weights: &'w ModelWeights,
    cache: PagedKvCache,
    max_step_tokens: usize,
    launched: HostLaunch,
}

impl<'w> CpuBatchBackend<'w> {
    pub fn new(weights: &'w ModelWeights, opts: CpuBatchOptions) -> Self {
        let c = &weights.config;
        assert!(opts.max_step_tokens > 0, "max_step_tokens must be positive");
        CpuBatchBackend {
            cache: PagedKvCache::new(c.n_layers, c.kv_dim(), opts.block_size, opts.num_blocks),
            weights,
            max_step_tokens: opts.max_step_tokens,
            launched: HostLaunch::default(),
        }
    }

    /// Stores K and V as `dtype` says; `Auto` keeps the reference's f32.
    pub fn with_kv_cache_dtype(mut self, dtype: KvCacheDtype) -> Self {
        if dtype == KvCacheDtype::Fp8E4m3 {
            self.cache.store_fp8_e4m3(self.weights.config.head_dim);
        }
        self
    }

    /// Stores K and V rounded to bf16, as the GPU's default cache does: the control against
    /// which an FP8 cache's cost is measured.
    pub fn with_bf16_kv_cache(mut self) -> Self {
        self.cache.store_bf16();
        self
    }

    fn shape(&self) -> CacheShape {
        CacheShape {
            block_size: self.cache.block_size(),
            num_blocks: self.cache.num_blocks(),
            max_step_tokens: self.max_step_tokens,
        }
    }
}

impl BatchBackend for CpuBatchBackend<'_> {
    fn config(&self) -> &ModelConfig {
        &self.weights.config
    }

    fn block_size(&self) -> usize {
        self.cache.block_size()
    }

    fn num_blocks(&self) -> usize {
        self.cache.num_blocks()
    }

    fn max_step_tokens(&self) -> usize {
        self.max_step_tokens
    }

    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        self.launched = HostLaunch::default(); // a launched step not sampled is not sampled later
        check_batch(&self.weights.config, self.shape(), batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let w = self.weights;
        let c = &w.config;
        let tokens: Vec<u32> = batch.iter().flat_map(|e| e.tokens.iter().copied()).collect();
        let positions: Vec<usize> = batch.iter().flat_map(|e| e.ctx_len - e.tokens.len()..e.ctx_len).collect();
        // Row ranges of each entry in the concatenated activations.
        let mut rows = Vec::with_capacity(batch.len());
        let mut row = 0;
        for e in batch {
            rows.push(row..row + e.tokens.len());
            row += e.tokens.len();
        }
        let shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim };
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let cache = &mut self.cache;

        let mut h = embedding(w.embedding.as_bf16(), c.dim, &tokens);
        decoder_layers(w, &mut h, &positions, &mut |_, _| {}, &mut |layer, q, k, v| {
            // Every entry's K/V first: an entry may read a block another one fills in this step.
            for (e, r) in batch.iter().zip(&rows) {
                let kv = r.start * kv_dim..r.end * kv_dim;
                cache.write(layer, e.block_table, e.ctx_len - e.tokens.len(), &k[kv.clone()], &v[kv]);
            }
            let mut out = Vec::with_capacity(q.len());
            for (e, r) in batch.iter().zip(&rows) {
                let start = e.ctx_len - e.tokens.len();
                let (k_all, v_all) = cache.gather(layer, e.block_table, e.ctx_len);
                out.extend(attention(&q[r.start * q_dim..r.end * q_dim], &k_all, &v_all, start, shape));
            }
            out
        });

        let normed = rmsnorm(&h, w.final_norm.as_bf16(), c.norm_eps);
        let last_rows: Vec<usize> = batch.iter().zip(&rows).filter(|(e, _)| e.want_logits).map(|(_, r)| r.end - 1).collect();
        let logits = lm_head_rows(w, &normed, &last_rows);
        let mut per_row = logits.chunks_exact(c.vocab_size);
        Ok(batch.iter().map(|e| e.want_logits.then(|| per_row.next().expect("one row per wanted entry").to_vec())).collect())
    }

    /// Split like the CUDA backend's steps (the masks are computed after the forward pass, not
    /// during it: nothing runs beside the host here), so the engine's split path is the one
    /// every CPU test exercises.
    fn launch_forward(&mut self, batch: &[StepEntry<'_>]) -> Result<bool, EngineError> {
        let logits = self.step(batch)?;
        self.launched.hold(logits);
        Ok(true)
    }

    fn sample_launched(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        self.launched.sample(batch, specs)
    }

    fn device(&self) -> &'static str {
        "cpu"
    }
}
