//! The CPU batch backend and the engine on the tiny fixture model (tests/fixtures/tiny-s0/hf)
//! against solo runs of the CPU reference (`cpu::forward_last` on a fresh `KvCache`): logits bit
//! for bit, and many concurrent requests of different lengths, with prompts chunked by a small
//! token budget and sequences preempted by a small KV pool, generate exactly the solo tokens
//! and logprobs, greedy or seeded sampling, and with prefix caching when requests share a system
//! prompt (the shared blocks' K/V equal what each request would compute, bit for bit), and with
//! logit bias and repetition, frequency and presence penalties (against their dense formula),
//! and with grammars (tests/scheduler/structured.rs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use nemo_engine::cpu::{forward_last, KvCache};
use nemo_engine::engine::{BatchBackend, BatchError, CpuBatchBackend, CpuBatchOptions, EngineError, StepEntry};
use nemo_engine::model::{load, LoadedModel, ModelWeights};
use nemo_engine::sampling::rng::splitmix64;
use nemo_engine::sampling::{apply_token_mask, sample_at, token_logprobs, Penalties, SamplingParams, TokenLogprobs};
use nemo_engine::scheduler::{Admission, Engine, EngineOptions, Event, FinishReason, Request, RequestId};

const EOS: u32 = 2;

pub fn tiny() -> &'static ModelWeights {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0/hf");
    &MODEL.get_or_init(|| load(&dir).unwrap()).weights
}

fn prompt(len: usize, salt: u64, vocab: usize) -> Vec<u32> {
    // Random ids above the special tokens (0..3), so that no prompt holds an EOS.
    (0..len as u64).map(|i| 3 + (splitmix64(salt, i) % (vocab as u64 - 3)) as u32).collect()
}

#[test]
fn batched_logits_equal_the_solo_forward_bit_for_bit() {
    let w = tiny();
    let vocab = w.config.vocab_size;
    let opts = CpuBatchOptions { block_size: 16, num_blocks: 12, max_step_tokens: 256 };
    let mut backend = CpuBatchBackend::new(w, opts);
    let (a, b) = (prompt(37, 1, vocab), prompt(20, 2, vocab));
    // Scattered, out-of-order blocks; a is prefilled in two chunks, b then decodes one token.
    let (table_a, table_b) = ([9u32, 3, 5], [0u32, 11]);
    let step1 = [
        StepEntry { tokens: &a[..30], ctx_len: 30, block_table: &table_a, want_logits: false },
        StepEntry { tokens: &b, ctx_len: 20, block_table: &table_b, want_logits: true },
    ];
    let out1 = backend.step(&step1).unwrap();
    assert!(out1[0].is_none());
    let solo = |tokens: &[u32]| forward_last(w, tokens, &mut KvCache::new(&w.config)).unwrap();
    assert_eq!(out1[1].as_deref(), Some(&solo(&b)[..]));
    let next_b = [17u32];
    let step2 = [
        StepEntry { tokens: &next_b, ctx_len: 21, block_table: &table_b, want_logits: true },
        StepEntry { tokens: &a[30..], ctx_len: 37, block_table: &table_a, want_logits: true },
    ];
    let out2 = backend.step(&step2).unwrap();
    assert_eq!(out2[1].as_deref(), Some(&solo(&a)[..]));
    let b_then = [&b[..], &next_b].concat();
    assert_eq!(out2[0].as_deref(), Some(&solo(&b_then)[..]));
    // A malformed step is refused before anything runs.
    let clash = [
        StepEntry { tokens: &next_b, ctx_len: 22, block_table: &table_b, want_logits: true },
        StepEntry { tokens: &next_b, ctx_len: 1, block_table: &[11], want_logits: true },
    ];
    assert!(matches!(
        backend.step(&clash),
        Err(EngineError::Batch(BatchError::SharedWrittenBlock { block: 11, writer: 0, other: 1 }))
    ));
}

