//! A deterministic stand-in for a model, to test the scheduler and engine (and later the server)
//! without weights. It keeps a real paged cache of `(token, position)` per slot and computes an
//! entry's logits from the tokens it reads back through the block table, so a scheduler that
//! hands out a wrong, stale or shared block changes the output and is caught.

use crate::engine::{check_batch, BatchBackend, CacheShape, Draw, EngineError, HostLaunch, SampleSpec, StepEntry};
use super::{FinishReason, Request};
use crate::model::ModelConfig;
use crate::sampling::rng::splitmix64;
use crate::sampling::sample_at;

/// The logits the fake model gives after `context`: a pure function of the whole context, so a
/// solo replay ([`fake_solo_run`]) knows what a correct batched run must produce.
pub fn fake_logits(context: &[u32], vocab: usize) -> Vec<f32> {
    // FNV-1a over the tokens, then one SplitMix64 draw per vocabulary entry.
    let hash = context.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &t| (h ^ t as u64).wrapping_mul(0x100_0000_01b3));
    (0..vocab as u64).map(|v| (splitmix64(hash, v) >> 40) as f32 / (1u64 << 24) as f32 * 6.0).collect()
}

/// What `request` generates alone under the fake model: its tokens and why it ends.
pub fn fake_solo_run(request: &Request, vocab: usize) -> (Vec<u32>, FinishReason) {
    let mut context = request.prompt.clone();
    let mut out = Vec::new();
    loop {
        let token = sample_at(&request.sampling, &fake_logits(&context, vocab), out.len() as u64)
            .expect("fake logits are finite");
        out.push(token);
        context.push(token);
        if request.stop_token_ids.contains(&token) {
            return (out, FinishReason::Stop);
        }
        if out.len() == request.max_tokens {
            return (out, FinishReason::Length);
        }
    }
}

/// Counters a test reads after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStats {
    pub steps: usize,
    pub most_tokens_in_a_step: usize,
    pub most_entries_in_a_step: usize,
    pub tokens_run: usize,
    /// Steps in which an entry read a slot another entry of the step wrote (prefix caching
    /// sharing a block as it is filled).
    pub steps_reading_fresh_slots: usize,
    /// Steps run as `launch_forward` + `sample_launched` (`split_steps`).
    pub split_steps: usize,
}

pub struct FakeBackend {
    config: ModelConfig,
    shape: CacheShape,
    /// `[num_blocks * block_size]`: what each slot holds, if written.
    slots: Vec<Option<(u32, usize)>>,
    pub stats: FakeStats,
    /// Makes the step with this index (0-based) fail, to test error handling.
    pub fail_at_step: Option<usize>,
    /// After that failure, say that no step can succeed again (a sticky CUDA error).
    pub fail_fatally: bool,
    failed: bool,
    /// Split each step into `launch_forward` and `sample_launched`, as the CPU and CUDA
    /// backends do (off: the engine's `step_sampled` path).
    pub split_steps: bool,
    launched: HostLaunch,
}

impl FakeBackend {
    pub fn new(vocab_size: usize, max_context: usize, shape: CacheShape) -> Self {
        let config = ModelConfig { vocab_size, max_context, ..ModelConfig::nemo_12b() };
        FakeBackend {
            config,
            shape,
            slots: vec![None; shape.num_blocks * shape.block_size],
            stats: FakeStats::default(),
            fail_at_step: None,
            fail_fatally: false,
            failed: false,
            split_steps: false,
            launched: HostLaunch::default(),
        }
    }

    fn slot(&self, table: &[u32], pos: usize) -> usize {
        table[pos / self.shape.block_size] as usize * self.shape.block_size + pos % self.shape.block_size
    }
}

impl BatchBackend for FakeBackend {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn block_size(&self) -> usize {
        self.shape.block_size
    }

    fn num_blocks(&self) -> usize {
        self.shape.num_blocks
    }

