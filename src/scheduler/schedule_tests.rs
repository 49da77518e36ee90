//! Unit tests of the scheduling policy on hand-built states (no backend: a planned chunk is
//! "run" by advancing the sequence and, where it wants logits, appending token 7).

use super::*;
use crate::scheduler::admission::ReserveRatio;
use crate::scheduler::request::Request;

fn config(block_size: usize, num_blocks: usize, max_step_tokens: usize, max_running: usize) -> SchedulerConfig {
    SchedulerConfig { block_size, num_blocks, max_step_tokens, max_running, prefix_caching: false, admission: Admission::Optimistic }
}

fn add(s: &mut Scheduler, id: u64, prompt_len: usize) {
    s.add(Sequence::new(RequestId(id), Request::new(vec![1; prompt_len], 100)));
}

/// Runs a plan as a backend + engine would.
fn run(s: &mut Scheduler, plan: &StepPlan) {
    for c in &plan.chunks {
        assert_eq!(s.running(c.id).unwrap().computed(), c.start);
        s.advance(c.id, c.len);
        let seq = s.running_mut(c.id).unwrap();
        if c.want_logits {
            seq.push_generated(7).unwrap();
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
    b.push_generated(7).unwrap();
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
    assert!(s.check_invariants().unwrap_err().contains("held by sequences 1 and 0, which writes it"));
    s.running[1].blocks.pop();
    let mut leaked = Vec::new();
    assert!(s.pool.allocate_into(1, &mut leaked));
    assert!(s.check_invariants().unwrap_err().contains("held by 0 sequences, the pool counts 1"));
}

fn caching(block_size: usize, num_blocks: usize, max_step_tokens: usize, max_running: usize) -> Scheduler {
    Scheduler::new(SchedulerConfig { prefix_caching: true, ..config(block_size, num_blocks, max_step_tokens, max_running) })
}

fn add_tokens(s: &mut Scheduler, id: u64, prompt: &[u32]) {
    s.add(Sequence::new(RequestId(id), Request::new(prompt.to_vec(), 100)));
}

#[test]
fn a_prompt_starting_like_an_earlier_one_shares_its_whole_blocks_and_starts_after_them() {
    let mut s = caching(4, 10, 100, 4);
    add_tokens(&mut s, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    schedule_and_run(&mut s);
    let first = s.running(RequestId(0)).unwrap().blocks.clone();
    assert_eq!(s.pool().num_registered(), 2, "the two whole blocks of 10 tokens");
    s.remove(RequestId(0)).unwrap();
    add_tokens(&mut s, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 20, 21]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(1, 8, 2, true)]);
    let seq = s.running(RequestId(1)).unwrap();
    assert_eq!((&seq.blocks[..2], seq.cached_prompt_tokens), (&first[..2], 8));
    assert_eq!(s.prefix_cache_stats(), PrefixCacheStats { queried_tokens: 20, hit_tokens: 8 });
    // Only whole blocks match: a prompt differing in token 6 shares the first block only.
    add_tokens(&mut s, 2, &[1, 2, 3, 4, 5, 0, 7, 8, 9]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(1, 10, 1, true), chunk(2, 4, 5, true)]);
    assert_eq!(s.pool().refcount(first[0]), 2);
}

#[test]
fn a_request_admitted_beside_the_writer_shares_the_blocks_the_step_fills() {
    let mut s = caching(4, 10, 100, 4);
    add_tokens(&mut s, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    add_tokens(&mut s, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 20, 21]);
    // 0's chunk fills its first two blocks in this step; 1 reads them there (the backend writes
    // every entry's K/V of a layer before attention reads) and computes only its own tokens.
    let plan = s.schedule();
    assert_eq!(plan.chunks, vec![chunk(0, 0, 10, true), chunk(1, 8, 2, true)]);
    s.check_invariants().unwrap();
    let (a, b) = (&s.running(RequestId(0)).unwrap().blocks, &s.running(RequestId(1)).unwrap().blocks);
    assert_eq!(&a[..2], &b[..2]);
    assert_eq!((s.pool().refcount(a[0]), s.pool().refcount(a[2])), (2, 1));
    assert_eq!(s.prefix_cache_stats(), PrefixCacheStats { queried_tokens: 20, hit_tokens: 8 });
    run(&mut s, &plan);
    // The same holds for a running sequence's chunk: 0's second chunk fills block 2.
    let mut s = caching(4, 10, 8, 4);
    add_tokens(&mut s, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 0, 8, false)]);
    add_tokens(&mut s, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 40]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 8, 4, true), chunk(1, 12, 1, true)]);
    assert_eq!(s.running(RequestId(0)).unwrap().blocks, s.running(RequestId(1)).unwrap().blocks[..3]);
}

