//! When generation ends: a stop or EOS token, or the token budget.

use serde::Serialize;

use super::SamplingError;

/// Why generation ended, spelled as in the OpenAI API / vLLM: `"stop"` or `"length"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or EOS was generated.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The end of a generation. The token that triggers a stop is the last generated token and
/// counts towards `max_tokens` (as in vLLM, which also returns it); a stop on the last allowed
/// token reports `Stop`, not `Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCriteria {
    max_tokens: usize,
    eos_token_ids: Vec<u32>,
    stop_token_ids: Vec<u32>,
}

impl StopCriteria {
    /// `max_tokens` must be at least 1. EOS ids come from the model/tokenizer, stop ids from the
    /// user; both end generation the same way and are kept apart only for reporting.
    pub fn new(
        max_tokens: usize,
        eos_token_ids: Vec<u32>,
        stop_token_ids: Vec<u32>,
    ) -> Result<Self, SamplingError> {
        if max_tokens == 0 {
            return Err(SamplingError::ZeroMaxTokens);
        }
        Ok(Self {
            max_tokens,
            eos_token_ids,
            stop_token_ids,
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Whether `token`, the `generated`-th generated token (1-based, counting it), ends the run.
    pub fn check(&self, token: u32, generated: usize) -> Option<FinishReason> {
        if self.eos_token_ids.contains(&token) || self.stop_token_ids.contains(&token) {
            Some(FinishReason::Stop)
        } else if generated >= self.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_and_stop_tokens_stop_and_the_budget_ends_with_length() {
        let stop = StopCriteria::new(3, vec![2], vec![7, 9]).unwrap();
        assert_eq!(stop.check(5, 1), None);
        assert_eq!(stop.check(2, 1), Some(FinishReason::Stop));
        assert_eq!(stop.check(9, 2), Some(FinishReason::Stop));
        assert_eq!(stop.check(5, 3), Some(FinishReason::Length));
        assert_eq!(
            stop.check(7, 3),
            Some(FinishReason::Stop),
            "a stop token on the last step is a stop"
        );
        assert_eq!(stop.max_tokens(), 3);
    }

    #[test]
    fn a_run_stops_at_the_first_stop_token() {
        let stop = StopCriteria::new(100, vec![2], vec![]).unwrap();
        let stream = [10u32, 11, 2, 12];
        let end = stream
            .iter()
            .enumerate()
            .find_map(|(i, &t)| stop.check(t, i + 1).map(|r| (i, r)));
        assert_eq!(end, Some((2, FinishReason::Stop)));
    }

    #[test]
    fn zero_max_tokens_is_an_error() {
        assert_eq!(
            StopCriteria::new(0, vec![2], vec![]),
            Err(SamplingError::ZeroMaxTokens)
        );
    }

    #[test]
    fn finish_reasons_serialise_as_the_openai_strings() {
        assert_eq!(
            serde_json::to_string(&FinishReason::Stop).unwrap(),
            "\"stop\""
        );
        assert_eq!(
            serde_json::to_string(&FinishReason::Length).unwrap(),
            "\"length\""
        );
        assert_eq!(FinishReason::Length.as_str(), "length");
    }
}
