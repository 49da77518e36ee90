//! Unit tests of the scheduling policy on hand-built states (no backend: a planned chunk is
//! "run" by advancing the sequence and, where it wants logits, appending token 7).

use super::*;
use crate::scheduler::request::Request;

fn config(block_size: usize, num_blocks: usize, max_step_tokens: usize, max_running: usize) -> SchedulerConfig {
    SchedulerConfig { block_size, num_blocks, max_step_tokens, max_running }
}

fn add(s: &mut Scheduler, id: u64, prompt_len: usize) {
    s.add(Sequence::new(RequestId(id), Request::new(vec![1; prompt_len], 100)));
}

/// Runs a plan as a backend + engine would.
fn run(s: &mut Scheduler, plan: &StepPlan) {
    for c in &plan.chunks {
        let seq = s.running_mut(c.id).unwrap();
        assert_eq!(seq.computed(), c.start);
        seq.advance(c.len);
        if c.want_logits {
            seq.push_generated(7);
        }
    }
    s.check_invariants().unwrap();
}

fn chunk(id: u64, start: usize, len: usize, want_logits: bool) -> ScheduledChunk {
    ScheduledChunk { id: RequestId(id), start, len, want_logits }
}

fn schedule_and_run(s: &mut Scheduler) -> StepPlan {
    let plan = s.schedule();
    s.check_invariants().unwrap();
    run(s, &plan);
    plan
}

#[test]
fn admits_first_come_first_served_and_chunks_prompts_under_the_budget() {
    let mut s = Scheduler::new(config(4, 100, 10, 4));
    add(&mut s, 0, 7);
    add(&mut s, 1, 6);
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.chunks, vec![chunk(0, 0, 7, true), chunk(1, 0, 3, false)]);
    assert_eq!(s.pool().num_used(), 3);
    // Request 0 now decodes; request 1's prompt goes on from position 3.
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.chunks, vec![chunk(0, 7, 1, true), chunk(1, 3, 3, true)]);
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.chunks, vec![chunk(0, 8, 1, true), chunk(1, 6, 1, true)]);
    assert_eq!(plan.num_tokens(), 2);
}

#[test]
fn decodes_go_before_prompt_chunks_and_the_oldest_first() {
    let mut s = Scheduler::new(config(4, 100, 3, 8));
    add(&mut s, 0, 3);
    schedule_and_run(&mut s); // 0 decoding
    add(&mut s, 1, 10);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 3, 1, true), chunk(1, 0, 2, false)]);
    add(&mut s, 2, 1);
    // 1 is mid-prompt and older than 2, but 2 is waiting: running work comes first.
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 4, 1, true), chunk(1, 2, 2, false)]);
    assert_eq!(s.num_waiting(), 1);
    // Budget 1: only the oldest decode runs.
    s.config.max_step_tokens = 1;
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 5, 1, true)]);
}

#[test]
fn the_running_limit_holds_new_requests_back() {
    let mut s = Scheduler::new(config(4, 100, 100, 2));
    for id in 0..3 {
        add(&mut s, id, 2);
    }
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.chunks.len(), 2);
    assert_eq!((s.num_running(), s.num_waiting()), (2, 1));
    s.remove(RequestId(0)).unwrap();
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(1, 2, 1, true), chunk(2, 0, 2, true)]);
}

#[test]
fn a_full_pool_makes_new_requests_wait_without_preempting() {
    let mut s = Scheduler::new(config(4, 2, 100, 8));
    add(&mut s, 0, 7); // 2 blocks: the whole pool, with one free slot
    add(&mut s, 1, 1);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 0, 7, true)]);
    // 0 decodes into its last slot; 1 cannot get a block and waits (0 is not preempted for it).
    let plan = schedule_and_run(&mut s);
    assert_eq!((plan.chunks, plan.preempted), (vec![chunk(0, 7, 1, true)], vec![]));
    assert_eq!(s.num_waiting(), 1);
    s.remove(RequestId(0)).unwrap();
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(1, 0, 1, true)]);
}

