//! One request's progress: its tokens (prompt, then generated), how many of them have K/V in
//! the cache, and the blocks holding those.

use super::request::{Request, RequestId};
use crate::sampling::{LogitEdit, PenaltyState, StopCriteria};
use crate::structured::{Grammar, GrammarError};

#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: RequestId,
    pub request: Request,
    pub stop: StopCriteria,
    /// The prompt followed by every generated token.
    tokens: Vec<u32>,
    /// Leading tokens whose K/V are in the cache. Reset to 0 by a preemption: the generated
    /// tokens are then recomputed as part of a longer prompt, never sampled again.
    computed: usize,
    /// Block `i` holds positions `i * block_size ..`; covers exactly `computed` positions
    /// between steps (plus those scheduled during one).
    pub blocks: Vec<u32>,
    /// Leading blocks registered in the prefix cache (or found there at admission).
    pub registered: usize,
    /// Positions whose K/V are in the cache once the step being planned or run is done:
    /// `computed` plus its chunk (equal to `computed` between steps).
    pub planned_end: usize,
    /// Prompt tokens found in the prefix cache when first admitted (reported in the usage).
    pub cached_prompt_tokens: usize,
    pub preemptions: u32,
    /// The logit edits of the request's bias and penalties, kept up to date with every
    /// generated token (a preemption keeps them: the generated tokens stay generated).
    penalties: Option<PenaltyState>,
    /// The request's grammar (taken from it), advanced by every generated token.
    grammar: Option<Grammar>,
    /// The grammar's mask for the next draw, filled by `prepare_mask` before each step that
    /// samples this sequence; or why the grammar could not give one.
    mask: Result<Vec<u32>, GrammarError>,
}

