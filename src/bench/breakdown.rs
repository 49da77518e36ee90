//! `nemo bench`'s per-kernel view of a decode step: `batch` sequences, each `context` tokens
//! long in blocks of its own, run as one eager step with an event after each kernel
//! (`CudaModel::profile_step`). The KV content is whatever the cache holds: the work is what
//! is timed.

use serde::Serialize;

use crate::engine::EngineError;
use crate::gpu::model::{Breakdown, CudaModel, SeqChunk, BLOCK_SIZE};

#[derive(Debug, Serialize)]
pub struct StepBreakdown {
    pub batch: usize,
    pub context: usize,
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
    let per_seq = context.div_ceil(BLOCK_SIZE);
    let tables: Vec<Vec<u32>> = (0..batch).map(|i| ((i * per_seq) as u32..((i + 1) * per_seq) as u32).collect()).collect();
    let seqs: Vec<SeqChunk> =
        tables.iter().map(|t| SeqChunk { ids: &[1], ctx_len: context, block_table: t, want_logits: true }).collect();
    model.forward_batch(&seqs)?;
    let breakdown = model.profile_step(&seqs)?;
    Ok(StepBreakdown { batch, context, breakdown })
}
