//! `nemo bench` serving modes, over the scheduler's engine on any batch backend:
//! - offline throughput: N requests of given input/output lengths all queued at once, or arriving
//!   as a Poisson process at a given rate (vLLM's `benchmark_serving --request-rate`); output
//!   and total tokens/s, time to first token (from each request's arrival), inter-token latency
//!   and request latency percentiles;
//! - decode batch sweep: B sequences decoding together after their prefill; ms per step,
//!   tokens/s and the bandwidth the step achieves (weights + KV read) at each B.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// Requests a second, arriving as a seeded Poisson process from time 0; None: all at once.
    pub request_rate: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    /// The mean and nearest-rank percentiles of `v` (0 when empty).
    pub fn of(mut v: Vec<f64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        Percentiles { mean, p50: at(0.50), p90: at(0.90), p99: at(0.99) }
    }
}

#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    pub requests: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub seconds: f64,
    pub output_tokens: usize,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub total_tokens_per_s: f64,
    /// Requests a second (Poisson arrivals), or null when all were queued at once.
    pub request_rate: Option<f64>,
    /// From each request's arrival to its first token.
    pub ttft_ms: Percentiles,
    pub itl_ms: Percentiles,
    /// From each request's arrival to its last token.
    pub latency_ms: Percentiles,
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

/// When each of `n` requests arrives, in seconds from the start: all at 0 without a rate, else
/// a Poisson process of `rate` a second (exponential gaps, seeded), the first at 0.
pub fn arrival_times(n: usize, rate: Option<f64>) -> Vec<f64> {
    let Some(rate) = rate else { return vec![0.0; n] };
    let mut t = 0.0;
    (0..n as u64)
        .map(|i| {
            let at = t;
            // u in (0, 1]: 53 random bits, never 0, so the gap is finite.
            let u = ((splitmix64(0x5eed, i) >> 11) + 1) as f64 / (1u64 << 53) as f64;
            t += -u.ln() / rate;
            at
        })
        .collect()
}

/// Runs `opts.requests` requests through the engine until all finish: queued at once, or each
/// added when its arrival time comes (`arrival_times`; the engine idles until the next one when
/// it has nothing to do). Greedy, no stop tokens, so every request produces exactly
/// `output_len` tokens.
pub fn throughput<B: BatchBackend>(backend: B, opts: &ServingOptions) -> Result<ThroughputReport, String> {
    let vocab = backend.config().vocab_size;
    let (max_running, max_step_tokens, prefix_caching) = (opts.max_running, opts.max_step_tokens, opts.prefix_caching);
    let mut engine = engine(backend, EngineOptions { max_running, max_step_tokens, prefix_caching, admission: opts.admission })?;
    let arrivals = arrival_times(opts.requests, opts.request_rate);
    let start = Instant::now();
    let mut arrived: HashMap<RequestId, Instant> = HashMap::new();
    let mut last_token: HashMap<RequestId, Instant> = HashMap::new();
    let (mut ttft, mut itl, mut latency, mut output_tokens, mut cached_prompt_tokens) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    let mut next = 0;
    loop {
        while next < arrivals.len() && start.elapsed().as_secs_f64() >= arrivals[next] {
            let request = Request::new(prompt(opts.input_len, opts.shared_prefix, next as u64, vocab), opts.output_len);
            let id = engine.add_request(request).map_err(|e| format!("request {next}: {e}"))?;
            arrived.insert(id, start + Duration::from_secs_f64(arrivals[next]));
            next += 1;
        }
        if !engine.has_work() {
            match arrivals.get(next) {
                Some(&at) => std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(start.elapsed())),
                None => break,
            }
            continue;
        }
        let events = engine.step();
        let now = Instant::now();
        for event in events {
            match event {
                Event::Token { id, .. } => {
                    output_tokens += 1;
                    match last_token.insert(id, now) {
                        None => ttft.push((now - arrived[&id]).as_secs_f64() * 1e3),
                        Some(prev) => itl.push((now - prev).as_secs_f64() * 1e3),
                    }
                }
                Event::Finished { id, reason, .. } if reason.as_str() == "error" => {
                    return Err(format!("request {id:?} failed: {reason:?}"));
                }
                Event::Finished { id, usage, .. } => {
                    cached_prompt_tokens += usage.cached_tokens as u64;
                    latency.push((last_token[&id] - arrived[&id]).as_secs_f64() * 1e3);
                }
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
        requests_per_s: opts.requests as f64 / seconds,
        output_tokens_per_s: output_tokens as f64 / seconds,
        total_tokens_per_s: (output_tokens + opts.requests * opts.input_len) as f64 / seconds,
        request_rate: opts.request_rate,
        ttft_ms: Percentiles::of(ttft),
        itl_ms: Percentiles::of(itl),
        latency_ms: Percentiles::of(latency),
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
        assert_eq!(Percentiles::of(v), Percentiles { mean: 50.5, p50: 50.0, p90: 90.0, p99: 99.0 });
        assert_eq!(Percentiles::of(vec![7.0]), Percentiles { mean: 7.0, p50: 7.0, p90: 7.0, p99: 7.0 });
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    #[test]
    fn arrivals_are_all_at_once_or_a_poisson_process_of_the_rate() {
        assert_eq!(arrival_times(3, None), vec![0.0; 3]);
        let t = arrival_times(20_000, Some(50.0));
        assert_eq!(t[0], 0.0);
        assert!(t.windows(2).all(|w| w[0] <= w[1] && w[1].is_finite()));
        // Exponential gaps of mean 1/50 s: the mean and the spread of a memoryless process.
        let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let over_mean = gaps.iter().filter(|&&g| g > mean).count() as f64 / gaps.len() as f64;
        assert!((mean * 50.0 - 1.0).abs() < 0.03, "mean gap {mean}");
        assert!((over_mean - (-1f64).exp()).abs() < 0.02, "{over_mean} of the gaps exceed the mean (e^-1 expected)");
        assert_eq!(t, arrival_times(20_000, Some(50.0)), "seeded");
    }
}