#[test]
fn a_step_of_single_tokens_shares_no_block_it_fills() {
    let mut s = caching(4, 10, 100, 4);
    add_tokens(&mut s, 0, &[1, 2, 3]);
    schedule_and_run(&mut s); // 0 samples 7; its decode of position 3 will fill block 0
    // 1 would run one token beside 0's one: a step whose K/V may be written inside attention,
    // so 1 computes block 0's tokens itself.
    add_tokens(&mut s, 1, &[1, 2, 3, 7, 9]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 3, 1, true), chunk(1, 0, 5, true)]);
    assert_ne!(s.running(RequestId(0)).unwrap().blocks[0], s.running(RequestId(1)).unwrap().blocks[0]);
    // With a multi-token chunk in the step (2's prompt), 3 shares the block 1's decode fills.
    let mut s = caching(4, 10, 100, 4);
    add_tokens(&mut s, 0, &[1, 2, 3]);
    schedule_and_run(&mut s);
    add_tokens(&mut s, 1, &[5, 5, 5]);
    add_tokens(&mut s, 2, &[1, 2, 3, 7, 9]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 3, 1, true), chunk(1, 0, 3, true), chunk(2, 4, 1, true)]);
    assert_eq!(s.running(RequestId(0)).unwrap().blocks[0], s.running(RequestId(2)).unwrap().blocks[0]);
}

#[test]
fn the_last_prompt_token_is_always_computed_for_its_logits() {
    let mut s = caching(4, 10, 100, 4);
    add_tokens(&mut s, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    schedule_and_run(&mut s);
    // Both blocks are cached, but the second holds the last token: it is recomputed.
    add_tokens(&mut s, 1, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 8, 1, true), chunk(1, 4, 4, true)]);
    let (a, b) = (&s.running(RequestId(0)).unwrap().blocks, &s.running(RequestId(1)).unwrap().blocks);
    assert_eq!(a[0], b[0]);
    assert_ne!(a[1], b[1], "a block that will be written is never shared");
}

#[test]
fn a_preempted_sequence_finds_its_own_blocks_again() {
    let mut s = caching(2, 5, 100, 8);
    add_tokens(&mut s, 0, &[1, 2, 3]);
    add_tokens(&mut s, 1, &[4, 5, 6]);
    schedule_and_run(&mut s); // 2 blocks each, 1 free; 1 has registered [4, 5]
    schedule_and_run(&mut s); // both decode into their slack: position 3 completes block 1
    let plan = schedule_and_run(&mut s); // 0 takes the free block; 1 steps back itself
    assert_eq!(plan.preempted, vec![RequestId(1)]);
    s.remove(RequestId(0)).unwrap();
    // 1 (tokens 4 5 6 7 7) finds its blocks [4, 5] and [6, 7]: only the last token runs.
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(1, 4, 1, true)]);
    assert_eq!(s.running(RequestId(1)).unwrap().cached_prompt_tokens, 0, "usage counts the first admission");
}

