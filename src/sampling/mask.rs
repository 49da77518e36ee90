//! Token masks, as a grammar (`crate::structured`) hands them to the sampler: bit `t % 32` of
//! word `t / 32` is set when token `t` may be drawn. A masked token's logit becomes -inf before
//! anything else reads the row, so logprobs, logit edits and the sampler all see the constrained
//! distribution (vLLM applies its grammar bitmask to the logits at the same point).

use super::SamplingError;

/// Words of a mask over `vocab` tokens.
pub fn mask_words(vocab: usize) -> usize {
    vocab.div_ceil(32)
}

/// Whether `mask` lets `token` be drawn (false past the mask's end).
pub fn is_allowed(mask: &[u32], token: u32) -> bool {
    mask.get(token as usize / 32).is_some_and(|w| w >> (token % 32) & 1 == 1)
}

/// Sets every logit `mask` forbids to -inf (the GPU's `apply_token_mask_f32` does the same).
pub fn apply_token_mask(logits: &mut [f32], mask: &[u32]) -> Result<(), SamplingError> {
    if mask.len() != mask_words(logits.len()) {
        return Err(SamplingError::MaskSize { words: mask.len(), vocab: logits.len() });
    }
    for (chunk, &word) in logits.chunks_mut(32).zip(mask) {
        if word == u32::MAX {
            continue;
        }
        for (bit, logit) in chunk.iter_mut().enumerate() {
            if word >> bit & 1 == 0 {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_tokens_become_minus_infinity_and_the_rest_stay() {
        let mut logits: Vec<f32> = (0..70).map(|i| i as f32).collect();
        let mut mask = vec![0u32; mask_words(70)];
        for t in [0u32, 31, 32, 69] {
            mask[t as usize / 32] |= 1 << (t % 32);
        }
        apply_token_mask(&mut logits, &mask).unwrap();
        for (t, &l) in logits.iter().enumerate() {
            let allowed = is_allowed(&mask, t as u32);
            assert_eq!(allowed, [0, 31, 32, 69].contains(&t), "token {t}");
            assert_eq!(l, if allowed { t as f32 } else { f32::NEG_INFINITY }, "token {t}");
        }
        assert!(!is_allowed(&mask, 96), "past the end");
    }

    #[test]
    fn a_mask_of_the_wrong_size_is_refused() {
        let err = apply_token_mask(&mut [0.0; 33], &[u32::MAX]).unwrap_err();
        assert_eq!(err, SamplingError::MaskSize { words: 1, vocab: 33 });
    }
}