/// Prefix caching shares a block in the step that fills it: an entry reads the K/V another entry
/// writes in the same step, whichever comes first in the batch (the backend writes every
/// entry's K/V of a layer before attention reads), and both equal their solo runs bit for bit.
#[test]
fn an_entry_reads_the_blocks_another_fills_in_the_same_step() {
    let w = tiny();
    let vocab = w.config.vocab_size;
    let mut backend = CpuBatchBackend::new(w, CpuBatchOptions { block_size: 16, num_blocks: 8, max_step_tokens: 64 });
    // a fills blocks 3 and 6 (positions 0..32) and writes 8 more into block 1; b starts with the
    // same 32 tokens, reads them from a's blocks and writes its own 5 into block 4.
    let a = prompt(40, 1, vocab);
    let b = [&a[..32], &prompt(5, 2, vocab)[..]].concat();
    let (table_a, table_b) = ([3u32, 6, 1], [3u32, 6, 4]);
    for reader_first in [true, false] {
        let reader = StepEntry { tokens: &b[32..], ctx_len: 37, block_table: &table_b, want_logits: true };
        let writer = StepEntry { tokens: &a, ctx_len: 40, block_table: &table_a, want_logits: true };
        let (step, (ib, ia)) = match reader_first {
            true => ([reader, writer], (0, 1)),
            false => ([writer, reader], (1, 0)),
        };
        let out = backend.step(&step).unwrap();
        let solo = |tokens: &[u32]| forward_last(w, tokens, &mut KvCache::new(&w.config)).unwrap();
        assert_eq!(out[ib].as_deref(), Some(&solo(&b)[..]), "reader first: {reader_first}");
        assert_eq!(out[ia].as_deref(), Some(&solo(&a)[..]), "reader first: {reader_first}");
    }
}

/// vLLM's dense penalties over a whole row (logit bias, then repetition over the prompt and the
/// generated tokens, then frequency and presence over the generated ones): the reference the
/// engine's sparse, incremental edits must equal.
fn penalised(logits: &[f32], p: &Penalties, prompt: &[u32], generated: &[u32]) -> Vec<f32> {
    let mut out = logits.to_vec();
    for &(t, b) in &p.logit_bias {
        out[t as usize] += b;
    }
    for (t, l) in out.iter_mut().enumerate() {
        let count = generated.iter().filter(|&&g| g as usize == t).count() as f32;
        if count > 0.0 || prompt.contains(&(t as u32)) {
            *l = if *l > 0.0 { *l / p.repetition } else { *l * p.repetition };
        }
        *l -= p.frequency * count + p.presence * if count > 0.0 { 1.0 } else { 0.0 };
    }
    out
}

/// One request run alone: `forward_last` over the prompt, then one token at a time; a grammar
/// masks the logits first (logprobs included) and ends the run once complete.
pub fn solo_run(w: &ModelWeights, r: &Request) -> (Vec<u32>, Vec<TokenLogprobs>, FinishReason) {
    let mut cache = KvCache::new(&w.config);
    let mut logits = forward_last(w, &r.prompt, &mut cache).unwrap();
    let (mut tokens, mut logprobs) = (Vec::new(), Vec::new());
    let (mut grammar, mut mask) = (r.grammar.clone(), Vec::new());
    loop {
        if let Some(g) = &mut grammar {
            g.fill_mask(&mut mask).unwrap();
            apply_token_mask(&mut logits, &mask).unwrap();
        }
        let edited = penalised(&logits, &r.penalties, &r.prompt, &tokens);
        let token = sample_at(&r.sampling, &edited, tokens.len() as u64).unwrap();
        logprobs.push(token_logprobs(&logits, token, r.logprobs.unwrap_or(0)).unwrap());
        tokens.push(token);
        if let Some(g) = &mut grammar {
            g.consume(token).unwrap();
        }
        // A stop token, a complete grammar, then the length.
        if r.stop_token_ids.contains(&token) || grammar.as_ref().is_some_and(|g| g.is_finished()) {
            return (tokens, logprobs, FinishReason::Stop);
        }
        if tokens.len() == r.max_tokens {
            return (tokens, logprobs, FinishReason::Length);
        }
        logits = forward_last(w, &[token], &mut cache).unwrap();
    }
}

