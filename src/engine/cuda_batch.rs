//! The CUDA engine behind the batched interface the scheduler drives.

use super::batch::{Draw, SampleSpec, SampledToken};
use super::batch_check::{check_batch, CacheShape};
use super::{BatchBackend, EngineError, StepEntry};
use crate::sampling::token_logprobs;
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
        self.model.usable_blocks()
    }

    fn max_step_tokens(&self) -> usize {
        self.model.max_chunk
    }

    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        let ids = self.checked_ids(batch)?;
        Ok(self.model.forward_batch(&chunks(batch, &ids))?)
    }

    /// Draws on the device: per sequence a token id comes back, not a `[vocab]` f32 row (512 KiB
    /// at Nemo's vocabulary, so 128 MiB a step at batch 256). Rows that want logprobs copy
    /// their logits back too.
    fn step_sampled(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        self.launch_forward(batch)?;
        self.sample_launched(batch, specs)
    }

    /// Queues the layers and the LM head and returns while the GPU runs them.
    fn launch_forward(&mut self, batch: &[StepEntry<'_>]) -> Result<bool, EngineError> {
        let ids = self.checked_ids(batch)?;
        self.model.launch_sampled(&chunks(batch, &ids))?;
        Ok(true)
    }

    fn sample_launched(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        // Only `want_logits` is read from the chunks: the ids were taken at launch.
        let chunks: Vec<SeqChunk> =
            batch.iter().map(|e| SeqChunk { ids: &[], ctx_len: e.ctx_len, block_table: e.block_table, want_logits: e.want_logits }).collect();
        let tokens = self.model.sample_launched(&chunks, specs)?;
        let mut specs = specs.iter();
        let mut row = 0;
        let mut draws = Vec::with_capacity(tokens.len());
        for token in tokens {
            let Some(token) = token else {
                draws.push(None);
                continue;
            };
            let spec = specs.next().expect("sample_launched checked one spec per wanting entry");
            draws.push(Some(match (token, spec.logprobs) {
                (Ok(token), None) => Ok(SampledToken { token, logprobs: None }),
                (Ok(token), Some(k)) => token_logprobs(&self.model.logits_row(row)?, token, k)
                    .map(|lp| SampledToken { token, logprobs: Some(lp) }),
                (Err(e), _) => Err(e),
            }));
            row += 1;
        }
        Ok(draws)
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

impl CudaBatchBackend {
    /// The batch checked against the cache, its token ids as the kernels take them.
    fn checked_ids(&self, batch: &[StepEntry<'_>]) -> Result<Vec<Vec<i32>>, EngineError> {
        let shape = CacheShape { block_size: BLOCK_SIZE, num_blocks: self.num_blocks(), max_step_tokens: self.max_step_tokens() };
        check_batch(self.config(), shape, batch)?;
        Ok(batch.iter().map(|e| e.tokens.iter().map(|&t| t as i32).collect()).collect())
    }
}

fn chunks<'a>(batch: &'a [StepEntry<'_>], ids: &'a [Vec<i32>]) -> Vec<SeqChunk<'a>> {
    batch
        .iter()
        .zip(ids)
        .map(|(e, ids)| SeqChunk { ids, ctx_len: e.ctx_len, block_table: e.block_table, want_logits: e.want_logits })
        .collect()
}
