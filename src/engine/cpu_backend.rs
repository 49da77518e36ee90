//! The f32 CPU reference as a backend (`--device cpu`).

use super::{Backend, EngineError};
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
