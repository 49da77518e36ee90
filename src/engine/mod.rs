//! What the CLI (and later the server's scheduler) drives: a backend that runs one sequence
//! forward and returns logits. The CPU reference and the CUDA engine both implement it, so one
//! generation loop and one set of tests serve both.

mod batch;
mod batch_check;
mod cpu_backend;
mod cpu_batch;
mod cuda_backend;
mod cuda_batch;
mod kv_cache_dtype;

pub use batch::{draw, sample_on_host, BatchBackend, Draw, HostLaunch, SampleSpec, SampledToken, StepEntry};
pub use batch_check::{check_batch, BatchError, CacheShape};
pub use cpu_backend::CpuBackend;
pub use cpu_batch::{CpuBatchBackend, CpuBatchOptions, PagedKvCache};
pub use cuda_backend::{open_cuda_backend, CudaBackend, CudaOptions};
pub use cuda_batch::CudaBatchBackend;
pub use kv_cache_dtype::KvCacheDtype;

use crate::model::ModelConfig;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
    #[error(transparent)]
    Sampling(#[from] crate::sampling::SamplingError),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    #[error("token {token} at index {index} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { index: usize, token: u32, vocab_size: usize },
    #[error("context full: {held} tokens held + {new} new exceed the {max}-token context")]
    ContextFull { held: usize, new: usize, max: usize },
    #[error("no tokens to run")]
    NoTokens,
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("the backend's step output does not match the batch: {0}")]
    BadStepOutput(String),
    #[error("the logits after token {index} are NaN, +infinity or all -infinity: the forward pass produced invalid values")]
    NonFiniteLogits { index: usize },
}

/// One sequence at a time: `forward` appends tokens after those already run and returns the
/// logits `[vocab_size]` (f32) of the last one.
pub trait Backend {
    fn config(&self) -> &ModelConfig;
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, EngineError>;
    /// `forward`, then the token of draw `spec.step` by the sampler's rule, after the logit
    /// edits of `spec` (`spec.logprobs` is not used). The CUDA backend samples on the device
    /// and copies back one id instead of the logits; this default samples the logits on the
    /// host. Both give the same token (see kernels/sampling.cu).
    fn forward_sampled(&mut self, tokens: &[u32], spec: &SampleSpec) -> Result<u32, EngineError> {
        let logits = self.forward(tokens)?;
        Ok(batch::draw(&SampleSpec { logprobs: None, ..*spec }, &logits)?.token)
    }
    /// Runs `tokens` after those held (as `forward`) and returns, for each, the log-probability
    /// that `targets[i]` comes next (scoring text: `nemo perplexity`). This default runs one
    /// token a call; the CPU and CUDA backends score whole chunks.
    fn score(&mut self, tokens: &[u32], targets: &[u32]) -> Result<Vec<f32>, EngineError> {
        check_targets(self.config(), tokens, targets)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (&t, &target) in tokens.iter().zip(targets) {
            out.push(crate::sampling::token_logprobs(&self.forward(&[t])?, target, 0)?.logprob);
        }
        Ok(out)
    }
    /// Tokens held (the position of the next token).
    fn len(&self) -> usize;
    /// Forgets the sequence.
    fn reset(&mut self);
    /// "cpu" or "cuda", for messages.
    fn device(&self) -> &'static str;
}

/// `score`'s arguments: one target per token, each inside the vocabulary.
pub fn check_targets(config: &ModelConfig, tokens: &[u32], targets: &[u32]) -> Result<(), EngineError> {
    if targets.len() != tokens.len() {
        return Err(EngineError::BadStepOutput(format!("{} targets for {} tokens to score", targets.len(), tokens.len())));
    }
    match targets.iter().enumerate().find(|(_, &t)| t as usize >= config.vocab_size) {
        Some((index, &token)) => Err(EngineError::TokenOutOfRange { index, token, vocab_size: config.vocab_size }),
        None => Ok(()),
    }
}

/// The checks every backend makes before touching its cache.
pub fn check_tokens(config: &ModelConfig, held: usize, max: usize, tokens: &[u32]) -> Result<(), EngineError> {
    if tokens.is_empty() {
        return Err(EngineError::NoTokens);
    }
    if let Some((index, &token)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= config.vocab_size) {
        return Err(EngineError::TokenOutOfRange { index, token, vocab_size: config.vocab_size });
    }
    if held + tokens.len() > max {
        return Err(EngineError::ContextFull { held, new: tokens.len(), max });
    }
    Ok(())
}
