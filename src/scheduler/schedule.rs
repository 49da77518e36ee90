//! Which tokens run at the next step: decode tokens of running sequences, chunks of prompts in
//! progress, then new (or preempted) requests admitted first come, first served, all under a
//! token budget, a running-sequence limit and the KV block pool. Pure bookkeeping: no model.
//!
//! Policy (docs/scheduler.md): running sequences are served oldest first, decodes before prefill
//! chunks; a sequence that cannot get one more block preempts the youngest running sequence
//! (possibly itself), which loses its blocks and goes back to the front of the queue to be
//! recomputed. No new request is admitted in a step that preempted.

use std::collections::VecDeque;

use super::block_pool::BlockPool;
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

    /// Queues a validated sequence (holding no blocks) behind those waiting.
    pub fn add(&mut self, seq: Sequence) {
        assert!(seq.blocks.is_empty() && seq.computed() == 0);
        self.waiting.push_back(seq);
    }

    pub fn get(&self, id: RequestId) -> Option<&Sequence> {
        self.running_index(id).map(|i| &self.running[i]).or_else(|| self.waiting.iter().find(|s| s.id == id))
    }

    pub fn running(&self, id: RequestId) -> Option<&Sequence> {
        self.running_index(id).map(|i| &self.running[i])
    }

    /// A running sequence, to record the outcome of its chunk.
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
        plan
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
                let want_logits = len == seq.remaining();
                plan.chunks.push(ScheduledChunk { id: seq.id, start: seq.computed(), len, want_logits });
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
    fn admit(&mut self, plan: &mut StepPlan, budget: &mut usize) {
        let bs = self.config.block_size;
        while *budget > 0 && self.running.len() < self.config.max_running {
            let Some(seq) = self.waiting.front() else { break };
            let len = seq.remaining().min(*budget);
            if len.div_ceil(bs) > self.pool.num_free() {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            assert!(self.pool.allocate_into(len.div_ceil(bs), &mut seq.blocks));
            plan.chunks.push(ScheduledChunk { id: seq.id, start: 0, len, want_logits: len == seq.remaining() });
            *budget -= len;
            let at = self.running.partition_point(|s| s.id < seq.id);
            self.running.insert(at, seq);
        }
    }

    /// Checks the bookkeeping (for tests and debugging): every block is held by at most one
    /// sequence and the pool agrees; waiting sequences hold none; blocks cover what is computed.
    pub fn check_invariants(&self) -> Result<(), String> {
        let bs = self.config.block_size;
        let mut owner = vec![None; self.config.num_blocks];
        for s in &self.running {
            if s.blocks.len() * bs < s.computed() {
                return Err(format!("sequence {} holds {} blocks for {} positions", s.id, s.blocks.len(), s.computed()));
            }
            for &b in &s.blocks {
                match owner.get_mut(b as usize) {
                    None => return Err(format!("sequence {} holds block {b}, out of range", s.id)),
                    Some(Some(other)) => return Err(format!("block {b} held by sequences {other} and {}", s.id)),
                    Some(o) => *o = Some(s.id),
                }
                if !self.pool.is_allocated(b) {
                    return Err(format!("sequence {} holds block {b}, which the pool calls free", s.id));
                }
            }
        }
        let held = owner.iter().filter(|o| o.is_some()).count();
        if held != self.pool.num_used() {
            return Err(format!("sequences hold {held} blocks, the pool counts {} used", self.pool.num_used()));
        }
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

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
