//! The batched interface the scheduler drives: one step runs several sequences' new tokens
//! (prefill chunks and single decode tokens mixed) over the shared paged KV cache.

use super::EngineError;
use crate::model::ModelConfig;

/// One sequence's part of a step.
#[derive(Clone, Debug)]
pub struct StepEntry<'a> {
    /// The new tokens, at positions `ctx_len - tokens.len() .. ctx_len` of the sequence.
    pub tokens: &'a [u32],
    /// The sequence's length after this step (its cached prefix plus `tokens`).
    pub ctx_len: usize,
    /// The KV blocks holding positions `0..ctx_len`: position p lives in block
    /// `block_table[p / block_size]`, slot `p % block_size`. The scheduler owns the blocks.
    pub block_table: &'a [u32],
    /// Whether the last token's logits are wanted (false for a prefill chunk that is not the
    /// prompt's last).
    pub want_logits: bool,
}

/// A backend that runs batches over a paged KV cache of `num_blocks` blocks of `block_size`.
pub trait BatchBackend {
    fn config(&self) -> &ModelConfig;
    fn block_size(&self) -> usize;
    fn num_blocks(&self) -> usize;
    /// Most tokens (summed over entries) one step may carry.
    fn max_step_tokens(&self) -> usize;
    /// Runs the step; returns, in entry order, the f32 logits `[vocab]` of every entry that wants
    /// them (None for the others). Writes K/V of the new tokens into their slots; reads the
    /// cached prefix from the blocks. Entries never share a block that either writes.
    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError>;
    /// "cpu" or "cuda".
    fn device(&self) -> &'static str;
    /// Asked after a failed step: Err (why) when no step can ever succeed again, e.g. after a
    /// sticky CUDA error (an illegal address poisons the context). The engine then ends every
    /// request and refuses new ones, so a server can exit and be restarted rather than fail
    /// every request that comes.
    fn check_usable(&mut self) -> Result<(), String> {
        Ok(())
    }
}
