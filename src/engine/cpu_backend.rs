//! The f32 CPU reference as a backend (`--device cpu`).

use rayon::prelude::*;

use super::{check_targets, Backend, EngineError, KvCacheDtype};
use crate::cpu::{forward, forward_last, KvCache};
use crate::model::{ModelConfig, ModelWeights};
use crate::sampling::token_logprobs;

/// Rows of logits one scoring pass holds (128 MiB of f32 at Nemo's vocabulary).
const SCORE_ROWS: usize = 256;

pub struct CpuBackend<'w> {
    weights: &'w ModelWeights,
    cache: KvCache,
}

impl<'w> CpuBackend<'w> {
    pub fn new(weights: &'w ModelWeights) -> Self {
        CpuBackend { cache: KvCache::new(&weights.config), weights }
    }

    /// Stores K and V as `dtype` says; `Auto` keeps the reference's f32, FP8 rounds each head
    /// row through e4m3 as the GPU's FP8 cache stores it.
    pub fn with_kv_cache_dtype(mut self, dtype: KvCacheDtype) -> Self {
        if dtype == KvCacheDtype::Fp8E4m3 {
            self.cache.store_fp8_e4m3(self.weights.config.head_dim);
        }
        self
    }
}

impl Backend for CpuBackend<'_> {
    fn config(&self) -> &ModelConfig {
        &self.weights.config
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        Ok(forward_last(self.weights, tokens, &mut self.cache)?)
    }

    /// Every row's logits, `SCORE_ROWS` tokens at a time; the log-softmax rows in parallel.
    fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>, EngineError> {
        check_targets(self.config(), tokens, targets)?;
        let vocab = self.weights.config.vocab_size;
        let mut out = Vec::with_capacity(tokens.len());
        for (chunk, chunk_targets) in tokens.chunks(SCORE_ROWS).zip(targets.chunks(SCORE_ROWS)) {
            let logits = forward(self.weights, chunk, &mut self.cache)?;
            let scored: Result<Vec<f32>, _> =
                logits.par_chunks_exact(vocab).zip(chunk_targets).map(|(row, &t)| token_logprobs(row, t, 0).map(|lp| lp.logprob)).collect();
            out.extend(scored?);
        }
        Ok(out)
    }

    fn len(&self) -> usize {
        self.cache.len()
    }

    fn reset(&mut self) {
        self.cache.clear();
    }

    fn device(&self) -> &'static str {
        "cpu"
    }
}
