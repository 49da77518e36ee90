//! OpenAI's `n`: one request answered by several choices, each its own engine request (the
//! prefix cache computes their shared prompt once). [`Choices`] merges their event streams,
//! tagging each event with its choice's index, and [`UsageSum`] adds up their usage as OpenAI
//! reports it: the prompt once, the completions summed.

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
    pub n: usize,
}

impl Choices {
    /// `generations[i]` is choice `i`.
    pub fn new(generations: Vec<Generation>) -> Self {
        let n = generations.len();
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
        Choices { streams: stream::select_all(streams), n }
    }

    /// The next event of any choice; `None` once every choice has finished.
    pub async fn next(&mut self) -> Option<ChoiceEvent> {
        self.streams.next().await
    }
}

/// The usage of a request's choices together: prompt tokens once (they share the prompt),
/// completion tokens summed, cached prompt tokens those every choice took from the cache.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsageSum(Option<Usage>);

impl UsageSum {
    pub fn add(&mut self, u: Usage) {
        self.0 = Some(match self.0 {
            None => u,
            Some(t) => Usage {
                prompt_tokens: t.prompt_tokens,
                completion_tokens: t.completion_tokens + u.completion_tokens,
                cached_tokens: t.cached_tokens.min(u.cached_tokens),
                preemptions: t.preemptions + u.preemptions,
            },
        });
    }

    pub fn total(&self) -> Usage {
        self.0.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_the_shared_prompt_once() {
        let mut sum = UsageSum::default();
        sum.add(Usage { prompt_tokens: 10, completion_tokens: 4, cached_tokens: 0, preemptions: 1 });
        sum.add(Usage { prompt_tokens: 10, completion_tokens: 6, cached_tokens: 8, preemptions: 0 });
        let t = sum.total();
        assert_eq!((t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.preemptions), (10, 10, 0, 1));
    }
}