impl Sequence {
    /// `request` was validated, so its max_tokens is at least 1.
    pub fn new(id: RequestId, mut request: Request) -> Self {
        let stop = StopCriteria::new(request.max_tokens, Vec::new(), request.stop_token_ids.clone())
            .expect("validated requests have max_tokens >= 1");
        let penalties = PenaltyState::with_min_tokens(&request.penalties, &request.prompt, &request.stop_token_ids, request.min_tokens);
        let grammar = request.grammar.take();
        Sequence {
            id,
            tokens: request.prompt.clone(),
            request,
            stop,
            computed: 0,
            blocks: Vec::new(),
            registered: 0,
            planned_end: 0,
            cached_prompt_tokens: 0,
            preemptions: 0,
            penalties,
            grammar,
            mask: Ok(Vec::new()),
        }
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn prompt_len(&self) -> usize {
        self.request.prompt.len()
    }

    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len()..]
    }

    pub fn computed(&self) -> usize {
        self.computed
    }

    /// Tokens still to run before the next one can be sampled (1 when decoding).
    pub fn remaining(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Positions the blocks can hold beyond those computed, without allocating.
    pub fn slack(&self, block_size: usize) -> usize {
        self.blocks.len() * block_size - self.computed
    }

    /// Starts from `blocks` found in the prefix cache, which hold the first `blocks.len() *
    /// block_size` tokens' K/V; fewer than all the tokens, so one is left to run for logits.
    pub fn resume_from_cache(&mut self, blocks: Vec<u32>, block_size: usize) {
        assert!(self.blocks.is_empty() && self.computed == 0, "only a sequence holding nothing resumes");
        let computed = blocks.len() * block_size;
        assert!(computed < self.tokens.len(), "a cache hit must leave a token to run");
        if self.preemptions == 0 {
            self.cached_prompt_tokens = computed.min(self.prompt_len());
        }
        (self.computed, self.registered, self.planned_end, self.blocks) = (computed, blocks.len(), computed, blocks);
    }

    /// The K/V of `n` more tokens are now in the cache.
    pub fn advance(&mut self, n: usize) {
        assert!(self.computed + n <= self.tokens.len(), "advanced past the sequence's tokens");
        self.computed += n;
        self.planned_end = self.planned_end.max(self.computed);
    }

    /// A newly sampled token (only once every token before it was computed). Errs when the
    /// grammar cannot take it; the token is kept either way.
    pub fn push_generated(&mut self, token: u32) -> Result<(), GrammarError> {
        assert_eq!(self.remaining(), 0, "sampled before the sequence's tokens were all run");
        self.tokens.push(token);
        if let Some(p) = &mut self.penalties {
            p.record(token);
        }
        match &mut self.grammar {
            Some(g) => g.consume(token),
            None => Ok(()),
        }
    }

    pub fn has_grammar(&self) -> bool {
        self.grammar.is_some()
    }

    /// The grammar is complete: it can take no more tokens.
    pub fn grammar_finished(&self) -> bool {
        self.grammar.as_ref().is_some_and(Grammar::is_finished)
    }

    /// Computes the grammar's mask for the next draw (nothing without a grammar).
    pub fn prepare_mask(&mut self) {
        if let Some(g) = &mut self.grammar {
            let mut words = std::mem::take(self.mask.as_mut().unwrap_or(&mut Vec::new()));
            self.mask = g.fill_mask(&mut words).map(|()| words);
        }
    }

    /// The mask `prepare_mask` computed (None without a grammar, or when it failed).
    pub fn token_mask(&self) -> Option<&[u32]> {
        match (&self.grammar, &self.mask) {
            (Some(_), Ok(words)) => Some(words),
            _ => None,
        }
    }

    /// Why the grammar could not give the last mask.
    pub fn mask_error(&self) -> Option<&GrammarError> {
        self.mask.as_ref().err()
    }

    /// What the next draw changes in the logits first (empty without bias or penalties).
    pub fn logit_edits(&self) -> &[LogitEdit] {
        self.penalties.as_ref().map_or(&[], |p| p.edits())
    }

    /// Forgets the cache state; the caller returns `blocks` to the pool first.
    pub fn reset_for_recompute(&mut self) {
        self.computed = 0;
        self.blocks.clear();
        self.registered = 0;
        self.planned_end = 0;
        self.preemptions += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_through_prefill_decode_and_recompute() {
        let mut s = Sequence::new(RequestId(3), Request::new(vec![5, 6, 7], 4));
        assert_eq!((s.remaining(), s.prompt_len(), s.generated()), (3, 3, &[][..]));
        s.blocks = vec![0];
        assert_eq!(s.slack(4), 4);
        s.advance(2);
        s.advance(1);
        s.push_generated(9).unwrap();
        assert_eq!((s.remaining(), s.generated(), s.slack(4)), (1, &[9][..], 1));
        s.reset_for_recompute();
        assert_eq!((s.remaining(), s.tokens(), s.preemptions), (4, &[5, 6, 7, 9][..], 1));
    }

    #[test]
    fn a_cache_hit_starts_past_its_blocks_and_counts_prompt_tokens_once() {
        let mut s = Sequence::new(RequestId(1), Request::new(vec![1, 2, 3, 4, 5, 6], 4));
        s.resume_from_cache(vec![8, 9], 2);
        assert_eq!((s.computed(), s.remaining(), s.registered, s.cached_prompt_tokens), (4, 2, 2, 4));
        s.advance(2);
        s.push_generated(7).unwrap();
        s.reset_for_recompute();
        assert_eq!((s.registered, s.cached_prompt_tokens), (0, 4));
        // After a preemption the hit may cover generated tokens; the usage keeps the first count.
        s.resume_from_cache(vec![8, 9, 3], 2);
        assert_eq!((s.computed(), s.remaining(), s.cached_prompt_tokens), (6, 1, 4));
    }

    #[test]
    #[should_panic(expected = "leave a token to run")]
    fn a_hit_covering_every_token_is_a_bug() {
        let mut s = Sequence::new(RequestId(1), Request::new(vec![1, 2, 3, 4], 4));
        s.resume_from_cache(vec![8, 9], 2);
    }

    #[test]
    #[should_panic(expected = "sampled before")]
    fn sampling_mid_prefill_is_a_bug() {
        let mut s = Sequence::new(RequestId(0), Request::new(vec![1, 2], 4));
        s.advance(1);
        s.push_generated(3).unwrap();
    }
}
