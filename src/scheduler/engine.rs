//! The engine loop: requests in, [`Event`]s out. Each [`Engine::step`] asks the scheduler for a
//! plan, runs it as one batched backend step, samples every sequence whose prompt or decode
//! token completed, and finishes those that stopped. The same engine drives the CPU reference
//! and the CUDA backend (both are [`BatchBackend`]s).

use super::admission::Admission;
use super::event::{Event, FinishReason, Usage};
use super::request::{Limits, Request, RequestError, RequestId};
use super::schedule::{ScheduledChunk, Scheduler, SchedulerConfig};
use super::sequence::Sequence;
use crate::engine::{BatchBackend, SampleSpec, StepEntry};
use crate::sampling;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// Most sequences running at once.
    pub max_running: usize,
    /// Most tokens per step; capped by the backend's own limit.
    pub max_step_tokens: usize,
    /// Reuse the K/V of completed blocks across requests that start with the same tokens
    /// (docs/scheduler.md, "Prefix caching").
    pub prefix_caching: bool,
    /// When a waiting request may join the batch (docs/scheduler.md, "Admission").
    pub admission: Admission,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineOptionsError {
    #[error("max_running must be at least 1")]
    ZeroMaxRunning,
    #[error("the step token budget must be at least 1 (options: {options}, backend: {backend})")]
    ZeroStepTokens { options: usize, backend: usize },
    #[error("the backend's KV cache has no blocks (block size {block_size}, {num_blocks} blocks)")]
    EmptyCache { block_size: usize, num_blocks: usize },
}

pub struct Engine<B: BatchBackend> {
    backend: B,
    scheduler: Scheduler,
    limits: Limits,
    next_id: u64,
    /// Events of calls made between steps (cancellations), delivered by the next step.
    pending: Vec<Event>,
    steps: u64,
    /// Tokens the backend has run (prompt chunks, decode tokens, recomputation).
    tokens_run: u64,
    /// New requests are refused while this many wait (`with_max_waiting`; unbounded by default).
    max_waiting: usize,
    /// Set when the backend said after a failed step that it can never run one again.
    unusable: Option<String>,
}

impl<B: BatchBackend> Engine<B> {
    pub fn new(backend: B, opts: EngineOptions) -> Result<Self, EngineOptionsError> {
        let (block_size, num_blocks) = (backend.block_size(), backend.num_blocks());
        if block_size == 0 || num_blocks == 0 {
            return Err(EngineOptionsError::EmptyCache { block_size, num_blocks });
        }
        if opts.max_running == 0 {
            return Err(EngineOptionsError::ZeroMaxRunning);
        }
        if opts.max_step_tokens.min(backend.max_step_tokens()) == 0 {
            let (options, backend) = (opts.max_step_tokens, backend.max_step_tokens());
            return Err(EngineOptionsError::ZeroStepTokens { options, backend });
        }
        let config = SchedulerConfig {
            block_size: backend.block_size(),
            num_blocks: backend.num_blocks(),
            max_step_tokens: opts.max_step_tokens.min(backend.max_step_tokens()),
            max_running: opts.max_running,
            prefix_caching: opts.prefix_caching,
            admission: opts.admission,
        };
        let limits = Limits {
            vocab_size: backend.config().vocab_size,
            max_context: backend.config().max_context,
            block_size: config.block_size,
            num_blocks: config.num_blocks,
        };
        Ok(Engine { scheduler: Scheduler::new(config), backend, limits, next_id: 0, pending: Vec::new(), steps: 0, tokens_run: 0, max_waiting: usize::MAX, unusable: None })
    }

    /// Bounds the queue: `add_request` refuses new requests (`RequestError::QueueFull`) while
    /// `limit` requests wait, preempted ones included, so a flood costs bounded memory. At least 1.
    pub fn with_max_waiting(mut self, limit: usize) -> Self {
        self.max_waiting = limit.max(1);
        self
    }

