//! Engine tests over the fake backend: outputs equal solo runs, every request ends exactly once,
//! cancellations, errors and refusals behave, and the pool refills.

use std::collections::BTreeMap;

use super::*;
use crate::engine::CacheShape;
use crate::sampling::{token_logprobs, SamplingParams};
use crate::scheduler::fake_backend::{fake_logits, fake_solo_run, FakeBackend};
use crate::scheduler::Usage;

const VOCAB: usize = 16;

fn engine(block_size: usize, num_blocks: usize, max_step_tokens: usize, max_running: usize) -> Engine<FakeBackend> {
    let fake = FakeBackend::new(VOCAB, 1000, CacheShape { block_size, num_blocks, max_step_tokens });
    Engine::new(fake, EngineOptions { max_running, max_step_tokens, prefix_caching: true, admission: Admission::Optimistic }).unwrap()
}

/// Each request's tokens and its one finish, checking the stream's shape on the way.
#[derive(Debug, Default)]
struct Outcome {
    tokens: Vec<u32>,
    finished: Option<(FinishReason, Usage)>,
}

fn drain(engine: &mut Engine<FakeBackend>, out: &mut BTreeMap<RequestId, Outcome>) {
    let mut steps = 0;
    while engine.has_work() {
        collect(engine.step(), out);
        engine.scheduler().check_invariants().unwrap();
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
}

fn collect(events: Vec<Event>, out: &mut BTreeMap<RequestId, Outcome>) {
    for e in events {
        let o = out.entry(e.id()).or_default();
        assert!(o.finished.is_none(), "event after Finished: {e:?}");
        match e {
            Event::Token { index, token, .. } => {
                assert_eq!(index, o.tokens.len());
                o.tokens.push(token);
            }
            Event::Finished { reason, usage, .. } => o.finished = Some((reason, usage)),
        }
    }
}

fn request(prompt_len: usize, max_tokens: usize, salt: u32) -> Request {
    Request::new((0..prompt_len as u32).map(|i| (i * 7 + salt) % VOCAB as u32).collect(), max_tokens)
}

#[test]
fn concurrent_requests_match_their_solo_runs_under_preemption() {
    let mut e = engine(2, 12, 5, 4);
    let requests: Vec<Request> = (0..6).map(|i| request(3 + 2 * i, 6 + i, i as u32)).collect();
    let ids: Vec<RequestId> = requests.iter().map(|r| e.add_request(r.clone()).unwrap()).collect();
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    assert!(e.scheduler().preemptions() > 0, "the pool was meant to be too small for all at once");
    for (id, r) in ids.iter().zip(&requests) {
        let (tokens, reason) = fake_solo_run(r, VOCAB);
        let o = &out[id];
        assert_eq!(o.tokens, tokens, "request {id}");
        let (got_reason, usage) = o.finished.clone().unwrap();
        assert_eq!(got_reason, reason);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (r.prompt.len(), tokens.len()));
    }
    let preempted: u32 = out.values().map(|o| o.finished.as_ref().unwrap().1.preemptions).sum();
    assert_eq!(preempted as u64, e.scheduler().preemptions());
    assert_eq!(e.scheduler().pool().num_free(), 12);
    assert!(e.backend().stats.most_tokens_in_a_step <= 5);
}

#[test]
fn stop_tokens_end_the_run_and_are_emitted() {
    let mut e = engine(4, 16, 32, 4);
    let mut r = request(5, 50, 3);
    let (free_run, _) = fake_solo_run(&r, VOCAB);
    r.stop_token_ids = vec![free_run[3]];
    let first = free_run.iter().position(|&t| t == free_run[3]).unwrap();
    let id = e.add_request(r).unwrap();
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    assert_eq!(out[&id].tokens, free_run[..=first]);
    assert_eq!(out[&id].finished.as_ref().unwrap().0, FinishReason::Stop);
}

