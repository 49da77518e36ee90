//! Which tokens run at the next step: decode tokens of running sequences, chunks of prompts in
//! progress, then new (or preempted) requests admitted first come, first served, all under a
//! token budget, a running-sequence limit and the KV block pool. Pure bookkeeping: no model.
//!
//! Policy (docs/scheduler.md): running sequences are served oldest first, decodes before prefill
//! chunks; a sequence that cannot get one more block preempts the youngest running sequence
//! (possibly itself), which loses its blocks and goes back to the front of the queue to be
//! recomputed. No new request is admitted in a step that preempted. With prefix caching, an
//! admitted request first shares the registered blocks that hold its leading tokens and starts
//! its prefill after them; every block a sequence completes is registered for later requests,
//! as soon as a step that fills it is planned, so that requests admitted into that same step
//! share it too.

use std::collections::{HashSet, VecDeque};

use super::admission::{Admission, ReserveRatio};
use super::block_pool::{BlockPool, ContentId};
use super::request::RequestId;
use super::sequence::Sequence;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Most tokens (decode + prefill) per step.
    pub max_step_tokens: usize,
    /// Most sequences holding KV blocks at once.
    pub max_running: usize,
    /// Share completed blocks between requests whose tokens start the same.
    pub prefix_caching: bool,
    /// When a waiting request may join (admission.rs).
    pub admission: Admission,
}

/// Prompt tokens looked up in the prefix cache at admission, and those found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub queried_tokens: u64,
    pub hit_tokens: u64,
}

/// One sequence's share of a step: tokens `start..start + len` of its token list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub id: RequestId,
    pub start: usize,
    pub len: usize,
    /// The chunk reaches the sequence's last token: its logits give the next token.
    pub want_logits: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub chunks: Vec<ScheduledChunk>,
    /// Sequences preempted while planning (they are waiting again, holding no blocks).
    pub preempted: Vec<RequestId>,
}

