//! Grammar masks (src/structured) on the CUDA backend against the CPU backend: the masked rows'
//! draws and logprobs, a mask combined with a logit bias on a masked token, and the engine
//! running regex- and choice-constrained requests to outputs the constraints accept.

use std::sync::Arc;

use nemo_engine::engine::{BatchBackend, CpuBatchBackend, CpuBatchOptions, CudaBatchBackend, SampleSpec};
use nemo_engine::gpu::model::{CudaModel, GpuWeights};
use nemo_engine::model::load;
use nemo_engine::sampling::{apply_token_mask, is_allowed, mask_words, LogitEdit, SamplingParams};
use nemo_engine::scheduler::{Admission, Engine, EngineOptions, Event, FinishReason, Request};
use nemo_engine::structured::{Constraint, Grammars};
use nemo_engine::tokenizer::{SpecialTokenPolicy, Tekken, Tokenizer};

use crate::common::*;
use crate::fixtures::reference::fixture_dir;
use crate::fixtures::tiny_tekken::tiny_tekken_json;

fn mask_of(vocab: usize, allowed: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut m = vec![0u32; mask_words(vocab)];
    for t in (0..vocab).filter(|&t| allowed(t)) {
        m[t / 32] |= 1 << (t % 32);
    }
    m
}

#[test]
fn gpu_token_masks_in_a_step_match_the_cpu_backend() {
    let Some(gpu) = gpu_or_skip("gpu_token_masks_in_a_step_match_the_cpu_backend") else { return };
    let model = load(&fixture_dir().join("hf")).unwrap();
    let w = &model.weights;
    let vocab = w.config.vocab_size;
    let mut rng = Rng::seeded(9);
    let four = FourPrompts::new(&mut rng, vocab, 15, 11);
    let step = four.step();
    let mut cpu = CpuBatchBackend::new(w, CpuBatchOptions { block_size: 16, num_blocks: 12, max_step_tokens: 256 });
    let raw = cpu.step(&step).unwrap();
    let third: Vec<bool> = (0..vocab).map(|_| rng.below(3) == 0).collect();
    let banned = (0..vocab).find(|&t| !third[t]).unwrap() as u32;
    let masks = [mask_of(vocab, |t| t == 17), mask_of(vocab, |t| third[t]), mask_of(vocab, |t| third[t]), mask_of(vocab, |_| true)];
    // A +100 bias on a masked token must not bring it back (-inf + 100 = -inf).
    let bias = [LogitEdit { token: banned, bias: 100.0, scale: 1.0, sub: 0.0 }];
    let specs: Vec<SampleSpec> = masks
        .iter()
        .enumerate()
        .map(|(i, m)| SampleSpec {
            params: if i == 1 { SamplingParams { temperature: 1.0, seed: 3, ..SamplingParams::greedy() } } else { SamplingParams::greedy() },
            mask: Some(m),
            edits: if i == 2 { &bias } else { &[] },
            step: 0,
            logprobs: Some(3),
        })
        .collect();
    let want = cpu.step_sampled(&step, &specs).unwrap();
    let weights = GpuWeights::upload(&gpu, w).unwrap();
    let mut cuda = CudaBatchBackend { model: CudaModel::new(gpu, weights, 16 * 16, 256, 4).unwrap() };
    let got = cuda.step_sampled(&step, &specs).unwrap();
    for (i, (g, wnt)) in got.iter().zip(&want).enumerate() {
        let (g, wnt) = (g.clone().unwrap().unwrap(), wnt.clone().unwrap().unwrap());
        assert!(is_allowed(&masks[i], g.token), "entry {i}: the GPU drew {}, which its mask forbids", g.token);
        let mut masked = raw[i].clone().unwrap();
        apply_token_mask(&mut masked, &masks[i]).unwrap();
        let mut sorted = masked.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        // A one-token mask leaves -inf second: an infinite margin (NaN when all are -inf).
        let margin = sorted[0] - sorted[1];
        if i != 1 && (margin.is_nan() || margin > 0.05) {
            assert_eq!(g.token, wnt.token, "entry {i}: the GPU drew another token than the CPU");
        }
        let (gl, wl) = (g.logprobs.unwrap(), wnt.logprobs.unwrap());
        assert!((gl.logprob - wl.logprob).abs() < 0.05, "entry {i}: logprob {} on the GPU, {} on the CPU (masked row)", gl.logprob, wl.logprob);
        assert!(gl.top.iter().all(|&(t, _)| is_allowed(&masks[i], t)), "entry {i}: a masked token among the top logprobs");
    }
    let token = |d: &Option<nemo_engine::engine::Draw>| d.clone().unwrap().unwrap().token;
    assert_eq!(token(&got[0]), 17, "a one-token mask forces its token");
    assert_ne!(token(&got[2]), banned, "a bias cannot lift a masked token");
}