#[test]
fn sampled_requests_with_logprobs_match_solo_runs() {
    let mut e = engine(3, 30, 7, 3);
    let mut requests = Vec::new();
    for i in 0..4 {
        let mut r = request(4 + i, 9, i as u32);
        r.sampling = SamplingParams { temperature: 0.8, top_p: 0.9, seed: 100 + i as u64, ..Default::default() };
        r.logprobs = Some(2);
        requests.push(r);
    }
    let ids: Vec<_> = requests.iter().map(|r| e.add_request(r.clone()).unwrap()).collect();
    let mut logprobs = BTreeMap::new();
    while e.has_work() {
        for ev in e.step() {
            if let Event::Token { id, logprobs: Some(lp), token, .. } = ev {
                assert_eq!((lp.token, lp.top.len()), (token, 2));
                logprobs.entry(id).or_insert_with(Vec::new).push(lp);
            }
        }
    }
    for (id, r) in ids.iter().zip(&requests) {
        let (tokens, _) = fake_solo_run(r, VOCAB);
        let mut context = r.prompt.clone();
        for (lp, &t) in logprobs[id].iter().zip(&tokens) {
            let want = token_logprobs(&fake_logits(&context, VOCAB), t, 2).unwrap();
            assert_eq!(lp, &want);
            context.push(t);
        }
        assert_eq!(logprobs[id].len(), tokens.len());
    }
}

#[test]
fn cancelling_waiting_and_running_requests_ends_each_once_and_frees_blocks() {
    let mut e = engine(2, 16, 4, 1);
    let running = e.add_request(request(3, 20, 0)).unwrap();
    let waiting = e.add_request(request(3, 20, 1)).unwrap();
    let mut out = BTreeMap::new();
    collect(e.step(), &mut out);
    collect(e.step(), &mut out);
    assert_eq!((e.scheduler().num_running(), e.scheduler().num_waiting()), (1, 1));
    assert!(e.cancel(running) && e.cancel(waiting));
    assert!(!e.cancel(running), "a second cancel finds nothing");
    assert!(!e.cancel(RequestId(99)));
    assert_eq!(e.scheduler().pool().num_free(), 16);
    drain(&mut e, &mut out);
    for id in [running, waiting] {
        assert_eq!(out[&id].finished.as_ref().unwrap().0, FinishReason::Cancelled);
    }
    assert_eq!(out[&running].tokens.len(), 2, "a prompt step and a decode step ran");
    assert_eq!(out[&waiting].finished.as_ref().unwrap().1.completion_tokens, 0);
}

#[test]
fn a_stop_string_found_by_the_caller_finishes_with_stop() {
    let mut e = engine(2, 16, 4, 2);
    let id = e.add_request(request(2, 20, 0)).unwrap();
    let mut out = BTreeMap::new();
    collect(e.step(), &mut out);
    assert!(e.finish_stopped(id));
    drain(&mut e, &mut out);
    assert_eq!(out[&id].tokens.len(), 1);
    assert_eq!(out[&id].finished.as_ref().unwrap().0, FinishReason::Stop);
}

