//! The scheduler's engine on the CUDA batch backend against the same engine on the CPU batch
//! backend: many concurrent requests of different lengths, prompts chunked by a small token
//! budget, sequences preempted by a small KV pool, half of them sharing a system prompt through
//! the prefix cache. bf16 on the GPU may flip a near-tie, so tokens are compared up to the first
//! step whose CPU top-2 logprob margin is below 0.05.

use std::collections::BTreeMap;

use nemo_engine::engine::{CpuBatchBackend, CpuBatchOptions, CudaBatchBackend, StepEntry};
use nemo_engine::engine::BatchBackend;
use nemo_engine::gpu::model::{CudaModel, GpuWeights};
use nemo_engine::gpu::Gpu;
use nemo_engine::model::load;
use nemo_engine::sampling::TokenLogprobs;
use nemo_engine::scheduler::{Admission, Engine, EngineOptions, Event, Request};

use crate::common::*;
use crate::fixtures::reference::fixture_dir;

type Run = BTreeMap<u64, Vec<(u32, TokenLogprobs)>>;

/// Each request's tokens; preemptions; prompt tokens taken from the prefix cache.
fn run_all<B: BatchBackend>(backend: B, requests: &[Request]) -> (Run, u64, usize) {
    let mut engine = Engine::new(backend, EngineOptions { max_running: 16, max_step_tokens: 96, prefix_caching: true, admission: Admission::Optimistic }).unwrap();
    let mut out = Run::new();
    let mut cached = 0;
    for r in requests {
        let id = engine.add_request(r.clone()).unwrap();
        out.insert(id.0, Vec::new());
    }
    while engine.has_work() {
        for event in engine.step() {
            match event {
                Event::Token { id, token, logprobs, .. } => out.get_mut(&id.0).unwrap().push((token, logprobs.unwrap())),
                Event::Finished { usage, .. } => cached += usage.cached_tokens,
            }
        }
    }
    (out, engine.scheduler().preemptions(), cached)
}

#[test]
fn gpu_engine_matches_the_cpu_engine() {
    let Some(_gpu) = gpu_or_skip("gpu_engine_matches_the_cpu_engine") else { return };
    let model = load(&fixture_dir().join("hf")).unwrap();
    let w = &model.weights;
    let mut rng = Rng::seeded(7);
    let vocab = w.config.vocab_size;
    let tokens = |rng: &mut Rng, n: usize| (0..n).map(|_| 3 + rng.below(vocab - 3) as u32).collect::<Vec<u32>>();
    let system = tokens(&mut rng, 64);
    let requests: Vec<Request> = (0..10)
        .map(|i| {
            let len = 1 + rng.below(250);
            let own = tokens(&mut rng, len);
            let prompt = if i % 2 == 0 { [&system[..], &own[..len.min(180)]].concat() } else { own };
            Request { logprobs: Some(2), ..Request::new(prompt, 8 + 3 * i) }
        })
        .collect();
    // 26 blocks of 16: too few for all at once, so sequences are preempted and recomputed.
    let cpu = CpuBatchBackend::new(w, CpuBatchOptions { block_size: 16, num_blocks: 26, max_step_tokens: 96 });
    let gpu = Gpu::new().unwrap();
    let weights = GpuWeights::upload(&gpu, w).unwrap();
    let cuda = CudaBatchBackend { model: CudaModel::new(gpu, weights, 26 * 16, 96, 16).unwrap() };
    let (want, cpu_preempted, cpu_cached) = run_all(cpu, &requests);
    let (got, gpu_preempted, gpu_cached) = run_all(cuda, &requests);
    assert!(gpu_preempted > 0, "the small KV pool should force preemption on the GPU too");
    assert!(gpu_cached >= 64, "the shared system prompt should come from the prefix cache on the GPU");
    let mut compared = 0;
    for (id, want) in &want {
        let got = &got[id];
        assert_eq!(got.len(), want.len(), "request {id}: token count");
        for (step, ((g, _), (w, lp))) in got.iter().zip(want).enumerate() {
            let margin = lp.top[0].1 - lp.top.get(1).map_or(f32::NEG_INFINITY, |t| t.1);
            if margin < 0.05 {
                break;
            }
            assert_eq!(g, w, "request {id} step {step} (CPU margin {margin})");
            compared += 1;
        }
    }
    eprintln!(
        "gpu engine: {compared} tokens compared equal; preemptions cpu {cpu_preempted}, gpu {gpu_preempted}; \
         prompt tokens cached cpu {cpu_cached}, gpu {gpu_cached}"
    );
    assert!(compared >= 20, "too few tokens above the margin to compare: {compared}");
}