#[test]
fn cached_blocks_nobody_holds_count_against_the_free_pool_when_revived() {
    let mut s = caching(2, 4, 100, 8);
    add_tokens(&mut s, 0, &[1, 2, 3, 4, 5]);
    schedule_and_run(&mut s);
    s.remove(RequestId(0)).unwrap(); // [1, 2] and [3, 4] cached, all 4 blocks free
    add_tokens(&mut s, 1, &[9, 9, 9]);
    schedule_and_run(&mut s); // takes the 2 unregistered blocks
    assert_eq!(s.pool().num_free(), 2);
    // Reviving 2 cached blocks + 1 new block > 2 free: it waits, nothing is over-allocated.
    add_tokens(&mut s, 2, &[1, 2, 3, 4, 5]);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(1, 3, 1, true)]);
    assert_eq!(s.num_waiting(), 1);
    s.remove(RequestId(1)).unwrap();
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(2, 4, 1, true)]);
}

#[test]
fn nothing_is_shared_when_caching_is_off_or_forgotten() {
    let mut off = Scheduler::new(config(2, 8, 100, 8));
    let mut on = caching(2, 8, 100, 8);
    for s in [&mut off, &mut on] {
        add_tokens(s, 0, &[1, 2, 3, 4, 5]);
        schedule_and_run(s);
    }
    on.forget_cached();
    for s in [&mut off, &mut on] {
        add_tokens(s, 1, &[1, 2, 3, 4, 5]);
        assert_eq!(schedule_and_run(s).chunks[1], chunk(1, 0, 5, true));
        schedule_and_run(s); // 0 completes its third block
    }
    assert_eq!(off.pool().num_registered(), 0);
    // 1 registered a fresh chain of 3 blocks; 0's third has no registered parent and stays out.
    let third = on.running(RequestId(0)).unwrap().blocks[2];
    assert_eq!((on.pool().num_registered(), on.pool().content(third)), (3, None));
}

/// `Admission::Reserve`: a request joins only if the pool also holds what the running ones are
/// expected to generate (ratio x max_tokens) and its own expected growth; with nothing running,
/// a request that fits always starts.
#[test]
fn reserve_admission_keeps_room_for_expected_generation() {
    let reserve = |num_blocks| Scheduler::new(SchedulerConfig { admission: Admission::Reserve, ..config(4, num_blocks, 64, 8) });
    // Each request: 8 prompt tokens (2 blocks), max_tokens 100: 0.7 x 100 = 70 tokens expected,
    // 18 blocks beyond the prompt. Two of them need 2 x (2 + 18) = 40 blocks.
    let mut s = reserve(39);
    add(&mut s, 0, 8);
    add(&mut s, 1, 8);
    let plan = schedule_and_run(&mut s);
    assert_eq!(plan.chunks, vec![chunk(0, 0, 8, true)], "the second would leave too little for the first to grow");
    let mut s = reserve(40);
    add(&mut s, 0, 8);
    add(&mut s, 1, 8);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 0, 8, true), chunk(1, 0, 8, true)]);
    // Optimistic admits both into 4 blocks.
    let mut s = Scheduler::new(config(4, 4, 64, 8));
    add(&mut s, 0, 8);
    add(&mut s, 1, 8);
    assert_eq!(schedule_and_run(&mut s).chunks.len(), 2);
    // Alone, a request starts even when its expected growth does not fit.
    let mut s = reserve(3);
    add(&mut s, 0, 8);
    assert_eq!(schedule_and_run(&mut s).chunks, vec![chunk(0, 0, 8, true)]);
}

#[test]
fn the_reserve_ratio_decays_without_preemptions_and_jumps_after_one() {
    let mut r = ReserveRatio::new();
    assert_eq!(r.value(), ReserveRatio::INITIAL);
    for _ in 0..10_000 {
        r.after_step(false);
    }
    assert_eq!(r.value(), ReserveRatio::MIN);
    r.after_step(true);
    assert_eq!(r.value(), ReserveRatio::AFTER_PREEMPTION);
    // The scheduler moves it once per planned step.
    let mut s = Scheduler::new(SchedulerConfig { admission: Admission::Reserve, ..config(4, 100, 64, 8) });
    add(&mut s, 0, 8);
    schedule_and_run(&mut s);
    assert!(s.reserve_ratio() < ReserveRatio::INITIAL);
}