#[test]
fn a_failed_step_ends_its_sequences_with_the_error_and_the_rest_go_on() {
    let mut e = engine(4, 16, 64, 1);
    let first = e.add_request(request(3, 5, 0)).unwrap();
    let second = e.add_request(request(3, 5, 1)).unwrap();
    e.backend.fail_at_step = Some(1);
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    let (reason, usage) = out[&first].finished.clone().unwrap();
    match reason {
        FinishReason::Error(msg) => assert!(msg.starts_with("fake backend step failed: "), "{msg}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!((out[&first].tokens.len(), usage.completion_tokens), (1, 1));
    assert_eq!(out[&second].tokens, fake_solo_run(&request(3, 5, 1), VOCAB).0);
    assert_eq!(e.scheduler().pool().num_free(), 16);
}

/// A prompt that starts like a finished one reports the shared whole blocks as cached tokens and
/// still produces its solo tokens; after a failed step nothing cached is trusted again.
#[test]
fn shared_prompt_starts_are_reported_as_cached_and_forgotten_after_a_failed_step() {
    let mut e = engine(4, 16, 64, 4);
    let system = request(9, 3, 0);
    let run_one = |e: &mut Engine<FakeBackend>, r: &Request| {
        let mut out = BTreeMap::new();
        let id = e.add_request(r.clone()).unwrap();
        drain(e, &mut out);
        assert_eq!(out[&id].tokens, fake_solo_run(r, VOCAB).0);
        out[&id].finished.clone().unwrap().1
    };
    assert_eq!(run_one(&mut e, &system).cached_tokens, 0);
    let mut longer = system.clone();
    longer.prompt.extend([5, 6, 7]);
    assert_eq!(run_one(&mut e, &longer).cached_tokens, 8, "two whole blocks of the 9-token start");
    e.backend.fail_at_step = Some(e.backend.stats.steps);
    let failed = e.add_request(request(5, 2, 3)).unwrap();
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    assert!(matches!(out[&failed].finished, Some((FinishReason::Error(_), _))));
    assert_eq!(run_one(&mut e, &longer).cached_tokens, 0);
    assert_eq!(e.scheduler().pool().num_free(), 16);
}

/// A backend that cannot run again after its failure (a sticky CUDA error): the failed step's
/// requests and every other one, running or waiting, end with the error; new ones are refused.
#[test]
fn an_unusable_backend_ends_every_request_and_refuses_new_ones() {
    let mut e = engine(4, 16, 8, 1);
    e.backend.fail_fatally = true;
    let ids: Vec<RequestId> = (0..3).map(|i| e.add_request(request(3, 5, i)).unwrap()).collect();
    e.backend.fail_at_step = Some(1);
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    for id in &ids {
        let (reason, _) = out[id].finished.clone().unwrap();
        assert!(matches!(reason, FinishReason::Error(_)), "{id}: {reason:?}");
    }
    let why = e.unusable().unwrap().to_string();
    assert!(why.contains("fake backend is unusable after a failed step: the fake device is gone"), "{why}");
    assert_eq!(out[&ids[2]].finished.clone().unwrap().0, FinishReason::Error(why.clone()), "the waiting one gets why");
    assert_eq!(e.add_request(request(3, 5, 9)), Err(RequestError::BackendUnusable(why)));
    assert!(!e.has_work());
    assert_eq!(e.scheduler().pool().num_free(), 16);
}

#[test]
fn requests_that_could_never_run_are_refused_up_front() {
    let mut e = engine(4, 3, 8, 2);
    // 10 + 3 - 1 = 12 positions = 3 blocks: fits exactly. One more token does not.
    assert!(e.add_request(request(10, 3, 0)).is_ok());
    let err = e.add_request(request(10, 4, 0)).unwrap_err();
    assert!(matches!(err, RequestError::TooLargeForCache { blocks: 4, num_blocks: 3, .. }), "{err}");
    assert_eq!(e.add_request(Request::new(vec![VOCAB as u32], 1)).unwrap_err().to_string(),
        "prompt token 16 at index 0 is outside the vocabulary (size 16)");
    assert_eq!(e.scheduler().num_waiting(), 1, "refused requests are not queued");
}

#[test]
fn unusable_options_are_refused() {
    let fake = |num_blocks, max_step_tokens| FakeBackend::new(VOCAB, 100, CacheShape { block_size: 4, num_blocks, max_step_tokens });
    let opts = |max_running, max_step_tokens| EngineOptions { max_running, max_step_tokens, prefix_caching: true, admission: Admission::Optimistic };
    assert_eq!(Engine::new(fake(4, 8), opts(0, 8)).err(), Some(EngineOptionsError::ZeroMaxRunning));
    assert_eq!(
        Engine::new(fake(4, 0), opts(1, 8)).err(),
        Some(EngineOptionsError::ZeroStepTokens { options: 8, backend: 0 })
    );
    assert_eq!(
        Engine::new(fake(0, 8), opts(1, 8)).err(),
        Some(EngineOptionsError::EmptyCache { block_size: 4, num_blocks: 0 })
    );
    // The budget is the smaller of the two limits.
    assert_eq!(Engine::new(fake(4, 8), opts(1, 100)).unwrap().scheduler().config().max_step_tokens, 8);
}

/// Requests arriving together with one prompt start: the first fills its blocks in the step that
/// admits both, and the second reads them there (the fake backend checks what each reads).
#[test]
fn a_request_admitted_beside_another_reads_the_start_it_fills() {
    let mut e = engine(4, 16, 64, 4);
    let system = request(9, 3, 0);
    let mut longer = system.clone();
    longer.prompt.extend([5, 6, 7]);
    let ids = [e.add_request(system.clone()).unwrap(), e.add_request(longer.clone()).unwrap()];
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    assert_eq!(e.backend.stats.steps_reading_fresh_slots, 1);
    for (id, r) in ids.iter().zip([&system, &longer]) {
        assert_eq!(out[id].tokens, fake_solo_run(r, VOCAB).0);
    }
    let cached: Vec<usize> = ids.iter().map(|id| out[id].finished.clone().unwrap().1.cached_tokens).collect();
    assert_eq!(cached, vec![0, 8]);
}

/// vLLM's min_tokens: the stop token the model would pick first cannot end the run before
/// min_tokens tokens; after that it ends it as usual. More than max_tokens is refused.
#[test]
fn min_tokens_keeps_the_stop_tokens_out_until_then() {
    let base = request(5, 12, 3);
    let first = fake_solo_run(&base, VOCAB).0[0];
    // Every token but 0 and 1 stops the run: only min_tokens keeps it going.
    let all: Vec<u32> = (2..VOCAB as u32).collect();
    let mut e = engine(4, 16, 8, 2);
    let plain = e.add_request(Request { stop_token_ids: vec![first], ..base.clone() }).unwrap();
    let held = e.add_request(Request { stop_token_ids: all.clone(), min_tokens: 4, ..base.clone() }).unwrap();
    let mut out = BTreeMap::new();
    drain(&mut e, &mut out);
    assert_eq!(out[&plain].tokens, [first], "without min_tokens the first token stops");
    let held = &out[&held].tokens;
    assert!(held.len() >= 5 && held[..4].iter().all(|&t| t < 2), "4 tokens that could not stop first: {held:?}");
    assert!(held[4..held.len() - 1].iter().all(|&t| t < 2) && *held.last().unwrap() >= 2, "then the first stop token ends it: {held:?}");
    let refused = e.add_request(Request { min_tokens: 13, ..base }).unwrap_err();
    assert_eq!(refused, RequestError::MinTokensAboveMax { min_tokens: 13, max_tokens: 12 });
}

/// A backend that splits its steps (`launch_forward`, then `sample_launched` once the engine
/// has the masks; what the CPU and CUDA backends do) runs exactly what whole steps run, and a
/// failed launch ends its step's requests as a failed step does.
#[test]
fn split_steps_run_what_whole_steps_run() {
    let run = |split: bool, fail_at_step: Option<usize>| {
        let mut e = engine(2, 12, 5, 4);
        e.backend.split_steps = split;
        e.backend.fail_at_step = fail_at_step;
        for i in 0..6 {
            let mut r = request(3 + 2 * i, 6 + i, i as u32);
            r.sampling = SamplingParams { temperature: 0.8, seed: 7 + i as u64, ..Default::default() };
            r.logprobs = Some(1);
            e.add_request(r).unwrap();
        }
        let mut events = Vec::new();
        while e.has_work() {
            events.extend(e.step());
        }
        assert_eq!(e.scheduler().pool().num_free(), 12);
        let split_steps = e.backend().stats.split_steps as u64;
        assert_eq!(split_steps, if split { e.steps() - fail_at_step.is_some() as u64 } else { 0 });
        (events, e.steps(), e.scheduler().preemptions())
    };
    let whole = run(false, None);
    assert!(whole.2 > 0, "the pool was meant to be too small for all at once");
    assert_eq!(run(true, None), whole);
    let failed = run(true, Some(3));
    assert_eq!(failed, run(false, Some(3)));
    assert!(failed.0.iter().any(|e| matches!(e, Event::Finished { reason: FinishReason::Error(m), .. } if m.starts_with("fake backend step failed"))));
}

#[test]
fn sampling_a_step_that_was_never_launched_is_an_error() {
    let mut fake = FakeBackend::new(VOCAB, 100, CacheShape { block_size: 4, num_blocks: 4, max_step_tokens: 8 });
    fake.split_steps = true;
    let entry = StepEntry { tokens: &[1, 2], ctx_len: 2, block_table: &[0], want_logits: true };
    let spec = SampleSpec { params: SamplingParams::greedy(), mask: None, edits: &[], step: 0, logprobs: None };
    let never = fake.sample_launched(std::slice::from_ref(&entry), &[spec]);
    assert!(matches!(never, Err(crate::engine::EngineError::BadStepOutput(_))), "{never:?}");
    assert!(fake.launch_forward(std::slice::from_ref(&entry)).unwrap());
    assert!(fake.sample_launched(std::slice::from_ref(&entry), &[spec]).unwrap()[0].is_some());
    let again = fake.sample_launched(std::slice::from_ref(&entry), &[spec]);
    assert!(again.is_err(), "one launch, one draw: {again:?}");
}
