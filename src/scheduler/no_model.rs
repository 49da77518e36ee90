//! A backend that runs no model, for what the scheduler alone does and costs
//! (tests/scheduler/admission.rs counts the tokens it makes a GPU run; benches/engine_host.rs
//! times the host's share of a step).

use crate::engine::{BatchBackend, CacheShape, Draw, EngineError, SampleSpec, SampledToken, StepEntry};
use crate::model::ModelConfig;

/// Host work a test or bench wants done on every batch before the tokens are drawn.
pub type StepHook = Box<dyn FnMut(&[StepEntry<'_>], &[SampleSpec]) -> Result<(), EngineError>>;

pub struct NoModelBackend {
    pub config: ModelConfig,
    pub shape: CacheShape,
    /// What every entry that wants a token draws.
    pub token: u32,
    pub on_step: Option<StepHook>,
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
        Err(EngineError::BadStepOutput("a backend without a model has no logits: the engine draws through step_sampled".into()))
    }
    fn step_sampled(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        if let Some(hook) = &mut self.on_step {
            hook(batch, specs)?;
        }
        Ok(batch.iter().map(|e| e.want_logits.then_some(Ok(SampledToken { token: self.token, logprobs: None }))).collect())
    }
    fn device(&self) -> &'static str {
        "none"
    }
}