impl StepPlan {
    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    /// First come, first served; preempted sequences go back to the front.
    waiting: VecDeque<Sequence>,
    /// Sorted by id: oldest first, so the youngest is last.
    running: Vec<Sequence>,
    preemptions: u64,
    cache_stats: PrefixCacheStats,
    /// `Admission::Reserve`'s estimate of how much of max_tokens sequences generate.
    reserve_ratio: ReserveRatio,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        assert!(config.block_size > 0 && config.max_step_tokens > 0 && config.max_running > 0, "{config:?}");
        Scheduler {
            pool: BlockPool::new(config.num_blocks),
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            preemptions: 0,
            cache_stats: PrefixCacheStats::default(),
            reserve_ratio: ReserveRatio::new(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// Preemptions since the start.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.cache_stats
    }

    /// Queues a validated sequence (holding no blocks) behind those waiting.
    pub fn add(&mut self, seq: Sequence) {
        assert!(seq.blocks.is_empty() && seq.computed() == 0);
        self.waiting.push_back(seq);
    }

    /// Every sequence, running then waiting.
    pub fn ids(&self) -> Vec<RequestId> {
        self.running.iter().chain(&self.waiting).map(|s| s.id).collect()
    }

    pub fn get(&self, id: RequestId) -> Option<&Sequence> {
        self.running_index(id).map(|i| &self.running[i]).or_else(|| self.waiting.iter().find(|s| s.id == id))
    }

    pub fn running(&self, id: RequestId) -> Option<&Sequence> {
        self.running_index(id).map(|i| &self.running[i])
    }

    /// Records that the K/V of `n` more tokens of running sequence `id` are in the cache, and
    /// registers the blocks that completes (with prefix caching).
    pub fn advance(&mut self, id: RequestId, n: usize) {
        let i = self.running_index(id).expect("advancing a running sequence");
        let seq = &mut self.running[i];
        // Blocks a planned chunk fills may already be registered and shared (`admit`), so a
        // chunk is recorded whole or its sequence ends (as the engine does on a failed step).
        assert!(seq.computed() + n >= seq.planned_end, "sequence {} advanced by {n} short of its planned chunk", seq.id);
        seq.advance(n);
        if self.config.prefix_caching {
            let computed = seq.computed();
            register_full_blocks(&mut self.pool, seq, self.config.block_size, computed, None);
        }
    }

    /// Unregisters every cached block, so no later request reuses them (after a failed step).
    pub fn forget_cached(&mut self) {
        self.pool.forget_registered();
    }

    /// A running sequence, to record the outcome of its chunk.
    /// Every running sequence, for per-sequence work that leaves the scheduling state alone
    /// (the engine's grammar masks).
    pub(crate) fn running_all_mut(&mut self) -> &mut [Sequence] {
        &mut self.running
    }

    pub fn running_mut(&mut self, id: RequestId) -> Option<&mut Sequence> {
        self.running_index(id).map(|i| &mut self.running[i])
    }

    /// Removes a sequence, running or waiting, returning its blocks to the pool.
    pub fn remove(&mut self, id: RequestId) -> Option<Sequence> {
        let mut seq = match self.running_index(id) {
            Some(i) => self.running.remove(i),
            None => {
                let i = self.waiting.iter().position(|s| s.id == id)?;
                self.waiting.remove(i).expect("index from position")
            }
        };
        self.release_blocks(&mut seq);
        Some(seq)
    }

    fn running_index(&self, id: RequestId) -> Option<usize> {
        self.running.binary_search_by_key(&id, |s| s.id).ok()
    }

    fn release_blocks(&mut self, seq: &mut Sequence) {
        self.pool.free(&seq.blocks).unwrap_or_else(|e| panic!("scheduler bug: sequence {}: {e}", seq.id));
        seq.blocks.clear();
    }

    /// Plans the next step, allocating the blocks it writes. The caller runs the chunks, then
    /// [`Sequence::advance`]s each by its `len` (or removes it).
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.config.max_step_tokens;
        for decoding in [true, false] {
            let mut i = 0;
            while i < self.running.len() && budget > 0 {
                if (self.running[i].remaining() == 1) == decoding && !self.grow(i, &mut budget, &mut plan) {
                    continue; // running[i] preempted itself: i now points past the end
                }
                i += 1;
            }
        }
        if plan.preempted.is_empty() {
            self.admit(&mut plan, &mut budget);
        }
        self.reserve_ratio.after_step(!plan.preempted.is_empty());
        plan
    }

    /// The current `Admission::Reserve` ratio (for metrics and tests).
    pub fn reserve_ratio(&self) -> f64 {
        self.reserve_ratio.value()
    }

    /// Blocks to keep free for the running sequences' expected growth (0 when optimistic).
    fn reserved_blocks(&self) -> usize {
        match self.config.admission {
            Admission::Optimistic => 0,
            Admission::Reserve => {
                let bs = self.config.block_size;
                self.running.iter().map(|s| self.reserve_ratio.expected_blocks(s, bs)).sum()
            }
        }
    }

    /// Plans up to `budget` tokens of `running[i]`, preempting the youngest sequences until it
    /// has room for at least one. False when it had to preempt itself.
    fn grow(&mut self, i: usize, budget: &mut usize, plan: &mut StepPlan) -> bool {
        let bs = self.config.block_size;
        loop {
            let seq = &mut self.running[i];
            let room = seq.slack(bs) + self.pool.num_free() * bs;
            if room > 0 {
                let len = seq.remaining().min(*budget).min(room);
                let need = (seq.computed() + len).div_ceil(bs) - seq.blocks.len();
                assert!(self.pool.allocate_into(need, &mut seq.blocks), "room was counted from free blocks");
                plan_chunk(plan, seq, len);
                *budget -= len;
                return true;
            }
            let victim = self.running.len() - 1;
            let victim_id = self.running[victim].id;
            if let Some(p) = plan.chunks.iter().position(|c| c.id == victim_id) {
                *budget += plan.chunks.remove(p).len;
            }
            self.preempt(victim);
            plan.preempted.push(victim_id);
            if victim == i {
                return false;
            }
        }
    }

