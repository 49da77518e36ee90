//! `nemo bench` serving modes, over the scheduler's engine on any batch backend:
//! - offline throughput: N requests of given input/output lengths all queued at once; output and
//!   total tokens/s, time to first token and inter-token latency percentiles;
//! - decode batch sweep: B sequences decoding together after their prefill; ms per step,
//!   tokens/s and the bandwidth the step achieves (weights + KV read) at each B.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::engine::BatchBackend;
use crate::sampling::rng::splitmix64;
use crate::scheduler::{Admission, Engine, EngineOptions, Event, Request, RequestId};

#[derive(Clone, Copy, Debug)]
pub struct ServingOptions {
    pub requests: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub max_running: usize,
    pub max_step_tokens: usize,
    /// Leading prompt tokens every request shares (one system prompt); the rest differ.
    pub shared_prefix: usize,
    pub prefix_caching: bool,
    pub admission: Admission,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `v` (0 when empty).
    pub fn of(mut v: Vec<f64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles { p50: at(0.50), p90: at(0.90), p99: at(0.99) }
    }
}

#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    pub requests: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub seconds: f64,
    pub output_tokens: usize,
    pub output_tokens_per_s: f64,
    pub total_tokens_per_s: f64,
    pub ttft_ms: Percentiles,
    pub itl_ms: Percentiles,
    pub steps: u64,
    /// Tokens the model ran: prompts (less cached blocks), decode tokens, and the recomputation
    /// of preempted sequences.
    pub tokens_run: u64,
    pub preemptions: u64,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub cached_prompt_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct SweepRow {
    pub batch: usize,
    pub ms_per_step: f64,
    pub tokens_per_s: f64,
    /// Weights plus the batch's KV read per step, over the step time.
    pub achieved_gbs: f64,
}

/// Deterministic prompt ids above the special tokens: the first `shared` the same for every
/// request, the rest different per request.
fn prompt(len: usize, shared: usize, salt: u64, vocab: usize) -> Vec<u32> {
    let id = |salt: u64, i: u64| 3 + (splitmix64(salt, i) % (vocab as u64 - 3)) as u32;
    (0..len as u64).map(|i| if (i as usize) < shared { id(u64::MAX, i) } else { id(salt, i) }).collect()
}

fn engine<B: BatchBackend>(backend: B, opts: EngineOptions) -> Result<Engine<B>, String> {
    Engine::new(backend, opts).map_err(|e| e.to_string())
}

/// Queues every request at once and runs the engine dry; greedy, no stop tokens, so every
/// request produces exactly `output_len` tokens.
pub fn throughput<B: BatchBackend>(backend: B, opts: &ServingOptions) -> Result<ThroughputReport, String> {
    let vocab = backend.config().vocab_size;
    let (max_running, max_step_tokens, prefix_caching) = (opts.max_running, opts.max_step_tokens, opts.prefix_caching);
    let mut engine = engine(backend, EngineOptions { max_running, max_step_tokens, prefix_caching, admission: opts.admission })?;
    let start = Instant::now();
    let mut last_token: HashMap<RequestId, Instant> = HashMap::new();
    for r in 0..opts.requests {
        let request = Request::new(prompt(opts.input_len, opts.shared_prefix, r as u64, vocab), opts.output_len);
        engine.add_request(request).map_err(|e| format!("request {r}: {e}"))?;
    }
    let (mut ttft, mut itl, mut output_tokens, mut cached_prompt_tokens) = (Vec::new(), Vec::new(), 0, 0);
    while engine.has_work() {
        let events = engine.step();
        let now = Instant::now();
        for event in events {
            match event {
                Event::Token { id, .. } => {
                    output_tokens += 1;
                    match last_token.insert(id, now) {
                        None => ttft.push((now - start).as_secs_f64() * 1e3),
                        Some(prev) => itl.push((now - prev).as_secs_f64() * 1e3),
                    }
                }
                Event::Finished { id, reason, .. } if reason.as_str() == "error" => {
                    return Err(format!("request {id:?} failed: {reason:?}"));
                }
                Event::Finished { usage, .. } => cached_prompt_tokens += usage.cached_tokens as u64,
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(ThroughputReport {
        requests: opts.requests,
        input_len: opts.input_len,
        output_len: opts.output_len,
        seconds,
        output_tokens,
        output_tokens_per_s: output_tokens as f64 / seconds,
        total_tokens_per_s: (output_tokens + opts.requests * opts.input_len) as f64 / seconds,
        ttft_ms: Percentiles::of(ttft),
        itl_ms: Percentiles::of(itl),
        steps: engine.steps(),
        tokens_run: engine.tokens_run(),
        preemptions: engine.scheduler().preemptions(),
        cached_prompt_tokens,
    })
}

impl ThroughputReport {
    /// Tokens run beyond those each request needed once (its prompt less cached blocks, and
    /// every generated token but the last), as a fraction of those: recomputation after
    /// preemptions.
    pub fn recomputed_fraction(&self) -> f64 {
        let needed = (self.requests * self.input_len + self.output_tokens).saturating_sub(self.requests + self.cached_prompt_tokens as usize);
        self.tokens_run as f64 / needed.max(1) as f64 - 1.0
    }
}

/// For each batch size: `batch` requests of `input_len` tokens prefilled, then `steps` decode
/// steps timed with every sequence in the batch. `weights_bytes` and `kv_bytes_per_token` give the
/// bytes a step must read.
pub fn decode_sweep<B: BatchBackend>(
    backend: B,
    batches: &[usize],
    input_len: usize,
    steps: usize,
    weights_bytes: usize,
    kv_bytes_per_token: usize,
) -> Result<Vec<SweepRow>, String> {
    let vocab = backend.config().vocab_size;
    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let step_budget = backend.max_step_tokens();
    // Every sequence of the batch at once, whatever the cache: the sweep times batch sizes.
    let opts = EngineOptions { max_running: max_batch, max_step_tokens: step_budget, prefix_caching: false, admission: Admission::Optimistic };
    let mut engine = engine(backend, opts)?;
    let mut rows = Vec::new();
    for &batch in batches {
        // Enough tokens to reach the timed steps: the prefill, one warm-up step and `steps`.
        for r in 0..batch {
            let request = Request::new(prompt(input_len, 0, (batch * 1000 + r) as u64, vocab), steps + 2);
            engine.add_request(request).map_err(|e| format!("batch {batch}: {e}"))?;
        }
        // Run until every sequence has its first token (prefill done), then time decode steps.
        let mut started = 0;
        while started < batch && engine.has_work() {
            started += engine.step().iter().filter(|e| matches!(e, Event::Token { index: 0, .. })).count();
        }
        engine.step(); // warm-up decode step
        let t0 = Instant::now();
        for _ in 0..steps {
            engine.step();
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
        while engine.has_work() {
            engine.step();
        }
        let kv = kv_bytes_per_token * batch * (input_len + steps / 2);
        rows.push(SweepRow {
            batch,
            ms_per_step: ms,
            tokens_per_s: batch as f64 / (ms * 1e-3),
            achieved_gbs: (weights_bytes + kv) as f64 / (ms * 1e-3) / 1e9,
        });
    }
    Ok(rows)
}

pub use super::plot::sweep_svg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Percentiles::of(v), Percentiles { p50: 50.0, p90: 90.0, p99: 99.0 });
        assert_eq!(Percentiles::of(vec![7.0]), Percentiles { p50: 7.0, p90: 7.0, p99: 7.0 });
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }
}
