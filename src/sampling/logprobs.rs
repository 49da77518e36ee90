//! Log-probabilities reported to the user: natural-log softmax of the raw logits, before
//! temperature or any filter (what vLLM and OpenAI report, and what transformers' fixtures hold).

use super::logits::{check_logits, ranked_tokens};
use super::SamplingError;

/// The chosen token's logprob and the `k` most probable tokens', as the CLI's JSON reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)`, most probable first, ties to the lower id.
    pub top: Vec<(u32, f32)>,
}

/// log(sum(exp(logits))) in f64, shifted by the maximum so that nothing overflows.
fn log_sum_exp(logits: &[f32]) -> Result<f64, SamplingError> {
    let max = check_logits(logits)? as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    Ok(max + sum.ln())
}

/// `logits[i] - log(sum(exp(logits)))` for every token; -inf stays -inf.
pub fn log_softmax(logits: &[f32]) -> Result<Vec<f32>, SamplingError> {
    let lse = log_sum_exp(logits)?;
    Ok(logits.iter().map(|&l| (l as f64 - lse) as f32).collect())
}

/// The `k` highest logprobs as `(token, logprob)`, most probable first, ties to the lower id.
/// Fewer than `k` when fewer tokens are unmasked; empty for `k == 0`.
pub fn top_logprobs(logits: &[f32], k: usize) -> Result<Vec<(u32, f32)>, SamplingError> {
    let lse = log_sum_exp(logits)?;
    Ok(ranked_logprobs(logits, lse, k))
}

fn ranked_logprobs(logits: &[f32], lse: f64, k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new(); // ranked_tokens reads 0 as "all"
    }
    ranked_tokens(logits, k)
        .into_iter()
        .map(|t| (t, (logits[t as usize] as f64 - lse) as f32))
        .collect()
}

/// The chosen `token`'s logprob and the top `k`, from one pass over the logits.
pub fn token_logprobs(
    logits: &[f32],
    token: u32,
    k: usize,
) -> Result<TokenLogprobs, SamplingError> {
    let lse = log_sum_exp(logits)?;
    let chosen = *logits
        .get(token as usize)
        .ok_or(SamplingError::TokenOutOfRange {
            token,
            vocab: logits.len(),
        })?;
    Ok(TokenLogprobs {
        token,
        logprob: (chosen as f64 - lse) as f32,
        top: ranked_logprobs(logits, lse, k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition_and_sums_to_one() {
        let logits = [1.0f32, 2.0, 3.0, -1.0];
        let denom: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let got = log_softmax(&logits).unwrap();
        for (l, g) in logits.iter().zip(&got) {
            let want = ((*l as f64).exp() / denom).ln();
            assert!((*g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
        let total: f64 = got.iter().map(|&g| (g as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn log_softmax_is_stable_for_huge_and_tiny_logits() {
        // exp(1e4) overflows even f64; the shift by the max keeps it exact.
        let got = log_softmax(&[1e4, 1e4 - 1.0, -1e30, f32::NEG_INFINITY]).unwrap();
        let lse_shift = (1.0f64 + (-1.0f64).exp()).ln();
        assert!((got[0] as f64 + lse_shift).abs() < 1e-6, "{}", got[0]);
        assert!((got[1] as f64 + 1.0 + lse_shift).abs() < 1e-6, "{}", got[1]);
        assert!(got[2] < -1e29);
        assert_eq!(got[3], f32::NEG_INFINITY);
        assert!(got.iter().all(|g| !g.is_nan()));
        // A single token has probability 1.
        assert_eq!(log_softmax(&[-123.0]).unwrap(), vec![0.0]);
    }

    #[test]
    fn top_logprobs_are_sorted_with_ties_to_the_lower_id() {
        let logits = [0.0f32, 5.0, 1.0, 5.0, 3.0];
        let all = log_softmax(&logits).unwrap();
        let top = top_logprobs(&logits, 3).unwrap();
        assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3, 4]);
        for (t, lp) in &top {
            assert_eq!(*lp, all[*t as usize]);
        }
        assert_eq!(top_logprobs(&logits, 0).unwrap(), vec![]);
        assert_eq!(top_logprobs(&logits, 99).unwrap().len(), 5);
        let masked = [0.0f32, f32::NEG_INFINITY, 1.0];
        assert_eq!(
            top_logprobs(&masked, 3)
                .unwrap()
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            vec![2, 0]
        );
    }

    #[test]
    fn token_logprobs_reports_the_chosen_token_even_outside_the_top() {
        let logits = [0.0f32, 5.0, 1.0, 5.0, 3.0];
        let all = log_softmax(&logits).unwrap();
        let got = token_logprobs(&logits, 0, 2).unwrap();
        assert_eq!(got.token, 0);
        assert_eq!(got.logprob, all[0]);
        assert_eq!(got.top, vec![(1, all[1]), (3, all[3])]);
        assert_eq!(
            token_logprobs(&logits, 5, 2),
            Err(SamplingError::TokenOutOfRange { token: 5, vocab: 5 })
        );
    }

    #[test]
    fn nan_and_infinite_logits_are_errors() {
        assert_eq!(
            log_softmax(&[0.0, f32::NAN]),
            Err(SamplingError::NanLogit { token: 1 })
        );
        assert_eq!(
            top_logprobs(&[f32::NAN], 1),
            Err(SamplingError::NanLogit { token: 0 })
        );
        assert_eq!(
            top_logprobs(&[f32::NAN], 0),
            Err(SamplingError::NanLogit { token: 0 })
        );
        assert_eq!(
            token_logprobs(&[0.0, f32::INFINITY], 0, 1),
            Err(SamplingError::InfiniteLogit { token: 1 })
        );
        assert_eq!(
            log_softmax(&[f32::NEG_INFINITY]),
            Err(SamplingError::AllMasked { vocab: 1 })
        );
    }
}