    fn preempt(&mut self, index: usize) {
        let mut seq = self.running.remove(index);
        self.release_blocks(&mut seq);
        seq.reset_for_recompute();
        self.preemptions += 1;
        // Younger sequences are preempted first, so each one pushed to the front is older than
        // those pushed before it: the queue stays in arrival order.
        self.waiting.push_front(seq);
    }

    /// Admits waiting sequences in order while the budget, the running limit and the pool allow;
    /// stops at the first that does not fit (no overtaking, so a long prompt is not starved).
    /// A sequence whose leading blocks are cached shares them and starts after them.
    fn admit(&mut self, plan: &mut StepPlan, budget: &mut usize) {
        let bs = self.config.block_size;
        let mut reserved = self.reserved_blocks();
        // The blocks this step fills are registered now rather than after it, so a request
        // admitted beside their writer shares them (as vLLM registers blocks when it schedules
        // them): backends write every entry's K/V of a layer before any attention reads the
        // cache, except in a step of single tokens (BatchBackend::step, `check_batch`).
        let mut filling = HashSet::new();
        if self.config.prefix_caching && !self.waiting.is_empty() {
            for seq in &mut self.running {
                let end = seq.planned_end;
                register_full_blocks(&mut self.pool, seq, bs, end, Some(&mut filling));
            }
        }
        let mut multi_token = plan.chunks.iter().any(|c| c.len > 1);
        while *budget > 0 && self.running.len() < self.config.max_running {
            let Some(seq) = self.waiting.front() else { break };
            let mut hit = self.cached_prefix(seq);
            let mut len = (seq.remaining() - hit.len() * bs).min(*budget);
            if len == 1 && !multi_token {
                // The step would be all single tokens: share no block it fills.
                if let Some(first) = hit.iter().position(|b| filling.contains(b)) {
                    hit.truncate(first);
                    len = (seq.remaining() - hit.len() * bs).min(*budget);
                }
            }
            // Cached blocks nobody holds are counted free: sharing them takes them off the list.
            let revived = hit.iter().filter(|&&b| !self.pool.is_allocated(b)).count();
            // With `Reserve`, room also for the running sequences' expected growth and this
            // one's beyond its chunk; but a request always starts when nothing runs.
            let own = match self.config.admission {
                Admission::Optimistic => 0,
                Admission::Reserve => {
                    let after_chunk = seq.remaining() - hit.len() * bs - len;
                    let chunk_slack = len.next_multiple_of(bs) - len;
                    self.reserve_ratio.expected_tokens(seq, after_chunk).saturating_sub(chunk_slack).div_ceil(bs)
                }
            };
            let kept = if self.running.is_empty() { 0 } else { reserved + own };
            if len.div_ceil(bs) + revived + kept > self.pool.num_free() {
                break;
            }
            reserved += own;
            let mut seq = self.waiting.pop_front().expect("front exists");
            self.cache_stats.queried_tokens += seq.tokens().len() as u64;
            self.cache_stats.hit_tokens += (hit.len() * bs) as u64;
            if !hit.is_empty() {
                hit.iter().for_each(|&b| self.pool.share(b));
                seq.resume_from_cache(hit, bs);
            }
            assert!(self.pool.allocate_into(len.div_ceil(bs), &mut seq.blocks));
            plan_chunk(plan, &mut seq, len);
            if self.config.prefix_caching {
                let end = seq.planned_end;
                register_full_blocks(&mut self.pool, &mut seq, bs, end, Some(&mut filling));
            }
            multi_token |= len > 1;
            *budget -= len;
            let at = self.running.partition_point(|s| s.id < seq.id);
            self.running.insert(at, seq);
        }
    }

    /// The registered blocks holding `seq`'s leading tokens, whole blocks only and never its
    /// last token (whose logits must be computed).
    fn cached_prefix(&self, seq: &Sequence) -> Vec<u32> {
        let bs = self.config.block_size;
        if !self.config.prefix_caching {
            return Vec::new();
        }
        let mut parent = ContentId::ROOT;
        let mut hit = Vec::new();
        let whole = (seq.tokens().len() - 1) / bs * bs;
        for tokens in seq.tokens()[..whole].chunks_exact(bs) {
            let Some(block) = self.pool.lookup(parent, tokens) else { break };
            parent = self.pool.content(block).expect("found blocks are registered");
            hit.push(block);
        }
        hit
    }