/// 12 requests, prompts of 1..300 tokens, max_tokens 5..40; half arrive at the start, the rest
/// while the first are running. Block size 16, a 64-token step budget (prompts are chunked) and
/// 26 blocks (416 tokens) for requests that need up to 339 positions each (preemption).
pub fn requests(sampling: impl Fn(usize) -> SamplingParams) -> Vec<Request> {
    let lens = [(1, 40), (300, 5), (17, 33), (150, 21), (64, 12), (2, 40), (233, 17), (40, 29), (99, 8), (5, 37), (180, 26), (31, 19)];
    let vocab = tiny().config.vocab_size;
    lens.iter()
        .enumerate()
        .map(|(i, &(len, max_tokens))| Request {
            prompt: prompt(len, 100 + i as u64, vocab),
            sampling: sampling(i),
            penalties: Penalties::default(),
            max_tokens,
            min_tokens: 0,
            stop_token_ids: vec![EOS],
            logprobs: Some(3),
            grammar: None,
        })
        .collect()
}

/// Runs `requests` through the engine and checks each against its solo run; returns the prompt
/// tokens the prefix cache supplied.
pub fn batched_run_matches_solo(requests: Vec<Request>, admission: Admission) -> usize {
    let w = tiny();
    let start = Instant::now();
    let backend = CpuBatchBackend::new(w, CpuBatchOptions { block_size: 16, num_blocks: 26, max_step_tokens: 64 });
    let opts = EngineOptions { max_running: 8, max_step_tokens: 64, prefix_caching: true, admission };
    let mut engine = Engine::new(backend, opts).unwrap();
    let mut ids: Vec<RequestId> = Vec::new();
    let mut tokens: BTreeMap<RequestId, Vec<(u32, TokenLogprobs)>> = BTreeMap::new();
    let mut finished: BTreeMap<RequestId, FinishReason> = BTreeMap::new();
    let mut cached = 0;
    let (first, later) = requests.split_at(6);
    for r in first {
        ids.push(engine.add_request(r.clone()).unwrap());
    }
    let mut step = 0;
    while engine.has_work() || ids.len() < requests.len() {
        if step == 5 {
            ids.extend(later.iter().map(|r| engine.add_request(r.clone()).unwrap()));
        }
        for event in engine.step() {
            match event {
                Event::Token { id, index, token, logprobs } => {
                    let seen = tokens.entry(id).or_default();
                    assert_eq!(index, seen.len());
                    seen.push((token, logprobs.unwrap()));
                }
                Event::Finished { id, reason, usage } => {
                    cached += usage.cached_tokens;
                    assert!(finished.insert(id, reason).is_none());
                }
            }
        }
        engine.scheduler().check_invariants().unwrap();
        step += 1;
    }
    let batched = start.elapsed();
    let preemptions = engine.scheduler().preemptions();
    if admission == Admission::Optimistic {
        assert!(preemptions > 0, "the 26-block pool was meant to force preemptions");
    }
    assert_eq!(engine.scheduler().pool().num_free(), 26);
    let start = Instant::now();
    for (id, r) in ids.iter().zip(&requests) {
        let (want_tokens, want_logprobs, want_reason) = solo_run(w, r);
        let got = &tokens[id];
        let got_tokens: Vec<u32> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(got_tokens, want_tokens, "request {id} (prompt {})", r.prompt.len());
        for (i, ((_, lp), want)) in got.iter().zip(&want_logprobs).enumerate() {
            assert_eq!(lp, want, "request {id}, token {i}: logprobs differ");
        }
        assert_eq!(finished[id], want_reason, "request {id}");
    }
    let generated: usize = tokens.values().map(|t| t.len()).sum();
    eprintln!(
        "{} requests, {generated} tokens in {} steps ({:.2?}), {preemptions} preemptions, {cached} prompt tokens cached; solo runs {:.2?}",
        requests.len(),
        engine.steps(),
        batched,
        start.elapsed()
    );
    cached
}

