//! The batched interface the scheduler drives: one step runs several sequences' new tokens
//! (prefill chunks and single decode tokens mixed) over the shared paged KV cache.

use super::EngineError;
use crate::model::ModelConfig;
use crate::sampling::{apply_edits, apply_token_mask, sample_at, token_logprobs, LogitEdit, SamplingError, SamplingParams, TokenLogprobs};

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

/// How to draw the next token of an entry that wants one.
#[derive(Clone, Copy, Debug)]
pub struct SampleSpec<'a> {
    pub params: SamplingParams,
    /// A grammar's token mask (`sampling::mask` layout, `vocab.div_ceil(32)` words), or None.
    /// Applied to the logits first: logprobs, edits and the draw all see the masked row.
    pub mask: Option<&'a [u32]>,
    /// Logit bias and penalties for this draw (`sampling::penalties`): distinct tokens in
    /// ascending order; empty for most requests. Applied before sampling; logprobs stay raw.
    pub edits: &'a [LogitEdit],
    /// The draw index (tokens generated so far), so a recomputed sequence draws what it would
    /// have drawn without the preemption.
    pub step: u64,
    /// `Some(k)`: also the chosen token's logprob and the top `k`.
    pub logprobs: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    pub token: u32,
    pub logprobs: Option<TokenLogprobs>,
}

/// One entry's draw: a sampling error (NaN logits) ends only that entry's request.
pub type Draw = Result<SampledToken, SamplingError>;