    /// Checks the bookkeeping (for tests and debugging): each block's reference count is the
    /// number of running sequences holding it; a block a sequence may still write (not wholly
    /// computed) is its alone and unregistered, unless the step being planned or run fills it;
    /// waiting sequences hold none; blocks cover what is computed and planned; the pool's own
    /// lists agree.
    pub fn check_invariants(&self) -> Result<(), String> {
        let bs = self.config.block_size;
        let mut holders = vec![0u32; self.config.num_blocks];
        for s in &self.running {
            if s.blocks.len() * bs < s.planned_end.max(s.computed()) {
                let positions = s.planned_end.max(s.computed());
                return Err(format!("sequence {} holds {} blocks for {positions} positions", s.id, s.blocks.len()));
            }
            // A block listed twice by one sequence shows up as a count the pool disagrees with.
            for &b in &s.blocks {
                let Some(h) = holders.get_mut(b as usize) else {
                    return Err(format!("sequence {} holds block {b}, out of range", s.id));
                };
                *h += 1;
            }
        }
        for s in &self.running {
            // Blocks the step fills may already be registered and shared (see `admit`).
            let unfilled = |i: usize| (i + 1) * bs > s.computed().max(s.planned_end);
            for (i, &b) in s.blocks.iter().enumerate().filter(|&(i, _)| unfilled(i)) {
                if holders[b as usize] > 1 {
                    let other = self.running.iter().find(|o| o.id != s.id && o.blocks.contains(&b)).expect("counted");
                    return Err(format!("block {b} held by sequences {} and {}, which writes it", other.id, s.id));
                }
                if self.pool.content(b).is_some() {
                    return Err(format!("sequence {}'s block {i} ({b}) is registered before it is complete", s.id));
                }
            }
        }
        if let Some(b) = (0..holders.len()).find(|&b| holders[b] != self.pool.refcount(b as u32)) {
            let refs = self.pool.refcount(b as u32);
            return Err(format!("block {b} is held by {} sequences, the pool counts {refs}", holders[b]));
        }
        self.pool.check()?;
        if let Some(s) = self.waiting.iter().find(|s| !s.blocks.is_empty() || s.computed() != 0) {
            return Err(format!("waiting sequence {} holds blocks or computed tokens", s.id));
        }
        if self.running.len() > self.config.max_running {
            return Err(format!("{} running, limit {}", self.running.len(), self.config.max_running));
        }
        if !self.running.windows(2).all(|w| w[0].id < w[1].id) {
            return Err("running sequences out of arrival order".into());
        }
        Ok(())
    }
}

/// Plans `len` tokens of `seq` from its first uncomputed one.
fn plan_chunk(plan: &mut StepPlan, seq: &mut Sequence, len: usize) {
    let (start, want_logits) = (seq.computed(), len == seq.remaining());
    plan.chunks.push(ScheduledChunk { id: seq.id, start, len, want_logits });
    seq.planned_end = start + len;
}

/// Registers the blocks of `seq` wholly within its first `upto` positions not registered yet,
/// each under its tokens and the block before it (adding them to `newly`); stops where that
/// chain is broken (after `forget_cached`).
fn register_full_blocks(pool: &mut BlockPool, seq: &mut Sequence, bs: usize, upto: usize, mut newly: Option<&mut HashSet<u32>>) {
    while (seq.registered + 1) * bs <= upto {
        let r = seq.registered;
        let parent = match r {
            0 => ContentId::ROOT,
            _ => match pool.content(seq.blocks[r - 1]) {
                Some(parent) => parent,
                None => return,
            },
        };
        pool.register(seq.blocks[r], parent, &seq.tokens()[r * bs..(r + 1) * bs]);
        if let Some(newly) = newly.as_deref_mut() {
            newly.insert(seq.blocks[r]);
        }
        seq.registered += 1;
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
