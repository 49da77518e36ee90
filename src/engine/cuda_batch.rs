//! The CUDA engine behind the batched interface the scheduler drives.

use super::batch_check::{check_batch, CacheShape};
use super::{BatchBackend, EngineError, StepEntry};
use crate::gpu::model::{CudaModel, SeqChunk, BLOCK_SIZE};
use crate::model::ModelConfig;

pub struct CudaBatchBackend {
    pub model: CudaModel,
}

impl BatchBackend for CudaBatchBackend {
    fn config(&self) -> &ModelConfig {
        &self.model.weights.config
    }

    fn block_size(&self) -> usize {
        BLOCK_SIZE
    }

    fn num_blocks(&self) -> usize {
        self.model.kv.n_blocks()
    }

    fn max_step_tokens(&self) -> usize {
        self.model.max_chunk
    }

    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        let shape = CacheShape { block_size: BLOCK_SIZE, num_blocks: self.num_blocks(), max_step_tokens: self.max_step_tokens() };
        check_batch(self.config(), shape, batch)?;
        let ids: Vec<Vec<i32>> = batch.iter().map(|e| e.tokens.iter().map(|&t| t as i32).collect()).collect();
        let seqs: Vec<SeqChunk> = batch
            .iter()
            .zip(&ids)
            .map(|(e, ids)| SeqChunk { ids, ctx_len: e.ctx_len, block_table: e.block_table, want_logits: e.want_logits })
            .collect();
        Ok(self.model.forward_batch(&seqs)?)
    }

    fn device(&self) -> &'static str {
        "cuda"
    }

    /// A sticky error (illegal address, launch failure, ...) is reported again by every later
    /// call on the context; an ordinary one (a refused batch, an allocation) leaves it usable.
    fn check_usable(&mut self) -> Result<(), String> {
        self.model.gpu.synchronize("a failed step").map_err(|e| e.to_string())
    }
}