#[test]
fn gpu_engine_runs_constrained_requests_to_outputs_the_grammar_accepts() {
    let Some(gpu) = gpu_or_skip("gpu_engine_runs_constrained_requests_to_outputs_the_grammar_accepts") else { return };
    let model = load(&fixture_dir().join("hf")).unwrap();
    let weights = GpuWeights::upload(&gpu, &model.weights).unwrap();
    run_constrained(CudaBatchBackend { model: CudaModel::new(gpu, weights, 64 * 16, 256, 16).unwrap() });
}

/// The same run on the CPU backend, so the test's own logic is checked on every machine.
#[test]
fn cpu_engine_runs_constrained_requests_to_outputs_the_grammar_accepts() {
    let model = load(&fixture_dir().join("hf")).unwrap();
    run_constrained(CpuBatchBackend::new(&model.weights, CpuBatchOptions { block_size: 16, num_blocks: 64, max_step_tokens: 256 }));
}

/// 12 requests, half under a regex and half under a choice list, greedy and sampled: each ends
/// with `Stop` within 30 tokens and its text is what the constraint accepts.
fn run_constrained<B: BatchBackend>(backend: B) {
    let vocab = backend.config().vocab_size;
    let tokenizer = Arc::new(Tokenizer::Tekken(Box::new(Tekken::from_slice(tiny_tekken_json().as_bytes()).unwrap())));
    let grammars = Grammars::new(tokenizer.clone(), vocab, &[]).unwrap();
    let regex = r"[a-z]{2,6}-[0-9]{2}";
    let choices = ["north", "south west", "east"].map(String::from).to_vec();
    let mut engine = Engine::new(backend, EngineOptions { max_running: 16, max_step_tokens: 96, prefix_caching: true, admission: Admission::Optimistic }).unwrap();
    let mut runs = std::collections::BTreeMap::new();
    for i in 0..12u32 {
        let c = if i % 2 == 0 { Constraint::Regex(regex.into()) } else { Constraint::Choice(choices.clone()) };
        let sampling = SamplingParams { temperature: if i % 3 == 0 { 0.0 } else { 1.0 }, seed: i as u64, ..SamplingParams::greedy() };
        let prompt: Vec<u32> = (0..5 + 7 * i).map(|j| 20 + (j * 37 + i) % 1000).collect();
        let r = Request { sampling, stop_token_ids: vec![2], grammar: Some(grammars.compile(&c).unwrap()), ..Request::new(prompt, 30) };
        runs.insert(engine.add_request(r).unwrap().0, (c, Vec::new(), None));
    }
    let full = fancy_regex::Regex::new(&format!("^(?:{regex})$")).unwrap();
    while engine.has_work() {
        for event in engine.step() {
            match event {
                Event::Token { id, token, .. } => runs.get_mut(&id.0).unwrap().1.push(token),
                Event::Finished { id, reason, .. } => runs.get_mut(&id.0).unwrap().2 = Some(reason),
            }
        }
    }
    for (id, (c, tokens, reason)) in runs {
        assert_eq!(reason, Some(FinishReason::Stop), "request {id}: the grammar ends within 30 tokens");
        let text = tokenizer.decode(&tokens, SpecialTokenPolicy::Ignore).unwrap();
        match c {
            Constraint::Regex(_) => assert!(full.is_match(&text).unwrap(), "request {id}: {text:?}"),
            _ => assert!(choices.contains(&text), "request {id}: {text:?}"),
        }
    }
}