#[test]
fn a_sequence_that_cannot_grow_preempts_the_youngest_which_is_recomputed_later() {
    let mut s = Scheduler::new(config(2, 2, 100, 8));
    add(&mut s, 0, 2);
    add(&mut s, 1, 2);
    schedule_and_run(&mut s); // one full block each, one token generated each
    let plan = schedule_and_run(&mut s);
    // 0 needs a block for position 2: 1 is preempted; no admission in the same step.
    assert_eq!((plan.chunks, plan.preempted), (vec![chunk(0, 2, 1, true)], vec![RequestId(1)]));
    assert_eq!(s.preemptions(), 1);
    let waiting = s.get(RequestId(1)).unwrap();
    assert_eq!((waiting.computed(), waiting.blocks.len(), waiting.tokens()), (0, 0, &[1, 1, 7][..]));
    // 0 holds both blocks; when it finishes, 1 comes back with prompt + generated as its prompt.
    s.remove(RequestId(0)).unwrap();
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.chunks, vec![chunk(1, 0, 3, true)]);
    assert_eq!(s.get(RequestId(1)).unwrap().generated(), &[7, 7]);
}

#[test]
fn the_youngest_preempts_itself_when_it_is_the_one_stuck() {
    let mut s = Scheduler::new(config(2, 2, 100, 8));
    add(&mut s, 0, 1); // one block with a free slot
    add(&mut s, 1, 2); // one full block; the pool is now empty
    schedule_and_run(&mut s);
    let plan = schedule_and_run(&mut s);
    // 0 decodes into its slack; 1 needs a block, is the youngest, and steps back itself.
    assert_eq!((plan.chunks, plan.preempted), (vec![chunk(0, 1, 1, true)], vec![RequestId(1)]));
    let back = s.get(RequestId(1)).unwrap();
    assert_eq!((back.computed(), back.remaining(), s.pool().num_used()), (0, 3, 1));
}

#[test]
fn preempting_an_already_planned_decode_refunds_its_tokens() {
    // Hand-built: 0 (older) is mid-prompt with no slack, 1 (younger) decodes into its slack, no
    // block is free. Pass 1 plans 1's decode; pass 2 must preempt 1 to give 0 a block.
    let mut s = Scheduler::new(config(2, 2, 2, 8));
    let mut a = Sequence::new(RequestId(0), Request::new(vec![1; 5], 10));
    assert!(s.pool.allocate_into(1, &mut a.blocks));
    a.advance(2);
    let mut b = Sequence::new(RequestId(1), Request::new(vec![1], 10));
    assert!(s.pool.allocate_into(1, &mut b.blocks));
    b.advance(1);
    b.push_generated(7);
    s.running = vec![a, b];
    s.check_invariants().unwrap();
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.preempted, vec![RequestId(1)]);
    // Without the refund only 1 token of the budget of 2 would be left for 0.
    assert_eq!(plan.chunks, vec![chunk(0, 2, 2, false)]);
}

#[test]
fn sequences_preempted_together_go_back_in_arrival_order() {
    let mut s = Scheduler::new(config(1, 4, 100, 8));
    for id in 0..4 {
        add(&mut s, id, 1);
    }
    schedule_and_run(&mut s); // each holds 1 full block; the pool is empty
    let plan = schedule_and_run(&mut s);
    // 0 preempts 3, 1 preempts 2; then 0 and 1 both run.
    assert_eq!(plan.preempted, vec![RequestId(3), RequestId(2)]);
    assert_eq!(plan.chunks, vec![chunk(0, 1, 1, true), chunk(1, 1, 1, true)]);
    let order: Vec<RequestId> = s.waiting.iter().map(|q| q.id).collect();
    assert_eq!(order, vec![RequestId(2), RequestId(3)]);
}

#[test]
fn removing_frees_blocks_and_unknown_ids_are_none() {
    let mut s = Scheduler::new(config(4, 10, 100, 1));
    add(&mut s, 0, 9);
    add(&mut s, 1, 1);
    schedule_and_run(&mut s);
    assert_eq!(s.pool().num_used(), 3);
    assert_eq!(s.remove(RequestId(1)).unwrap().id, RequestId(1)); // waiting
    assert_eq!(s.remove(RequestId(0)).unwrap().blocks, Vec::<u32>::new());
    assert!(s.remove(RequestId(0)).is_none());
    assert_eq!(s.pool().num_free(), 10);
    assert!(s.is_idle());
}

#[test]
fn the_invariant_check_catches_shared_blocks_and_leaks() {
    let mut s = Scheduler::new(config(4, 4, 100, 8));
    add(&mut s, 0, 3);
    add(&mut s, 1, 3);
    schedule_and_run(&mut s);
    let stolen = s.running[0].blocks[0];
    s.running[1].blocks.push(stolen);
    assert!(s.check_invariants().unwrap_err().contains("held by sequences 0 and 1"));
    s.running[1].blocks.pop();
    let mut leaked = Vec::new();
    assert!(s.pool.allocate_into(1, &mut leaked));
    assert!(s.check_invariants().unwrap_err().contains("the pool counts 3 used"));
}