/// Prefix caching shares a block in the step that fills it (docs/scheduler.md): on the GPU too,
/// an entry reads the K/V another entry writes in the same step, though it comes first in the
/// batch. The blocks first hold another prompt's K/V, so a read before the write is caught.
#[test]
fn gpu_entry_reads_the_blocks_another_fills_in_the_same_step() {
    let Some(gpu) = gpu_or_skip("gpu_entry_reads_the_blocks_another_fills_in_the_same_step") else { return };
    let model = load(&fixture_dir().join("hf")).unwrap();
    let w = &model.weights;
    let mut rng = Rng::seeded(11);
    let vocab = w.config.vocab_size;
    let mut tokens = |n: usize| (0..n).map(|_| 3 + rng.below(vocab - 3) as u32).collect::<Vec<u32>>();
    let (stale, a, own) = (tokens(32), tokens(40), tokens(5));
    let b = [&a[..32], &own[..]].concat();
    // a fills blocks 3 and 6 and writes 8 positions of block 1; b reads 3 and 6 and writes block 4.
    let (table_a, table_b) = ([3u32, 6, 1], [3u32, 6, 4]);
    let weights = GpuWeights::upload(&gpu, w).unwrap();
    let mut cuda = CudaBatchBackend { model: CudaModel::new(gpu, weights, 8 * 16, 64, 4).unwrap() };
    let mut cpu = CpuBatchBackend::new(w, CpuBatchOptions { block_size: 16, num_blocks: 8, max_step_tokens: 64 });
    let earlier = [StepEntry { tokens: &stale, ctx_len: 32, block_table: &table_a, want_logits: false }];
    cuda.step(&earlier).unwrap();
    let step = [
        StepEntry { tokens: &b[32..], ctx_len: 37, block_table: &table_b, want_logits: true },
        StepEntry { tokens: &a, ctx_len: 40, block_table: &table_a, want_logits: true },
    ];
    let (got, want) = (cuda.step(&step).unwrap(), cpu.step(&step).unwrap());
    for (entry, (g, w)) in got.iter().zip(&want).enumerate() {
        let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
        let mean = g.iter().zip(w).map(|(g, w)| (g - w).abs() as f64).sum::<f64>() / w.len() as f64;
        assert!(mean.is_finite() && mean <= 0.03, "entry {entry}: mean abs logit error {mean} against the CPU");
    }
}

/// Logit bias and penalties on the CUDA backend (`apply_logit_edits_f32` before the device
/// sampler) against the CPU backend's host path: a +100 bias forces its token, a -100 bias
/// bans the CPU's choice, a repetition penalty over the prompt picks as the CPU does where its
/// edited margin allows, and logprobs stay those of the raw logits (the device keeps the raw
/// values of the logits it edits).
#[test]
fn gpu_logit_bias_and_penalties_match_the_cpu_backend() {
    use nemo_engine::engine::SampleSpec;
    use nemo_engine::sampling::{apply_edits, Penalties, PenaltyState, SamplingParams};
    let Some(gpu) = gpu_or_skip("gpu_logit_bias_and_penalties_match_the_cpu_backend") else { return };
    let model = load(&fixture_dir().join("hf")).unwrap();
    let w = &model.weights;
    let mut rng = Rng::seeded(5);
    let vocab = w.config.vocab_size;
    let four = FourPrompts::new(&mut rng, vocab, 20, 9);
    let (prompts, step) = (&four.prompts, four.step());
    let mut cpu = CpuBatchBackend::new(w, CpuBatchOptions { block_size: 16, num_blocks: 12, max_step_tokens: 256 });
    let raw = cpu.step(&step).unwrap();
    let cpu_choice = nemo_engine::sampling::argmax(raw[1].as_ref().unwrap()).unwrap();
    let penalties = [
        Penalties { logit_bias: vec![(17, 100.0)], ..Penalties::default() },
        Penalties { logit_bias: vec![(cpu_choice, -100.0)], ..Penalties::default() },
        Penalties { repetition: 1.6, presence: 0.5, ..Penalties::default() },
        Penalties::default(),
    ];
    let states: Vec<Option<PenaltyState>> = penalties.iter().zip(prompts).map(|(p, prompt)| PenaltyState::new(p, prompt)).collect();
    let specs: Vec<SampleSpec> = states
        .iter()
        .map(|s| SampleSpec { params: SamplingParams::greedy(), mask: None, edits: s.as_ref().map_or(&[], |s| s.edits()), step: 0, logprobs: Some(3) })
        .collect();
    let want = cpu.step_sampled(&step, &specs).unwrap();
    let weights = GpuWeights::upload(&gpu, w).unwrap();
    let mut cuda = CudaBatchBackend { model: CudaModel::new(gpu, weights, 16 * 16, 256, 4).unwrap() };
    let got = cuda.step_sampled(&step, &specs).unwrap();
    for (i, ((g, w), spec)) in got.iter().zip(&want).zip(&specs).enumerate() {
        let (g, w) = (g.clone().unwrap().unwrap(), w.clone().unwrap().unwrap());
        let mut edited = raw[i].clone().unwrap();
        apply_edits(&mut edited, spec.edits).unwrap();
        let mut sorted = edited.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 0.05 {
            assert_eq!(g.token, w.token, "entry {i}: the GPU drew another token than the CPU");
        }
        let (gl, wl) = (g.logprobs.unwrap(), w.logprobs.unwrap());
        let diff = (gl.logprob - wl.logprob).abs();
        assert!(diff < 0.05, "entry {i}: chosen token logprob {} on the GPU, {} on the CPU (raw logits expected)", gl.logprob, wl.logprob);
    }
    let token = |d: &Option<nemo_engine::engine::Draw>| d.clone().unwrap().unwrap().token;
    assert_eq!(token(&got[0]), 17, "a +100 bias forces its token");
    assert_ne!(token(&got[1]), cpu_choice, "a -100 bias bans its token");
}
