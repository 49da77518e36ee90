//! `nemo bench`'s per-kernel view of a step: `batch` sequences, each `context` tokens long in
//! blocks of its own, each bringing its last `new_tokens` (1: decode; a prompt chunk: prefill),
//! run as one eager step with an event after each kernel (`CudaModel::profile_step`). The KV
//! content is whatever the cache holds: the work is what is timed.

use serde::Serialize;

use crate::engine::EngineError;
use crate::gpu::model::{Breakdown, CudaModel, SeqChunk, BLOCK_SIZE};

#[derive(Debug, Serialize)]
pub struct StepBreakdown {
    pub batch: usize,
    pub context: usize,
    /// New tokens per sequence: 1 for a decode step.
    pub new_tokens: usize,
    pub breakdown: Breakdown,
}

/// Why a (batch, context) pair cannot be profiled on `model`, if it cannot.
pub fn unfit(model: &CudaModel, batch: usize, context: usize) -> Option<String> {
    let blocks = batch * context.div_ceil(BLOCK_SIZE);
    if context == 0 || context > model.capacity() {
        Some(format!("step breakdown at {context}: beyond the {}-token KV cache", model.capacity()))
    } else if batch == 0 || batch > model.max_seqs.min(model.max_chunk) {
        Some(format!("step breakdown at batch {batch}: the model takes at most {} sequences a step", model.max_seqs.min(model.max_chunk)))
    } else if blocks > model.usable_blocks() {
        Some(format!("step breakdown at batch {batch} x {context}: {blocks} KV blocks, the cache has {}", model.usable_blocks()))
    } else {
        None
    }
}

/// One warm step, then one profiled step, of `batch` sequences decoding at `context`.
pub fn decode_step(model: &mut CudaModel, batch: usize, context: usize) -> Result<StepBreakdown, EngineError> {
    step(model, batch, context, 1)
}

/// The same for one prompt chunk of `new_tokens` ending at `context` (its first
/// `context - new_tokens` tokens cached): how a long prefill's chunks spend their time.
pub fn prefill_chunk(model: &mut CudaModel, context: usize, new_tokens: usize) -> Result<StepBreakdown, EngineError> {
    step(model, 1, context, new_tokens)
}

fn step(model: &mut CudaModel, batch: usize, context: usize, new_tokens: usize) -> Result<StepBreakdown, EngineError> {
    let per_seq = context.div_ceil(BLOCK_SIZE);
    let tables: Vec<Vec<u32>> = (0..batch).map(|i| ((i * per_seq) as u32..((i + 1) * per_seq) as u32).collect()).collect();
    let ids: Vec<i32> = (0..new_tokens as i32).map(|t| 1 + t % 1000).collect();
    let seqs: Vec<SeqChunk> =
        tables.iter().map(|t| SeqChunk { ids: &ids, ctx_len: context, block_table: t, want_logits: true }).collect();
    model.forward_batch(&seqs)?;
    let breakdown = model.profile_step(&seqs)?;
    Ok(StepBreakdown { batch, context, new_tokens, breakdown })
}
