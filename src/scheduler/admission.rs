//! When a waiting request may join the running batch. A sequence that cannot grow preempts the
//! youngest and that one is recomputed from scratch, so admitting every request whose next chunk
//! fits (vLLM's policy) fills the cache, then spends steps recomputing: at 1000 in / 1000 out
//! with a cache for ~160 such sequences, about 30 % of all tokens run were recomputation
//! (docs/scheduler.md, "Admission"). `Reserve` keeps room for the tokens the running sequences
//! are expected to generate, as SGLang's scheduler does (its `new_token_ratio`).

use super::sequence::Sequence;

/// The admission policy (`--admission`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Whenever the next chunk's blocks are free: the most sequences at once, and preemptions
    /// (recomputation) when they outgrow the cache.
    Optimistic,
    /// Also keep, for every running sequence and the new one, the blocks for the tokens it has
    /// left to run plus a fraction of the tokens it may still generate (`ReserveRatio`).
    Reserve,
}

/// Generated tokens counted per sequence at most: a request may allow far more than it will use
/// (a server's default max_tokens is the rest of the context).
pub const EXPECTED_TOKENS_CLIP: usize = 4096;

/// The fraction of a sequence's remaining max_tokens expected to be generated: starts at 0.7,
/// decays while no step preempts (the estimate was safe: admit more), and jumps to 1 at a
/// preemption (it was not). SGLang's `new_token_ratio` starts at 0.7 and decays to 0.1 over 600
/// steps; these constants were chosen on the scheduler simulation in docs/scheduler.md, where
/// they waste the least recomputation at 1000 in / 1000 out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReserveRatio(f64);

impl ReserveRatio {
    pub const INITIAL: f64 = 0.7;
    pub const MIN: f64 = 0.2;
    /// From INITIAL to MIN over 1000 steps without a preemption.
    pub const DECAY_PER_STEP: f64 = (Self::INITIAL - Self::MIN) / 1000.0;
    /// After a preemption: assume every sequence generates all it may (clipped).
    pub const AFTER_PREEMPTION: f64 = 1.0;

    pub fn new() -> Self {
        ReserveRatio(Self::INITIAL)
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// After a step's plan: up to AFTER_PREEMPTION if it preempted, else one step of decay.
    pub fn after_step(&mut self, preempted: bool) {
        self.0 = if preempted { Self::AFTER_PREEMPTION } else { (self.0 - Self::DECAY_PER_STEP).max(Self::MIN) };
    }

    /// Tokens `seq` is expected to still run: `left_to_run` known ones (prompt, or
    /// recomputation) and this ratio of those it may still generate (clipped).
    pub fn expected_tokens(self, seq: &Sequence, left_to_run: usize) -> usize {
        let may_generate = seq.request.max_tokens.saturating_sub(seq.generated().len()).min(EXPECTED_TOKENS_CLIP);
        left_to_run + (self.0 * may_generate as f64).ceil() as usize
    }

    /// Blocks a running `seq` is expected to still take: its expected tokens beyond the free
    /// positions of the blocks it holds.
    pub fn expected_blocks(self, seq: &Sequence, block_size: usize) -> usize {
        self.expected_tokens(seq, seq.remaining()).saturating_sub(seq.slack(block_size)).div_ceil(block_size)
    }
}

impl Default for ReserveRatio {
    fn default() -> Self {
        Self::new()
    }
}