    /// Requests that may wait at once (`usize::MAX`: unbounded).
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }

    /// Queues a request, or refuses it now if it could never complete.
    pub fn add_request(&mut self, request: Request) -> Result<RequestId, RequestError> {
        if let Some(why) = &self.unusable {
            return Err(RequestError::BackendUnusable(why.clone()));
        }
        request.validate(&self.limits)?;
        let waiting = self.scheduler.num_waiting();
        if waiting >= self.max_waiting {
            return Err(RequestError::QueueFull { waiting, limit: self.max_waiting });
        }
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.scheduler.add(Sequence::new(id, request));
        Ok(id)
    }

    /// Ends a request that has not finished; its `Finished { Cancelled }` comes with the next
    /// step's events. False when the id is unknown or already finished.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        self.end_between_steps(id, FinishReason::Cancelled)
    }

    /// Ends a request with reason `Stop` because the caller found a stop string in its text.
    pub fn finish_stopped(&mut self, id: RequestId) -> bool {
        self.end_between_steps(id, FinishReason::Stop)
    }

    fn end_between_steps(&mut self, id: RequestId, reason: FinishReason) -> bool {
        match self.scheduler.remove(id) {
            Some(seq) => {
                self.pending.push(finished(&seq, reason));
                true
            }
            None => false,
        }
    }

    /// Whether a step would do or report anything.
    pub fn has_work(&self) -> bool {
        !self.scheduler.is_idle() || !self.pending.is_empty()
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Why the backend can never run a step again, once it has said so (every request has
    /// then ended with an error and new ones are refused).
    pub fn unusable(&self) -> Option<&str> {
        self.unusable.as_deref()
    }

    /// Steps run so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Tokens the backend has run so far, recomputation after preemptions included.
    pub fn tokens_run(&self) -> u64 {
        self.tokens_run
    }

    /// Runs one batched step; returns what happened (see [`Event`] for the ordering).
    pub fn step(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.pending);
        let plan = self.scheduler.schedule();
        if plan.chunks.is_empty() {
            return events;
        }
        self.steps += 1;
        self.tokens_run += plan.num_tokens() as u64;
        // A backend that splits its steps queues the forward pass first, and the grammar masks
        // are computed while its device runs it; the others get the masks with the step.
        let launched = {
            let entries: Vec<StepEntry<'_>> = plan.chunks.iter().map(|c| entry(&self.scheduler, c)).collect();
            self.backend.launch_forward(&entries)
        };
        let result = launched.and_then(|launched| {
            self.prepare_masks(&plan.chunks);
            let entries: Vec<StepEntry<'_>> = plan.chunks.iter().map(|c| entry(&self.scheduler, c)).collect();
            let specs: Vec<SampleSpec> =
                plan.chunks.iter().filter(|c| c.want_logits).map(|c| sample_spec(&self.scheduler, c)).collect();
            match launched {
                true => self.backend.sample_launched(&entries, &specs),
                false => self.backend.step_sampled(&entries, &specs),
            }
        });
        let draws = match result {
            Ok(draws) if draws.len() == plan.chunks.len() => draws,
            Ok(draws) => {
                let msg = format!("the backend returned {} results for {} entries", draws.len(), plan.chunks.len());
                return self.fail_all(&plan.chunks, &msg, events);
            }
            Err(e) => return self.fail_all(&plan.chunks, &format!("{} backend step failed: {e}", self.backend.device()), events),
        };
        for (chunk, draw) in plan.chunks.iter().zip(draws) {
            self.scheduler.advance(chunk.id, chunk.len);
            let seq = self.scheduler.running_mut(chunk.id).expect("planned sequences are running");
            if !chunk.want_logits {
                continue;
            }
            let outcome: Result<_, String> = match draw {
                // The row was drawn without its mask: its token cannot be used.
                _ if seq.mask_error().is_some() => Err(seq.mask_error().expect("checked").to_string()),
                Some(Ok(drawn)) => Ok((drawn.token, drawn.logprobs)),
                Some(Err(e)) => Err(format!("sampling failed: {e}")),
                None => Err("the backend returned no token for a sequence that needs its next one".into()),
            };
            match outcome {
                Ok((token, logprobs)) => {
                    let index = seq.generated().len();
                    let consumed = seq.push_generated(token);
                    let grammar_done = seq.grammar_finished();
                    events.push(Event::Token { id: seq.id, index, token, logprobs });
                    // A stop token first; then the grammar (a complete output is a `Stop` even on
                    // the last allowed token); then the length.
                    let reason = match (seq.stop.check(token, index + 1), consumed) {
                        (Some(sampling::FinishReason::Stop), _) => Some(FinishReason::Stop),
                        (_, Err(e)) => Some(FinishReason::Error(e.to_string())),
                        _ if grammar_done => Some(FinishReason::Stop),
                        (Some(sampling::FinishReason::Length), _) => Some(FinishReason::Length),
                        (None, Ok(())) => None,
                    };
                    if let Some(reason) = reason {
                        events.push(self.finish(chunk.id, reason));
                    }
                }
                Err(msg) => events.push(self.finish(chunk.id, FinishReason::Error(msg))),
            }
        }
        events
    }

    /// The grammar masks of the sequences this step samples, computed in parallel (2 to 300
    /// microseconds each at Nemo's vocabulary, docs/structured.md) before the step samples.
    fn prepare_masks(&mut self, chunks: &[ScheduledChunk]) {
        let mut sampled: Vec<RequestId> = chunks.iter().filter(|c| c.want_logits).map(|c| c.id).collect();
        sampled.sort_unstable();
        let constrained = |s: &&mut Sequence| s.has_grammar() && sampled.binary_search(&s.id).is_ok();
        self.scheduler.running_all_mut().par_iter_mut().filter(constrained).for_each(Sequence::prepare_mask);
    }

    fn finish(&mut self, id: RequestId, reason: FinishReason) -> Event {
        let seq = self.scheduler.remove(id).expect("finishing a live sequence");
        finished(&seq, reason)
    }

    /// A failed step may have written anything into the blocks of its sequences: all of them
    /// end with the error (the others go on), and no cached block is trusted any more.
    fn fail_all(&mut self, chunks: &[ScheduledChunk], msg: &str, mut events: Vec<Event>) -> Vec<Event> {
        self.scheduler.forget_cached();
        for c in chunks {
            events.push(self.finish(c.id, FinishReason::Error(msg.to_string())));
        }
        if let Err(why) = self.backend.check_usable() {
            let why = format!("the {} backend is unusable after a failed step: {why}", self.backend.device());
            for id in self.scheduler.ids() {
                events.push(self.finish(id, FinishReason::Error(why.clone())));
            }
            self.unusable = Some(why);
        }
        events
    }
}

