//! The CUDA engine as a backend (`--device cuda`): one sequence over the preallocated KV cache,
//! prompts longer than a chunk prefilled chunk by chunk.

use super::{check_targets, check_tokens, Backend, EngineError, KvCacheDtype, SampleSpec};
use crate::gpu::model::{CudaModel, GpuWeights, KvSize, SeqChunk, BLOCK_SIZE};
use crate::gpu::Gpu;
use crate::model::{ModelConfig, ModelWeights};

/// Sizes chosen at start-up.
#[derive(Clone, Copy, Debug)]
pub struct CudaOptions {
    /// The preallocated KV cache (default: the model's context, 131072 tokens for Nemo).
    pub kv: KvSize,
    /// Most tokens per step; longer prompts are prefilled in chunks.
    pub max_chunk: usize,
    /// Most sequences per step.
    pub max_seqs: usize,
    /// How the cache stores K and V (`--kv-cache-dtype`; bf16 unless told).
    pub kv_dtype: KvCacheDtype,
}

impl CudaOptions {
    pub fn for_config(config: &ModelConfig) -> Self {
        CudaOptions { kv: KvSize::Tokens(config.max_context), max_chunk: 4096, max_seqs: 256, kv_dtype: KvCacheDtype::Auto }
    }
}

pub struct CudaBackend {
    pub model: CudaModel,
    held: usize,
}

impl CudaBackend {
    /// Uploads validated host weights.
    pub fn from_weights(weights: &ModelWeights, opts: CudaOptions) -> Result<CudaBackend, EngineError> {
        let gpu = Gpu::new()?;
        let weights = GpuWeights::upload(&gpu, weights)?;
        Self::with_weights(gpu, weights, opts)
    }

    /// Seeded random weights of `config`'s exact shapes, generated on the GPU (no files needed).
    pub fn dummy(config: &ModelConfig, seed: u64, opts: CudaOptions) -> Result<CudaBackend, EngineError> {
        let gpu = Gpu::new()?;
        let weights = GpuWeights::dummy(&gpu, config, seed)?;
        Self::with_weights(gpu, weights, opts)
    }

    fn with_weights(gpu: Gpu, weights: GpuWeights, opts: CudaOptions) -> Result<CudaBackend, EngineError> {
        // One sequence never uses more than the context.
        let kv = opts.kv.at_most(weights.config.max_context);
        let model = CudaModel::with_kv_dtype(gpu, weights, kv, opts.kv_dtype, opts.max_chunk.min(kv.upper_bound()).max(1), opts.max_seqs)?;
        Ok(CudaBackend { model, held: 0 })
    }

    /// Pretends the sequence already holds `held` tokens (whatever the cache contains there):
    /// for timing decode steps at long contexts in `nemo bench`, never for generation.
    pub fn assume_held_for_benchmark(&mut self, held: usize) {
        self.held = held.min(self.model.capacity());
    }
}

impl Backend for CudaBackend {
    fn config(&self) -> &ModelConfig {
        &self.model.weights.config
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError> {
        check_tokens(self.config(), self.held, self.model.capacity(), tokens)?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let chunks: Vec<&[i32]> = ids.chunks(self.model.max_chunk).collect();
        let mut logits = None;
        for (i, chunk) in chunks.iter().enumerate() {
            logits = self.model.forward_chunk(chunk, self.held, i + 1 == chunks.len())?;
            self.held += chunk.len();
        }
        Ok(logits.expect("the last chunk returns logits"))
    }

    fn forward_sampled(&mut self, tokens: &[u32], spec: &SampleSpec) -> Result<u32, EngineError> {
        check_tokens(self.config(), self.held, self.model.capacity(), tokens)?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let chunks: Vec<&[i32]> = ids.chunks(self.model.max_chunk).collect();
        let mut token = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let ctx = self.held + chunk.len();
            let table: Vec<u32> = (0..ctx.div_ceil(BLOCK_SIZE) as u32).collect();
            let seq = SeqChunk { ids: chunk, ctx_len: ctx, block_table: &table, want_logits: last };
            let spec = SampleSpec { logprobs: None, ..*spec };
            let wanted: &[SampleSpec] = if last { &[spec] } else { &[] };
            token = self.model.forward_batch_sampled(&[seq], wanted)?.pop().flatten().transpose()?;
            self.held = ctx;
        }
        Ok(token.expect("the last chunk samples"))
    }

    /// Chunk by chunk, one float per token back (`CudaModel::score_chunk`).
    fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>, EngineError> {
        check_tokens(self.config(), self.held, self.model.capacity(), tokens)?;
        check_targets(self.config(), tokens, targets)?;
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut out = Vec::with_capacity(tokens.len());
        for (chunk, chunk_targets) in ids.chunks(self.model.max_chunk).zip(targets.chunks(self.model.max_chunk)) {
            out.extend(self.model.score_chunk(chunk, self.held, chunk_targets)?);
            self.held += chunk.len();
        }
        // As the host's log-softmax refuses them (`token_logprobs`).
        if let Some(index) = out.iter().position(|l| l.is_nan()) {
            return Err(EngineError::NonFiniteLogits { index });
        }
        Ok(out)
    }

    fn len(&self) -> usize {
        self.held
    }

    fn reset(&mut self) {
        self.held = 0;
    }

    fn device(&self) -> &'static str {
        "cuda"
    }
}

/// The CUDA backend for `--device cuda` / `auto` with a GPU present.
pub fn open_cuda_backend(weights: &ModelWeights) -> Result<Box<dyn Backend + '_>, EngineError> {
    Ok(Box::new(CudaBackend::from_weights(weights, CudaOptions::for_config(&weights.config))?))
}
