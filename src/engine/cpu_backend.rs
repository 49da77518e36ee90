//! The f32 CPU reference as a backend (`--device cpu`).

use super::{Backend, EngineError, KvCacheDtype};
use crate::cpu::{forward_last, KvCache};
use crate::model::{ModelConfig, ModelWeights};

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