    fn max_step_tokens(&self) -> usize {
        self.shape.max_step_tokens
    }

    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        self.launched = HostLaunch::default(); // a launched step not sampled is not sampled later
        check_batch(&self.config, self.shape, batch)?;
        let step = self.stats.steps;
        self.stats.steps += 1;
        let tokens: usize = batch.iter().map(|e| e.tokens.len()).sum();
        self.stats.tokens_run += tokens;
        self.stats.most_tokens_in_a_step = self.stats.most_tokens_in_a_step.max(tokens);
        self.stats.most_entries_in_a_step = self.stats.most_entries_in_a_step.max(batch.len());
        if self.fail_at_step == Some(step) {
            self.failed = true;
            return Err(EngineError::NoTokens); // any error: the engine must fail these entries
        }
        // Every entry writes before any reads, as the real backends do within a layer; but in a
        // step of single tokens another entry's write is not seen (the CUDA backend writes those
        // K/V inside its attention kernel): such a read finds what the slot held before.
        let single_tokens = batch.iter().all(|e| e.tokens.len() == 1);
        let mut written = std::collections::HashMap::new(); // slot -> (writer, what it held before)
        for (entry, e) in batch.iter().enumerate() {
            let start = e.ctx_len - e.tokens.len();
            for (i, &token) in e.tokens.iter().enumerate() {
                let slot = self.slot(e.block_table, start + i);
                let before = self.slots[slot].replace((token, start + i));
                written.insert(slot, (entry, before));
            }
        }
        // Every entry reads its whole context back, logits wanted or not; a slot that holds
        // another position or nothing is a block-table bug.
        let mut fresh = false;
        let mut contexts = Vec::with_capacity(batch.len());
        for (entry, e) in batch.iter().enumerate() {
            let mut context = Vec::with_capacity(e.ctx_len);
            for pos in 0..e.ctx_len {
                let slot = self.slot(e.block_table, pos);
                let held = match written.get(&slot) {
                    Some(&(writer, before)) if writer != entry => {
                        fresh = true;
                        if single_tokens { before } else { self.slots[slot] }
                    }
                    _ => self.slots[slot],
                };
                match held {
                    Some((token, p)) if p == pos => context.push(token),
                    other => panic!("entry {entry}, position {pos} reads a slot holding {other:?}: wrong or stale block"),
                }
            }
            contexts.push(context);
        }
        self.stats.steps_reading_fresh_slots += fresh as usize;
        Ok(batch.iter().zip(contexts).map(|(e, context)| e.want_logits.then(|| fake_logits(&context, self.config.vocab_size))).collect())
    }

    fn launch_forward(&mut self, batch: &[StepEntry<'_>]) -> Result<bool, EngineError> {
        if !self.split_steps {
            return Ok(false);
        }
        let logits = self.step(batch)?;
        self.launched.hold(logits);
        Ok(true)
    }

    fn sample_launched(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        let draws = self.launched.sample(batch, specs)?;
        self.stats.split_steps += 1;
        Ok(draws)
    }

    fn device(&self) -> &'static str {
        "fake"
    }

    fn check_usable(&mut self) -> Result<(), String> {
        match self.failed && self.fail_fatally {
            true => Err("the fake device is gone".into()),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_depend_on_the_whole_context_and_nothing_else() {
        let a = fake_logits(&[1, 2, 3], 16);
        assert_eq!(a, fake_logits(&[1, 2, 3], 16));
        assert_ne!(a, fake_logits(&[1, 2, 4], 16));
        assert_ne!(a, fake_logits(&[0, 2, 3], 16));
        assert!(a.iter().all(|&x| (0.0..6.0).contains(&x)));
    }

    #[test]
    fn a_stale_block_is_caught_on_read() {
        let shape = CacheShape { block_size: 2, num_blocks: 2, max_step_tokens: 8 };
        let mut fake = FakeBackend::new(16, 64, shape);
        let write = StepEntry { tokens: &[1, 2, 3], ctx_len: 3, block_table: &[0, 1], want_logits: true };
        assert_eq!(fake.step(&[write]).unwrap()[0].as_deref(), Some(&fake_logits(&[1, 2, 3], 16)[..]));
        // Reading positions 0..2 through block 1 finds position 2 in its first slot.
        let wrong = StepEntry { tokens: &[5], ctx_len: 3, block_table: &[1, 0], want_logits: true };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fake.step(&[wrong])));
        assert!(caught.is_err());
    }
}
