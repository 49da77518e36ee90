//! Checking raw logits and ranking tokens by them; shared by the sampler and the logprobs.
//!
//! The one order used everywhere: logit descending, then token id ascending. For any
//! temperature > 0 it is also the order of probability, and it makes every tie deterministic.

use super::SamplingError;

/// Checks that the logits can define a distribution and returns the largest one.
///
/// NaN and +inf are errors (a broken forward pass must not silently pick a token); -inf is a
/// masked token and allowed, as long as at least one logit is finite.
pub(crate) fn check_logits(logits: &[f32]) -> Result<f32, SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::EmptyLogits);
    }
    let mut max = f32::NEG_INFINITY;
    for (token, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            return Err(SamplingError::NanLogit {
                token: token as u32,
            });
        }
        if l == f32::INFINITY {
            return Err(SamplingError::InfiniteLogit {
                token: token as u32,
            });
        }
        max = max.max(l);
    }
    if max == f32::NEG_INFINITY {
        return Err(SamplingError::AllMasked {
            vocab: logits.len(),
        });
    }
    Ok(max)
}

/// The first of the largest logits (greedy decoding: ties go to the lowest id).
pub fn argmax(logits: &[f32]) -> Result<u32, SamplingError> {
    check_logits(logits)?;
    let mut best = 0;
    for (token, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = token;
        }
    }
    Ok(best as u32)
}

/// A sort key whose ascending order is the rank order: logit descending, then id ascending.
///
/// The logit's bits are mapped to an unsigned integer that increases with the float (flip all
/// bits of negatives, set the sign bit of positives), inverted for descending order, and the id
/// fills the low half. Sorting plain u64 keys is several times faster than an indirect float
/// comparison over a 131072-token vocabulary. -0.0 is folded into 0.0 first so that they tie.
pub(crate) fn rank_key(logit: f32, token: u32) -> u64 {
    let bits = (logit + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    ((!ascending as u64) << 32) | token as u64
}

/// The ids of the `k` highest finite logits in rank order (`k == 0`: all of them). Logits must
/// have passed [`check_logits`] (no NaN). A partial selection first, so that a small `k` over a
/// vocabulary of 131072 does not sort the whole vocabulary.
pub(crate) fn ranked_tokens(logits: &[f32], k: usize) -> Vec<u32> {
    let mut keys: Vec<u64> = logits
        .iter()
        .zip(0u32..)
        .filter(|(&l, _)| l != f32::NEG_INFINITY)
        .map(|(&l, token)| rank_key(l, token))
        .collect();
    if k > 0 && k < keys.len() {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    // Keys are unique (they hold the id), so an unstable sort is deterministic.
    keys.sort_unstable();
    keys.into_iter().map(|key| key as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_breaks_ties_towards_the_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), Ok(1));
        assert_eq!(argmax(&[5.0]), Ok(0));
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1e30, -1e30]), Ok(1));
        assert_eq!(argmax(&[-0.0, 0.0]), Ok(0), "-0.0 and 0.0 are equal logits");
        assert_eq!(argmax(&[0.0, 1.0, f32::MAX]), Ok(2));
    }

    #[test]
    fn bad_logits_are_errors_naming_the_token() {
        assert_eq!(argmax(&[]), Err(SamplingError::EmptyLogits));
        assert_eq!(
            argmax(&[1.0, f32::NAN, 9.0]),
            Err(SamplingError::NanLogit { token: 1 })
        );
        assert_eq!(
            argmax(&[1.0, 2.0, f32::INFINITY]),
            Err(SamplingError::InfiniteLogit { token: 2 })
        );
        let masked = [f32::NEG_INFINITY; 4];
        assert_eq!(argmax(&masked), Err(SamplingError::AllMasked { vocab: 4 }));
    }

    #[test]
    fn ranking_orders_by_logit_then_id_and_drops_masked_tokens() {
        let logits = [0.5, 2.0, f32::NEG_INFINITY, 2.0, -1.0, 0.5, 0.0, -0.0];
        assert_eq!(ranked_tokens(&logits, 0), vec![1, 3, 0, 5, 6, 7, 4]);
        assert_eq!(ranked_tokens(&logits, 3), vec![1, 3, 0]);
        assert_eq!(ranked_tokens(&logits, 4), vec![1, 3, 0, 5]);
        assert_eq!(ranked_tokens(&logits, 7), vec![1, 3, 0, 5, 6, 7, 4]);
        assert_eq!(ranked_tokens(&logits, 100), vec![1, 3, 0, 5, 6, 7, 4]);
    }

    #[test]
    fn rank_keys_order_floats_like_a_comparison_sort() {
        let values = [
            f32::MAX,
            1e30,
            3.5,
            1.0,
            f32::MIN_POSITIVE,
            1e-45,
            0.0,
            -0.0,
            -1e-45,
            -1.0,
            -1e30,
            f32::MIN,
        ];
        let mut by_float: Vec<u32> = (0..values.len() as u32).collect();
        by_float.sort_by(|&a, &b| {
            let (x, y) = (values[a as usize], values[b as usize]);
            y.partial_cmp(&x).unwrap().then(a.cmp(&b))
        });
        assert_eq!(ranked_tokens(&values, 0), by_float);
        assert_eq!(&by_float[6..8], &[6, 7], "0.0 and -0.0 tie, lower id first");
    }

    #[test]
    fn partial_selection_agrees_with_a_full_sort() {
        // Many ties (values from a small set) to stress the id tie-break in the selection.
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i * 7919) % 37) as f32 * 0.25)
            .collect();
        let full = ranked_tokens(&logits, 0);
        for k in [1, 2, 36, 37, 500, 4999] {
            assert_eq!(ranked_tokens(&logits, k), full[..k], "k = {k}");
        }
    }
}
