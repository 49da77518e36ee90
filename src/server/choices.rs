//! OpenAI's `n` (and `/v1/completions`' list of prompts): one request answered by several
//! choices, each its own engine request (the prefix cache computes a shared prompt once).
//! [`Choices`] merges their event streams, tagging each event with its choice's index (prompt
//! `p`'s choice `i` is `p * n + i`), and [`UsageSum`] adds up their usage as OpenAI reports
//! it: each prompt once, the completions summed.

use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};

use super::engine_handle::Generation;
use super::engine_loop::GenEvent;
use crate::scheduler::Usage;

/// The next thing that happened to a request's choices.
pub enum ChoiceEvent {
    /// An event of choice `index` (its `Finished` comes last for that choice).
    Event(usize, GenEvent),
    /// The engine thread went away before every choice finished.
    EngineGone,
}

/// The running choices of one request. Dropping it cancels every choice still running.
pub struct Choices {
    streams: SelectAll<BoxStream<'static, ChoiceEvent>>,
    /// Choices in all.
    pub len: usize,
    /// Choices per prompt.
    pub n: usize,
}

impl Choices {
    /// `generations[i]` is choice `i`; `n` choices per prompt.
    pub fn new(generations: Vec<Generation>, n: usize) -> Self {
        let len = generations.len();
        let streams = generations.into_iter().enumerate().map(|(index, generation)| {
            // Ends after the choice's Finished (or after reporting the engine gone).
            stream::unfold(Some(generation), move |state| async move {
                let mut generation = state?;
                match generation.next().await {
                    Some(event @ GenEvent::Finished { .. }) => Some((ChoiceEvent::Event(index, event), None)),
                    Some(event) => Some((ChoiceEvent::Event(index, event), Some(generation))),
                    None => Some((ChoiceEvent::EngineGone, None)),
                }
            })
            .boxed()
        });
        Choices { streams: stream::select_all(streams), len, n }
    }

    /// The next event of any choice; `None` once every choice has finished.
    pub async fn next(&mut self) -> Option<ChoiceEvent> {
        self.streams.next().await
    }
}

/// The usage of a request's choices together: each prompt's tokens (and those of it taken
/// from the cache) once, from its first choice (the choices of a prompt share it), completion
/// tokens and preemptions summed over every choice.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageSum(Usage);

impl UsageSum {
    /// Choice `index` of a request with `n` choices per prompt finished with `u`.
    pub fn add(&mut self, index: usize, n: usize, u: Usage) {
        let t = &mut self.0;
        if index % n.max(1) == 0 {
            t.prompt_tokens += u.prompt_tokens;
            t.cached_tokens += u.cached_tokens;
        }
        t.completion_tokens += u.completion_tokens;
        t.preemptions += u.preemptions;
    }

    pub fn total(&self) -> Usage {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_each_prompt_once() {
        let mut sum = UsageSum::default();
        // Two prompts (10 and 7 tokens) x two choices, finishing in any order.
        sum.add(1, 2, Usage { prompt_tokens: 10, completion_tokens: 6, cached_tokens: 8, preemptions: 0 });
        sum.add(0, 2, Usage { prompt_tokens: 10, completion_tokens: 4, cached_tokens: 0, preemptions: 1 });
        sum.add(3, 2, Usage { prompt_tokens: 7, completion_tokens: 2, cached_tokens: 7, preemptions: 0 });
        sum.add(2, 2, Usage { prompt_tokens: 7, completion_tokens: 3, cached_tokens: 0, preemptions: 0 });
        let t = sum.total();
        assert_eq!((t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.preemptions), (17, 15, 0, 1));
    }
}
