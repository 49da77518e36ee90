//! Property tests over the fake backend (src/scheduler/fake_backend.rs), whose paged cache holds
//! `(token, position)` per slot and whose logits depend on the context read back through the
//! block table: a wrong, stale or shared block changes a request's tokens.
//!
//! For random pool sizes, block sizes, budgets, running limits, arrivals, lengths, shared prompt
//! starts (prefix caching on or off), sampling parameters, stop tokens and cancellations: every
//! accepted request finishes exactly once with
//! exactly its solo tokens (a prefix of them when cancelled), token indices run 0, 1, 2, ...,
//! refusals happen exactly when a request cannot fit the whole cache, the pool is full again at
//! the end, and no step exceeds the token budget or the running limit.

use std::collections::BTreeMap;

use nemo_engine::engine::CacheShape;
use nemo_engine::sampling::SamplingParams;
use nemo_engine::scheduler::fake_backend::{fake_solo_run, FakeBackend};
use nemo_engine::scheduler::{
    max_kv_positions, Admission, BlockPool, Engine, EngineOptions, Event, FinishReason, PoolError, Request, RequestError,
    RequestId,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const VOCAB: usize = 16;

#[derive(Debug, Clone)]
struct Arrival {
    at_step: usize,
    /// Index into the scenario's shared prompt starts, put before `prompt`.
    prefix: Option<usize>,
    /// The request's own tokens (possibly none after a shared start).
    prompt: Vec<u32>,
    max_tokens: usize,
    /// Steps after arrival at which the request is cancelled (it may have finished by then).
    cancel_after: Option<usize>,
    /// None: greedy; Some(seed): temperature 0.9 with top-p 0.9.
    sample_seed: Option<u64>,
    stop_token: Option<u32>,
}

#[derive(Debug, Clone)]
struct Scenario {
    shape: CacheShape,
    max_running: usize,
    prefix_caching: bool,
    admission: Admission,
    /// Prompt starts several requests share (a system prompt, a few-shot preamble).
    prefixes: Vec<Vec<u32>>,
    arrivals: Vec<Arrival>,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0usize..30,
        option::weighted(0.8, 0usize..3),
        vec(0..VOCAB as u32, 0..40),
        1usize..24,
        option::weighted(0.3, 0usize..30),
        option::of(any::<u64>()),
        option::weighted(0.3, 0..VOCAB as u32),
    )
        .prop_map(|(at_step, prefix, prompt, max_tokens, cancel_after, sample_seed, stop_token)| Arrival {
            at_step,
            prefix,
            prompt,
            max_tokens,
            cancel_after,
            sample_seed,
            stop_token,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let prefixes = vec(vec(0..VOCAB as u32, 4..40), 3);
    let admission = prop_oneof![Just(Admission::Optimistic), Just(Admission::Reserve)];
    (1usize..=8, 1usize..=48, 1usize..=40, 1usize..=6, proptest::bool::weighted(0.8), admission, prefixes, vec(arrival(), 1..16))
        .prop_map(|(block_size, num_blocks, max_step_tokens, max_running, prefix_caching, admission, prefixes, arrivals)| Scenario {
            shape: CacheShape { block_size, num_blocks, max_step_tokens },
            max_running,
            prefix_caching,
            admission,
            prefixes,
            arrivals,
        })
}

/// Bursts: every request arrives in the first three steps, with a short question after a shared
/// start, under budgets and pools that leave room beside the first: later ones are admitted in
/// the step that fills their start's blocks and read them there.
fn burst() -> impl Strategy<Value = Scenario> {
    (scenario(), 16usize..=96, 24usize..=64, 2usize..=8).prop_map(|(mut s, budget, blocks, running)| {
        (s.shape.max_step_tokens, s.shape.num_blocks, s.max_running, s.prefix_caching) = (budget, blocks, running, true);
        for a in &mut s.arrivals {
            a.at_step %= 3;
            a.prompt.truncate(4);
        }
        s
    })
}

/// Tiny bursts: blocks of 1 to 3 tokens, budgets of 1 to 6, starts of 2 to 7 tokens and at most
/// one own token, so steps of single tokens often fill a block that a request admitted in them
/// would share (which only a multi-token step may do: `check_batch`, and the fake backend hides
/// such writes as the CUDA backend's fused decode write would).
fn tiny() -> impl Strategy<Value = Scenario> {
    let prefixes = vec(vec(0..VOCAB as u32, 2..8), 3);
    (scenario(), 1usize..=3, 1usize..=6, 4usize..=40, 1usize..=6, prefixes).prop_map(|(mut s, bs, budget, blocks, running, prefixes)| {
        (s.shape.block_size, s.shape.max_step_tokens, s.shape.num_blocks) = (bs, budget, blocks);
        (s.max_running, s.prefix_caching, s.prefixes) = (running, true, prefixes);
        for a in &mut s.arrivals {
            a.at_step %= 4;
            a.prompt.truncate(1);
            a.max_tokens = a.max_tokens.min(8);
        }
        s
    })
}

fn to_request(s: &Scenario, a: &Arrival) -> Request {
    let start = a.prefix.map_or(&[][..], |p| &s.prefixes[p]);
    // A shared start alone repeats an earlier prompt exactly; without one, at least one token.
    let prompt = match [start, &a.prompt].concat() {
        p if p.is_empty() => vec![1],
        p => p,
    };
    let mut r = Request::new(prompt, a.max_tokens);
    if let Some(seed) = a.sample_seed {
        r.sampling = SamplingParams { temperature: 0.9, top_p: 0.9, seed, ..Default::default() };
    }
    r.stop_token_ids = a.stop_token.into_iter().collect();
    r
}

#[derive(Debug, Default)]
struct Outcome {
    tokens: Vec<u32>,
    finished: Option<(FinishReason, usize)>,
    cancelled: bool,
}

/// What a run saw, beyond each request's outcome.
#[derive(Debug, Default)]
struct RunStats {
    preemptions: u64,
    cached_tokens: u64,
    /// Steps after which some block was held by two or more running sequences.
    shared_steps: u64,
    /// Steps in which a sequence read a block another one filled in that step.
    fresh_shared_steps: u64,
}

/// Runs the scenario to the end, checking per-step properties; returns each accepted request
/// with its outcome, and what the run saw.
fn run(s: &Scenario) -> Result<(Vec<(Request, Outcome)>, RunStats), TestCaseError> {
    let fake = FakeBackend::new(VOCAB, 10_000, s.shape);
    let opts = EngineOptions {
        max_running: s.max_running,
        max_step_tokens: s.shape.max_step_tokens,
        prefix_caching: s.prefix_caching,
        admission: s.admission,
    };
    let mut engine = Engine::new(fake, opts).unwrap();
    let mut accepted: BTreeMap<RequestId, (Request, Option<usize>)> = BTreeMap::new();
    let mut out: BTreeMap<RequestId, Outcome> = BTreeMap::new();
    let last_arrival = s.arrivals.iter().map(|a| a.at_step).max().unwrap();
    let mut seen = RunStats::default();
    let mut step = 0;
    while step <= last_arrival || engine.has_work() {
        for a in s.arrivals.iter().filter(|a| a.at_step == step) {
            let request = to_request(s, a);
            let blocks = max_kv_positions(request.prompt.len(), a.max_tokens).div_ceil(s.shape.block_size);
            match engine.add_request(request.clone()) {
                Ok(id) => {
                    prop_assert!(blocks <= s.shape.num_blocks, "accepted a request needing {blocks} blocks");
                    accepted.insert(id, (request, a.cancel_after.map(|c| step + c)));
                    out.insert(id, Outcome::default());
                }
                Err(RequestError::TooLargeForCache { .. }) => prop_assert!(blocks > s.shape.num_blocks),
                Err(e) => return Err(TestCaseError::fail(format!("unexpected refusal: {e}"))),
            }
        }
        for (id, (_, cancel_at)) in &accepted {
            if *cancel_at == Some(step) {
                let live = out[id].finished.is_none();
                prop_assert_eq!(engine.cancel(*id), live, "cancel of {} (live: {})", id, live);
                out.get_mut(id).unwrap().cancelled = live;
            }
        }
        for event in engine.step() {
            let o = out.get_mut(&event.id()).expect("events name accepted requests");
            prop_assert!(o.finished.is_none(), "event after Finished: {:?}", event);
            match event {
                Event::Token { index, token, .. } => {
                    prop_assert_eq!(index, o.tokens.len());
                    o.tokens.push(token);
                }
                Event::Finished { reason, usage, .. } => {
                    prop_assert_eq!(usage.completion_tokens, o.tokens.len());
                    // Whole blocks only, never the last prompt token, none with caching off.
                    let cached = usage.cached_tokens;
                    prop_assert!(cached % s.shape.block_size == 0 && cached < usage.prompt_tokens, "cached {}", cached);
                    prop_assert!(s.prefix_caching || cached == 0);
                    seen.cached_tokens += cached as u64;
                    o.finished = Some((reason, usage.prompt_tokens));
                }
            }
        }
        engine.scheduler().check_invariants().map_err(TestCaseError::fail)?;
        let pool = engine.scheduler().pool();
        seen.shared_steps += (0..pool.num_blocks() as u32).any(|b| pool.refcount(b) > 1) as u64;
        prop_assert!(engine.scheduler().num_running() <= s.max_running);
        step += 1;
        prop_assert!(step < 100_000, "no progress after {} steps", step);
    }
    let stats = &engine.backend().stats;
    prop_assert!(stats.most_tokens_in_a_step <= s.shape.max_step_tokens, "{:?}", stats);
    prop_assert!(stats.most_entries_in_a_step <= s.max_running, "{:?}", stats);
    prop_assert_eq!(engine.scheduler().pool().num_free(), s.shape.num_blocks, "blocks leaked");
    seen.preemptions = engine.scheduler().preemptions();
    seen.fresh_shared_steps = stats.steps_reading_fresh_slots as u64;
    Ok((accepted.into_iter().map(|(id, (r, _))| (r, out.remove(&id).unwrap())).collect(), seen))
}

fn check_outcomes(results: &[(Request, Outcome)]) -> Result<(), TestCaseError> {
    for (request, o) in results {
        let (solo, solo_reason) = fake_solo_run(request, VOCAB);
        let Some((reason, prompt_tokens)) = &o.finished else {
            return Err(TestCaseError::fail(format!("never finished: {request:?}")));
        };
        prop_assert_eq!(*prompt_tokens, request.prompt.len());
        match reason {
            FinishReason::Cancelled => {
                prop_assert!(o.cancelled, "cancelled without a cancel call");
                prop_assert!(solo.starts_with(&o.tokens), "{:?} is not a prefix of {:?}", o.tokens, solo);
            }
            FinishReason::Error(msg) => return Err(TestCaseError::fail(format!("error: {msg}"))),
            other => {
                prop_assert!(!o.cancelled);
                prop_assert_eq!(other, &solo_reason);
                prop_assert_eq!(&o.tokens, &solo);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_request_finishes_once_with_its_solo_tokens_and_no_block_leaks(s in scenario()) {
        let (results, _) = run(&s)?;
        check_outcomes(&results)?;
    }

    #[test]
    fn bursts_sharing_prompt_starts_finish_with_their_solo_tokens(s in burst()) {
        let (results, _) = run(&s)?;
        check_outcomes(&results)?;
    }

    #[test]
    fn tiny_bursts_of_single_tokens_finish_with_their_solo_tokens(s in tiny()) {
        let (results, _) = run(&s)?;
        check_outcomes(&results)?;
    }

    #[test]
    fn block_pool_never_double_allocates_and_refuses_double_frees(ops in vec((any::<bool>(), 0usize..6, any::<u16>()), 1..80)) {
        let mut pool = BlockPool::new(16);
        let mut groups: Vec<Vec<u32>> = Vec::new();
        let mut freed: Vec<Vec<u32>> = Vec::new();
        for (alloc, n, pick) in ops {
            if alloc || groups.is_empty() {
                let mut g = Vec::new();
                let fits = n <= pool.num_free();
                prop_assert_eq!(pool.allocate_into(n, &mut g), fits);
                prop_assert_eq!(g.len(), if fits { n } else { 0 });
                groups.push(g);
            } else {
                let g = groups.swap_remove(pick as usize % groups.len());
                pool.free(&g).unwrap();
                freed.push(g);
            }
            // A group freed before is refused again unless all of its blocks were reallocated.
            if let Some(old) = freed.last().filter(|g| !g.is_empty()) {
                if old.iter().any(|&b| !pool.is_allocated(b)) {
                    let refused = matches!(pool.free(old), Err(PoolError::NotAllocated { .. }));
                    prop_assert!(refused, "a double free was not refused");
                }
            }
            let mut held: Vec<u32> = groups.iter().flatten().copied().collect();
            held.sort();
            let n_held = held.len();
            held.dedup();
            prop_assert_eq!(held.len(), n_held, "a block handed out twice");
            prop_assert_eq!(pool.num_used(), n_held);
        }
    }
}

/// The random scenarios must reach the interesting states, or the properties prove little.
#[test]
fn the_random_scenarios_do_preempt_cancel_stop_and_share() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut cancelled, mut stopped, mut refused, mut cached, mut shared) = (0, 0, 0, 0, 0);
    // Preemptions under each admission policy, and the scenarios that ran it.
    let (mut optimistic, mut reserve) = ((0, 0), (0, 0));
    for _ in 0..60 {
        let s = scenario().new_tree(&mut runner).unwrap().current();
        let (results, stats) = run(&s).unwrap();
        check_outcomes(&results).unwrap();
        let policy = if s.admission == Admission::Optimistic { &mut optimistic } else { &mut reserve };
        *policy = (policy.0 + 1, policy.1 + stats.preemptions);
        cached += stats.cached_tokens;
        shared += stats.shared_steps;
        refused += s.arrivals.len() - results.len();
        for (_, o) in &results {
            match o.finished.as_ref().unwrap().0 {
                FinishReason::Cancelled => cancelled += 1,
                FinishReason::Stop => stopped += 1,
                _ => {}
            }
        }
    }
    eprintln!(
        "60 scenarios: {} optimistic ({} preemptions), {} reserve ({} preemptions), {cancelled} cancelled, {stopped} stopped, \
         {refused} refused, {cached} prompt tokens from the prefix cache, {shared} steps with a block shared by running sequences",
        optimistic.0, optimistic.1, reserve.0, reserve.1
    );
    assert!(optimistic.0 >= 15 && reserve.0 >= 15, "both admission policies should be drawn");
    // Reserve keeps these small scenarios from preempting at all (its ratio starts at 0.7 of
    // max_tokens); the preemption path it shares is exercised by the optimistic ones.
    assert!(optimistic.1 > 10, "the optimistic scenarios should meet preemptions");
    assert!(cancelled > 10 && stopped > 10 && refused > 10);
    assert!(cached > 200 && shared > 50);
    // Bursts: requests admitted beside the one filling their shared start read it in that step.
    let (mut fresh, mut cached) = (0, 0);
    for _ in 0..60 {
        let s = burst().new_tree(&mut runner).unwrap().current();
        let (results, stats) = run(&s).unwrap();
        check_outcomes(&results).unwrap();
        (fresh, cached) = (fresh + stats.fresh_shared_steps, cached + stats.cached_tokens);
    }
    eprintln!("60 bursts: {cached} prompt tokens from the prefix cache, {fresh} steps reading a block filled in them");
    assert!(fresh > 10, "{fresh} steps");
}

/// `with_max_waiting`: the queue refuses the request past its bound (nothing else changes), takes
/// new ones again once steps move the waiting ones into the batch, and every accepted request
/// still finishes.
#[test]
fn a_bounded_queue_refuses_past_its_limit_and_recovers() {
    let shape = CacheShape { block_size: 4, num_blocks: 64, max_step_tokens: 64 };
    let opts = EngineOptions { max_running: 1, max_step_tokens: 64, prefix_caching: true, admission: Admission::Reserve };
    let mut engine = Engine::new(FakeBackend::new(VOCAB, 10_000, shape), opts).unwrap().with_max_waiting(2);
    let ids: Vec<RequestId> = (0..2).map(|i| engine.add_request(Request::new(vec![1 + i, 2, 3], 4)).unwrap()).collect();
    assert_eq!(engine.add_request(Request::new(vec![5, 6], 4)), Err(RequestError::QueueFull { waiting: 2, limit: 2 }));
    engine.step(); // the first joins the batch: one waits
    let third = engine.add_request(Request::new(vec![7, 8], 4)).unwrap();
    let mut finished = Vec::new();
    for _ in 0..100 {
        for e in engine.step() {
            if let Event::Finished { id, .. } = e {
                finished.push(id);
            }
        }
    }
    finished.sort();
    assert_eq!(finished, [ids[0], ids[1], third], "every accepted request finishes once");
}