/// A backend that runs batches over a paged KV cache of `num_blocks` blocks of `block_size`.
pub trait BatchBackend {
    fn config(&self) -> &ModelConfig;
    fn block_size(&self) -> usize;
    fn num_blocks(&self) -> usize;
    /// Most tokens (summed over entries) one step may carry.
    fn max_step_tokens(&self) -> usize;
    /// Runs the step; returns, in entry order, the f32 logits `[vocab]` of every entry that wants
    /// them (None for the others). Writes K/V of the new tokens into their slots; reads the
    /// cached prefix from the blocks. No two entries write one block. An entry may read a block
    /// another entry fills in this step (prefix caching shares it as it is computed) when some
    /// entry has more than one token (`check_batch`): every entry's K/V of a layer must then be
    /// written before any attention of that layer reads the cache.
    fn step(&mut self, batch: &[StepEntry<'_>]) -> Result<Vec<Option<Vec<f32>>>, EngineError>;
    /// Runs the step and draws the next token of every entry that wants logits (`specs`: one per
    /// such entry, in entry order); returns, in entry order, `Some(draw)` for those entries. The
    /// default samples on the host from [`Self::step`]'s logits; the CUDA backend draws on the
    /// device and copies back token ids (and the logits of rows that want logprobs), instead of
    /// a `[vocab]` row of f32 per sequence.
    fn step_sampled(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        let logits = self.step(batch)?;
        sample_on_host(batch, specs, logits)
    }
    /// The first half of a split step: queues `batch`'s forward pass and returns, on a device
    /// that runs asynchronously, before it finishes, so that the engine computes the grammar
    /// masks meanwhile (vLLM overlaps them the same way). `Ok(false)`: this backend does not
    /// split its steps, and the engine calls [`Self::step_sampled`] instead. After `Ok(true)`
    /// the engine's next call is [`Self::sample_launched`] with the same batch.
    fn launch_forward(&mut self, _batch: &[StepEntry<'_>]) -> Result<bool, EngineError> {
        Ok(false)
    }
    /// The second half: draws the tokens of the step [`Self::launch_forward`] queued, as
    /// [`Self::step_sampled`] would have (`batch` must want the same rows).
    fn sample_launched(&mut self, _batch: &[StepEntry<'_>], _specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        Err(EngineError::BadStepOutput("asked to sample a step that was never launched".into()))
    }
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

/// The logits of a launched step, held until it is sampled, for backends that compute them on
/// the host: their `launch_forward` runs the step into it, `sample_launched` draws from it.
#[derive(Debug, Default)]
pub struct HostLaunch(Option<Vec<Option<Vec<f32>>>>);

impl HostLaunch {
    pub fn hold(&mut self, logits: Vec<Option<Vec<f32>>>) {
        self.0 = Some(logits);
    }

    /// Draws from the held logits (once); errs when none are held or they do not match `batch`.
    pub fn sample(&mut self, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<Vec<Option<Draw>>, EngineError> {
        match self.0.take() {
            Some(logits) => sample_on_host(batch, specs, logits),
            None => Err(EngineError::BadStepOutput("asked to sample a step that was never launched".into())),
        }
    }
}

/// Draws each wanting entry's token from its logits row, as `sampling::sample_at` and
/// `token_logprobs` do. Errs when the rows do not match the batch (a backend bug).
pub fn sample_on_host(
    batch: &[StepEntry<'_>],
    specs: &[SampleSpec],
    logits: Vec<Option<Vec<f32>>>,
) -> Result<Vec<Option<Draw>>, EngineError> {
    let bad = |what: String| Err(EngineError::BadStepOutput(what));
    if logits.len() != batch.len() {
        return bad(format!("{} results for {} entries", logits.len(), batch.len()));
    }
    let wanting = batch.iter().filter(|e| e.want_logits).count();
    if specs.len() != wanting {
        return bad(format!("{} sampling specs for {wanting} entries that want a token", specs.len()));
    }
    let mut specs = specs.iter();
    let mut draws = Vec::with_capacity(batch.len());
    for (i, (e, row)) in batch.iter().zip(logits).enumerate() {
        draws.push(match (e.want_logits, row) {
            (false, _) => None,
            (true, None) => return bad(format!("no logits for entry {i}, which wants its next token")),
            (true, Some(row)) => Some(draw(specs.next().expect("counted above"), &row)),
        });
    }
    Ok(draws)
}

/// One token from one row of logits.
pub fn draw(spec: &SampleSpec, logits: &[f32]) -> Draw {
    let masked;
    let logits = match spec.mask {
        None => logits,
        Some(mask) => {
            let mut row = logits.to_vec();
            apply_token_mask(&mut row, mask)?;
            masked = row;
            &masked[..]
        }
    };
    let token = if spec.edits.is_empty() {
        sample_at(&spec.params, logits, spec.step)?
    } else {
        let mut edited = logits.to_vec();
        apply_edits(&mut edited, spec.edits)?;
        sample_at(&spec.params, &edited, spec.step)?
    };
    let logprobs = spec.logprobs.map(|k| token_logprobs(logits, token, k)).transpose()?;
    Ok(SampledToken { token, logprobs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(want_logits: bool) -> StepEntry<'static> {
        StepEntry { tokens: &[1], ctx_len: 1, block_table: &[0], want_logits }
    }

    fn greedy(logprobs: Option<usize>) -> SampleSpec<'static> {
        SampleSpec { params: SamplingParams::greedy(), mask: None, edits: &[], step: 0, logprobs }
    }

    #[test]
    fn host_sampling_draws_wanting_rows_and_a_bad_row_fails_alone() {
        let batch = [entry(true), entry(false), entry(true)];
        let logits = vec![Some(vec![0.0, 2.0, 1.0]), None, Some(vec![f32::NAN, 0.0, 0.0])];
        let draws = sample_on_host(&batch, &[greedy(Some(1)), greedy(None)], logits).unwrap();
        let first = draws[0].clone().unwrap().unwrap();
        assert_eq!(first.token, 1);
        assert_eq!(first.logprobs.unwrap().top.len(), 1);
        assert!(draws[1].is_none());
        assert!(draws[2].clone().unwrap().is_err(), "NaN logits fail their own row only");
    }

    #[test]
    fn rows_that_do_not_match_the_batch_are_a_step_error() {
        let batch = [entry(true), entry(false)];
        let mismatch = |logits: Vec<Option<Vec<f32>>>, specs: &[SampleSpec]| {
            matches!(sample_on_host(&batch, specs, logits), Err(EngineError::BadStepOutput(_)))
        };
        assert!(mismatch(vec![Some(vec![1.0])], &[greedy(None)]), "too few rows");
        assert!(mismatch(vec![Some(vec![1.0]), None], &[]), "too few specs");
        assert!(mismatch(vec![None, None], &[greedy(None)]), "no logits for a wanting entry");
    }
}