#[test]
fn greedy_batched_outputs_equal_solo_runs_with_chunked_prefill_and_preemption() {
    batched_run_matches_solo(requests(|_| SamplingParams::greedy()), Admission::Optimistic);
}

/// The same requests with `Admission::Reserve` (the serving default): fewer join at once.
#[test]
fn greedy_batched_outputs_equal_solo_runs_with_reserved_admission() {
    batched_run_matches_solo(requests(|_| SamplingParams::greedy()), Admission::Reserve);
}

/// Every request starts with the same 80-token system prompt (5 blocks): those admitted after
/// its blocks are computed share them, and still produce their solo tokens and logprobs.
#[test]
fn requests_sharing_a_system_prompt_reuse_its_blocks_and_equal_solo_runs() {
    let system = prompt(80, 99, tiny().config.vocab_size);
    let mut shared = requests(|_| SamplingParams::greedy());
    for r in &mut shared {
        r.prompt = [&system[..], &r.prompt[..r.prompt.len().min(220)]].concat();
    }
    let cached = batched_run_matches_solo(shared, Admission::Optimistic);
    // Requests 1..11 could each take all 80 tokens; preemption and admission in the same step
    // as the first cost some. Six full hits is the least a working cache gives here.
    assert!(cached >= 6 * 80, "only {cached} prompt tokens came from the cache");
}

#[test]
fn seeded_sampling_in_the_batch_equals_the_solo_sampled_run() {
    batched_run_matches_solo(requests(|i| SamplingParams {
        temperature: 0.9,
        top_k: 50,
        top_p: 0.95,
        min_p: 0.0,
        seed: 7 + i as u64,
    }), Admission::Optimistic);
}

/// Penalties and logit bias through chunked prefill and preemption (a preempted sequence keeps
/// its generated tokens' counts): tokens equal the solo runs with vLLM's dense formula, and
/// logprobs stay those of the raw logits.
#[test]
fn penalties_and_logit_bias_in_the_batch_equal_the_solo_runs() {
    let vocab = tiny().config.vocab_size as u32;
    let plain = requests(|i| SamplingParams { temperature: if i % 3 == 0 { 0.0 } else { 0.8 }, seed: 11 + i as u64, ..SamplingParams::default() });
    let mut penalised_requests = plain.clone();
    for (i, r) in penalised_requests.iter_mut().enumerate() {
        r.penalties = match i % 4 {
            0 => Penalties { repetition: 1.8, ..Penalties::default() },
            1 => Penalties { frequency: 1.5, presence: 0.5, ..Penalties::default() },
            // Forces one token everywhere but where presence then pushes it down.
            2 => Penalties { presence: 2.0, logit_bias: vec![(5, 8.0), (vocab - 1, -100.0)], ..Penalties::default() },
            _ => Penalties { repetition: 0.7, frequency: -0.5, presence: 0.3, logit_bias: vec![(3, 2.0)] },
        };
        r.stop_token_ids.clear();
    }
    batched_run_matches_solo(penalised_requests.clone(), Admission::Optimistic);
    // Not vacuous: the penalties change what the model generates.
    let w = tiny();
    let changed = penalised_requests
        .iter()
        .filter(|r| solo_run(w, r).0 != solo_run(w, &Request { penalties: Penalties::default(), ..(*r).clone() }).0)
        .count();
    assert!(changed >= 8, "penalties changed only {changed} of 12 runs");
}
