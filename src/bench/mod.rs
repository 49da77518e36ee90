//! `nemo bench`: end-to-end numbers for one GPU - weight load (or random fill) time, prefill
//! tokens/s at several prompt lengths, batch-1 decode ms/token at several contexts with the
//! achieved bandwidth against the device-to-device copy ceiling measured in the same run.

pub mod breakdown;
mod plot;
pub mod serving;

use std::time::Instant;

use serde::Serialize;

use crate::engine::{Backend, CudaBackend, EngineError};
use crate::gpu::timing::copy_bandwidth_gbs;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub prefill_lengths: Vec<usize>,
    pub decode_contexts: Vec<usize>,
    /// Decode steps timed per context.
    pub decode_steps: usize,
    /// Batch sizes at which one decode step per context is broken down by kernel.
    pub breakdown_batches: Vec<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prefill_lengths: vec![512, 2048, 8192, 32_768],
            decode_contexts: vec![1024, 32_768, 131_072],
            decode_steps: 32,
            breakdown_batches: vec![1, 64],
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PrefillRow {
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct DecodeRow {
    pub context: usize,
    pub ms_per_token: f64,
    pub tokens_per_s: f64,
    /// Weights plus the KV cache read per step, over the step time.
    pub achieved_gbs: f64,
    pub fraction_of_copy: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub gpu: String,
    /// The kernel choices (`CudaModel::settings`).
    pub settings: String,
    pub weights_gb: f64,
    pub load_seconds: f64,
    pub kv_cache_gb: f64,
    pub copy_gbs: f64,
    pub prefill: Vec<PrefillRow>,
    pub decode: Vec<DecodeRow>,
    /// Device time per kernel of the longest prefill's last chunk, then of one decode step
    /// (`breakdown_batches` x `decode_contexts`).
    pub breakdowns: Vec<breakdown::StepBreakdown>,
    pub skipped: Vec<String>,
}

/// Deterministic token ids spread over the vocabulary.
fn tokens(n: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + salt * 104_729 + 17) % vocab) as u32).collect()
}

pub fn run(backend: &mut CudaBackend, opts: &BenchOptions) -> Result<BenchReport, EngineError> {
    let config = backend.config().clone();
    let capacity = backend.model.capacity();
    let weights_bytes = backend.model.weights.bytes;
    let copy_gbs = copy_bandwidth_gbs(&backend.model.gpu, 1 << 30)?;
    let mut report = BenchReport {
        gpu: backend.model.gpu.info.name.clone(),
        settings: backend.model.settings(),
        weights_gb: weights_bytes as f64 / 1e9,
        load_seconds: backend.model.weights.load_seconds,
        kv_cache_gb: backend.model.kv.bytes() as f64 / 1e9,
        copy_gbs,
        prefill: Vec::new(),
        decode: Vec::new(),
        breakdowns: Vec::new(),
        skipped: Vec::new(),
    };

    // Warm-up: module JIT, first-touch allocations.
    backend.reset();
    backend.forward(&tokens(64, config.vocab_size, 0))?;
    backend.forward(&[1])?;

    for &n in &opts.prefill_lengths {
        if n > capacity {
            report.skipped.push(format!("prefill {n}: beyond the {capacity}-token KV cache"));
            continue;
        }
        backend.reset();
        let prompt = tokens(n, config.vocab_size, n);
        let start = Instant::now();
        backend.forward(&prompt)?;
        let seconds = start.elapsed().as_secs_f64();
        report.prefill.push(PrefillRow { tokens: n, seconds, tokens_per_s: n as f64 / seconds });
    }

    for &ctx in &opts.decode_contexts {
        if ctx > capacity {
            report.skipped.push(format!("decode at {ctx}: beyond the {capacity}-token KV cache"));
            continue;
        }
        backend.reset();
        // The KV content is whatever the cache holds: the work per step is what is timed.
        backend.assume_held_for_benchmark(ctx.saturating_sub(opts.decode_steps + 1));
        backend.forward(&[1])?; // warm
        let start = Instant::now();
        for step in 0..opts.decode_steps {
            backend.forward(&[(step % config.vocab_size) as u32])?;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / opts.decode_steps as f64;
        let kv_read = backend.model.kv.dtype.gpu_bytes_per_token(&config) * ctx;
        let gbs = (weights_bytes + kv_read) as f64 / (ms * 1e-3) / 1e9;
        report.decode.push(DecodeRow {
            context: ctx,
            ms_per_token: ms,
            tokens_per_s: 1e3 / ms,
            achieved_gbs: gbs,
            fraction_of_copy: gbs / copy_gbs,
        });
    }

    // The last chunk of the longest prefill that fits (the chunk attending to the most cached
    // keys), when breakdowns are asked for.
    let chunk = backend.model.max_chunk;
    if let Some(&n) = opts.prefill_lengths.iter().filter(|&&n| n <= capacity).max() {
        if !opts.breakdown_batches.is_empty() {
            report.breakdowns.push(breakdown::prefill_chunk(&mut backend.model, n, chunk.min(n))?);
        }
    }
    for &ctx in &opts.decode_contexts {
        for &batch in &opts.breakdown_batches {
            match breakdown::unfit(&backend.model, batch, ctx) {
                Some(why) => report.skipped.push(why),
                None => report.breakdowns.push(breakdown::decode_step(&mut backend.model, batch, ctx)?),
            }
        }
    }
    Ok(report)
}

impl BenchReport {
    /// A readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "GPU {} | weights {:.1} GB loaded in {:.2} s | KV cache {:.1} GB | copy ceiling {:.0} GB/s\n",
            self.gpu, self.weights_gb, self.load_seconds, self.kv_cache_gb, self.copy_gbs
        );
        s += &format!("kernels: {}\n", self.settings);
        s += "prefill   tokens     seconds   tokens/s\n";
        for r in &self.prefill {
            s += &format!("          {:>6} {:>11.3} {:>10.0}\n", r.tokens, r.seconds, r.tokens_per_s);
        }
        s += "decode    context   ms/token   tokens/s   GB/s   of copy\n";
        for r in &self.decode {
            s += &format!(
                "          {:>7} {:>10.2} {:>10.1} {:>6.0} {:>8.1}%\n",
                r.context,
                r.ms_per_token,
                r.tokens_per_s,
                r.achieved_gbs,
                100.0 * r.fraction_of_copy
            );
        }
        for b in &self.breakdowns {
            s += &match b.new_tokens {
                1 => format!("decode step by kernel: batch {}, context {} (one eager step, device time)\n", b.batch, b.context),
                n => format!("prefill chunk by kernel: {n} tokens ending at {} (one eager step, device time)\n", b.context),
            };
            s += &b.breakdown.table();
        }
        for skip in &self.skipped {
            s += &format!("skipped: {skip}\n");
        }
        s
    }
}