fn entry<'a>(scheduler: &'a Scheduler, c: &ScheduledChunk) -> StepEntry<'a> {
    let seq = scheduler.running(c.id).expect("planned sequences are running");
    StepEntry {
        tokens: &seq.tokens()[c.start..c.start + c.len],
        ctx_len: c.start + c.len,
        block_table: &seq.blocks,
        want_logits: c.want_logits,
    }
}

/// How to draw the chunk's next token: the draw index is the number of tokens generated so far,
/// so a recomputed sequence draws exactly what it would have drawn without the preemption.
fn sample_spec<'a>(scheduler: &'a Scheduler, c: &ScheduledChunk) -> SampleSpec<'a> {
    let seq = scheduler.running(c.id).expect("planned sequences are running");
    SampleSpec {
        params: seq.request.sampling,
        mask: seq.token_mask(),
        edits: seq.logit_edits(),
        step: seq.generated().len() as u64,
        logprobs: seq.request.logprobs,
    }
}

fn finished(seq: &Sequence, reason: FinishReason) -> Event {
    let usage = Usage {
        prompt_tokens: seq.prompt_len(),
        completion_tokens: seq.generated().len(),
        cached_tokens: seq.cached_prompt_tokens,
        preemptions: seq.preemptions,
    };
    Event::Finished { id: seq.id, reason, usage }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
