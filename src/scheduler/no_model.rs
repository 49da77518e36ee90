//! A backend that runs no model, for what the scheduler alone does and costs
//! (tests/scheduler/admission.rs counts the tokens it makes a GPU run; benches/engine_host.rs
//! times the host's share of a step; benches/structured.rs how much of the grammar masks'
//! cost a split step hides behind a device's).

use std::time::{Duration, Instant};

use crate::engine::{BatchBackend, CacheShape, Draw, EngineError, SampleSpec, SampledToken, StepEntry};
use crate::model::ModelConfig;
use crate::sampling::is_allowed;
use crate::sampling::rng::splitmix64;

/// Host work a test or bench wants done on every batch before the tokens are drawn.
pub type StepHook = Box<dyn FnMut(&[StepEntry<'_>], &[SampleSpec]) -> Result<(), EngineError>>;

pub struct NoModelBackend {
    pub config: ModelConfig,
    pub shape: CacheShape,
    /// What every entry that wants a token draws, unless its grammar's mask forbids it; then
    /// one of the allowed tokens, picked by the seed and the draw index.
    pub token: u32,
    pub on_step: Option<StepHook>,
    /// A device's time per step, waited out (a stand-in for the GPU's forward pass).
    pub device_time: Duration,
    /// Split steps into `launch_forward` and `sample_launched` as the CUDA backend does: the
    /// device time then runs from the launch, while the engine computes the masks.
    pub split_steps: bool,
    /// When the launched step's device time ends.
    launched_until: Option<Instant>,
}

impl NoModelBackend {
    pub fn new(config: ModelConfig, shape: CacheShape, token: u32) -> Self {
        NoModelBackend { config, shape, token, on_step: None, device_time: Duration::ZERO, split_steps: false, launched_until: None }
    }

    fn draw(&self, spec: &SampleSpec) -> Draw {
        let token = match spec.mask {
            Some(mask) if !is_allowed(mask, self.token) => {
                // The k-th allowed id, k picked by the seed and the draw index.
                let allowed = mask.iter().map(|w| w.count_ones() as u64).sum::<u64>();
                let mut k = splitmix64(spec.params.seed, spec.step) % allowed.max(1);
                let mut token = self.token; // none allowed: the engine reports the grammar's error
                for (i, &word) in mask.iter().enumerate() {
                    if k < word.count_ones() as u64 {
                        let mut w = word;
                        (0..k).for_each(|_| w &= w - 1);
                        token = i as u32 * 32 + w.trailing_zeros();
                        break;
                    }
                    k -= word.count_ones() as u64;
                }
                token
            }
            _ => self.token,
        };
        Ok(SampledToken { token, logprobs: None })
    }

    fn draws(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        if let Some(hook) = &mut self.on_step {
            hook(batch, specs)?;
        }
        let mut specs = specs.iter();
        Ok(batch.iter().map(|e| e.want_logits.then(|| self.draw(specs.next().expect("one spec per wanting entry")))).collect())
    }
}

impl BatchBackend for NoModelBackend {
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
    fn step(&mut self, _: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError> {
        Err(EngineError::BadStepOutput("a backend without a model has no logits: the engine draws through step_sampled or sample_launched".into()))
    }
    fn step_sampled(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        std::thread::sleep(self.device_time);
        self.draws(batch, specs)
    }
    fn launch_forward(&mut self, _: &[StepEntry<'_>]) -> Result<bool, EngineError> {
        if self.split_steps {
            self.launched_until = Some(Instant::now() + self.device_time);
        }
        Ok(self.split_steps)
    }
    fn sample_launched(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        let until = self.launched_until.take().ok_or_else(|| EngineError::BadStepOutput("no step was launched".into()))?;
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        self.draws(batch, specs)
    }
    fn device(&self) -> &'static str {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{mask_words, SamplingParams};

    #[test]
    fn a_masked_draw_picks_among_the_allowed_tokens_only() {
        let shape = CacheShape { block_size: 16, num_blocks: 4, max_step_tokens: 64 };
        let backend = NoModelBackend::new(ModelConfig { vocab_size: 100, ..ModelConfig::nemo_12b() }, shape, 0);
        let mut mask = vec![0u32; mask_words(100)];
        for t in [5u32, 40, 99] {
            mask[t as usize / 32] |= 1 << (t % 32);
        }
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..64 {
            let spec = SampleSpec { params: SamplingParams::default(), mask: Some(&mask), edits: &[], step, logprobs: None };
            seen.insert(backend.draw(&spec).unwrap().token);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![5, 40, 99]);
        let unmasked = SampleSpec { params: SamplingParams::default(), mask: None, edits: &[], step: 0, logprobs: None };
        assert_eq!(backend.draw(&unmasked).unwrap().token, 0);
    }
}
