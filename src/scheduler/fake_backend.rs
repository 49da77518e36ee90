//! A deterministic stand-in for a model, to test the scheduler and engine (and later the server)
//! without weights. It keeps a real paged cache of `(token, position)` per slot and computes an
//! entry's logits from the tokens it reads back through the block table, so a scheduler that
//! hands out a wrong, stale or shared block changes the output and is caught.

use crate::engine::{check_batch, BatchBackend, CacheShape, EngineError, StepEntry};
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
        }
    }

    fn slot(&self, table: &[u32], pos: usize) -> usize {
        table[pos / self.shape.block_size] as usize * self.shape.block_size + pos % self.shape.block_size
    }

    /// The tokens at positions `0..len`, read back from the cache; panics on a slot that holds
    /// another position or nothing (a block-table bug).
    fn read_context(&self, table: &[u32], len: usize) -> Vec<u32> {
        (0..len)
            .map(|pos| match self.slots[self.slot(table, pos)] {
                Some((token, p)) if p == pos => token,
                other => panic!("position {pos} reads slot holding {other:?}: wrong or stale block"),
            })
            .collect()
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
        // Every entry writes before any reads, as the real backends do within a layer.
        let mut writer = std::collections::HashMap::new();
        for (entry, e) in batch.iter().enumerate() {
            let start = e.ctx_len - e.tokens.len();
            for (i, &token) in e.tokens.iter().enumerate() {
                let slot = self.slot(e.block_table, start + i);
                self.slots[slot] = Some((token, start + i));
                writer.insert(slot, entry);
            }
        }
        let fresh = batch.iter().enumerate().any(|(entry, e)| {
            (0..e.ctx_len - e.tokens.len()).any(|pos| writer.get(&self.slot(e.block_table, pos)).is_some_and(|&w| w != entry))
        });
        self.stats.steps_reading_fresh_slots += fresh as usize;
        Ok(batch
            .iter()
            .map(|e| e.want_logits.then(|| fake_logits(&self.read_context(e.block_table, e.ctx_len), self.config.vocab_size)))
            .collect())
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
