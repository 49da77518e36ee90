//! Logit adjustments made before a token is drawn: OpenAI's `logit_bias`, `frequency_penalty`
//! and `presence_penalty`, and the `repetition_penalty` of vLLM and transformers.
//!
//! In vLLM's order (V1 sampler: logits processors, then `apply_penalties`), for token `t` of
//! logit `l`, with `c` its count among the generated tokens:
//! 1. `l += logit_bias[t]`;
//! 2. if `t` is in the prompt or was generated: `l = l > 0 ? l / r : l * r` (repetition `r`);
//! 3. `l -= frequency * c + presence * (c > 0)`.
//!
//! vLLM's `min_tokens` rides on the same edits: until that many tokens are generated, the stop
//! tokens' bias is -infinity, so they cannot be drawn ([`PenaltyState::with_min_tokens`]).
//!
//! Only the tokens touched are edited, so a sequence carries a sparse, token-sorted list of
//! [`LogitEdit`]s ([`PenaltyState`]), updated as it generates; the CPU applies it to a copy of
//! the row ([`apply_edits`]), the GPU in place before its sampler (`apply_logit_edits`,
//! kernels/sampling.cu) with the same f32 operations. Logprobs stay those of the raw logits.

use super::SamplingError;

/// The adjustments one request asks for; [`Penalties::default`] changes nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalties {
    /// Divides positive and multiplies negative logits of every token seen (prompt or
    /// generated); 1 = off. In [`REPETITION_RANGE`].
    pub repetition: f32,
    /// Subtracted once per generated occurrence; 0 = off. In [-2, 2] (OpenAI's range).
    pub frequency: f32,
    /// Subtracted once from every generated token; 0 = off. In [-2, 2].
    pub presence: f32,
    /// (token, bias) sorted by token, no token twice; each bias in [-100, 100] (OpenAI's range).
    pub logit_bias: Vec<(u32, f32)>,
}

/// The repetition penalties accepted: positive and bounded, so that a logit divided by it stays
/// finite (a logit of 1e2 / 1e-2 is 1e4; an unbounded one could overflow to infinity).
pub const REPETITION_RANGE: (f32, f32) = (0.01, 100.0);
/// OpenAI's ranges for the frequency and presence penalties and for a logit bias.
pub const PENALTY_LIMIT: f32 = 2.0;
pub const BIAS_LIMIT: f32 = 100.0;

impl Default for Penalties {
    fn default() -> Self {
        Penalties { repetition: 1.0, frequency: 0.0, presence: 0.0, logit_bias: Vec::new() }
    }
}

impl Penalties {
    pub fn is_neutral(&self) -> bool {
        self.repetition == 1.0 && self.frequency == 0.0 && self.presence == 0.0 && self.logit_bias.is_empty()
    }

    /// Refuses NaN, out-of-range values, unsorted or repeated bias tokens and tokens outside
    /// the vocabulary, saying what is allowed.
    pub fn validate(&self, vocab: usize) -> Result<(), SamplingError> {
        let (lo, hi) = REPETITION_RANGE;
        if !(lo..=hi).contains(&self.repetition) {
            return Err(SamplingError::InvalidPenalty { name: "repetition_penalty", value: self.repetition, range: "[0.01, 100] (1 = off)" });
        }
        for (name, value) in [("frequency_penalty", self.frequency), ("presence_penalty", self.presence)] {
            if !(-PENALTY_LIMIT..=PENALTY_LIMIT).contains(&value) {
                return Err(SamplingError::InvalidPenalty { name, value, range: "[-2, 2] (0 = off)" });
            }
        }
        for (i, &(token, bias)) in self.logit_bias.iter().enumerate() {
            if token as usize >= vocab {
                return Err(SamplingError::LogitBiasOutOfVocabulary { token, vocab });
            }
            if !(-BIAS_LIMIT..=BIAS_LIMIT).contains(&bias) {
                return Err(SamplingError::InvalidPenalty { name: "logit_bias", value: bias, range: "[-100, 100]" });
            }
            if i > 0 && self.logit_bias[i - 1].0 >= token {
                return Err(SamplingError::UnsortedLogitBias { token });
            }
        }
        Ok(())
    }
}

/// One token's adjustment: `((l + bias) scaled by scale) - sub`, where scaling divides a
/// positive value and multiplies any other. Mirrored by `LogitEdit` in kernels/sampling.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LogitEdit {
    pub token: u32,
    pub bias: f32,
    /// The repetition penalty if the token was seen, else 1.
    pub scale: f32,
    /// `frequency * count + presence * (count > 0)`.
    pub sub: f32,
}
const _: () = assert!(std::mem::size_of::<LogitEdit>() == 16);

impl LogitEdit {
    /// The edited logit; the GPU computes the same rounded operations (no fused multiply-add).
    pub fn apply(&self, logit: f32) -> f32 {
        let x = logit + self.bias;
        let x = if x > 0.0 { x / self.scale } else { x * self.scale };
        x - self.sub
    }
}

/// Applies `edits` (distinct tokens within the row) to one row of logits.
pub fn apply_edits(logits: &mut [f32], edits: &[LogitEdit]) -> Result<(), SamplingError> {
    let vocab = logits.len();
    for e in edits {
        let l = logits
            .get_mut(e.token as usize)
            .ok_or(SamplingError::TokenOutOfRange { token: e.token, vocab })?;
        *l = e.apply(*l);
    }
    Ok(())
}

/// A sequence's edits for its next draw, kept sorted by token and updated as it generates:
/// per token O(log n) to find plus a shift on a first occurrence, instead of a rebuild per step.
#[derive(Debug, Clone, PartialEq)]
pub struct PenaltyState {
    repetition: f32,
    frequency: f32,
    presence: f32,
    edits: Vec<LogitEdit>,
    /// Generated occurrences of `edits[i].token`.
    counts: Vec<u32>,
    /// Tokens generated so far.
    generated: usize,
    /// Stop tokens banned until `min_tokens` are generated, with their own (logit_bias) bias.
    banned: Vec<(u32, f32)>,
    min_tokens: usize,
}

impl PenaltyState {
    /// `None` when `p` changes nothing. `p` was validated.
    pub fn new(p: &Penalties, prompt: &[u32]) -> Option<Self> {
        if p.is_neutral() {
            return None;
        }
        // Repetition touches every prompt token; without it the prompt plays no part.
        let mut seen: Vec<u32> = if p.repetition != 1.0 { prompt.to_vec() } else { Vec::new() };
        seen.sort_unstable();
        seen.dedup();
        let mut tokens: Vec<u32> = p.logit_bias.iter().map(|&(t, _)| t).chain(seen.iter().copied()).collect();
        tokens.sort_unstable();
        tokens.dedup();
        let bias = |t: u32| p.logit_bias.binary_search_by_key(&t, |&(tok, _)| tok).map_or(0.0, |i| p.logit_bias[i].1);
        let in_prompt = |t: u32| seen.binary_search(&t).is_ok();
        let edits: Vec<LogitEdit> = tokens
            .iter()
            .map(|&t| LogitEdit { token: t, bias: bias(t), scale: if in_prompt(t) { p.repetition } else { 1.0 }, sub: 0.0 })
            .collect();
        let counts = vec![0; edits.len()];
        let (repetition, frequency, presence) = (p.repetition, p.frequency, p.presence);
        Some(PenaltyState { repetition, frequency, presence, edits, counts, generated: 0, banned: Vec::new(), min_tokens: 0 })
    }

    /// `new`, plus vLLM's `min_tokens`: `stop_tokens` cannot be drawn before `min_tokens`
    /// tokens are generated. `None` when nothing is edited at all.
    pub fn with_min_tokens(p: &Penalties, prompt: &[u32], stop_tokens: &[u32], min_tokens: usize) -> Option<Self> {
        if min_tokens == 0 || stop_tokens.is_empty() {
            return Self::new(p, prompt);
        }
        let mut s = Self::new(p, prompt).unwrap_or(PenaltyState {
            repetition: 1.0,
            frequency: 0.0,
            presence: 0.0,
            edits: Vec::new(),
            counts: Vec::new(),
            generated: 0,
            banned: Vec::new(),
            min_tokens: 0,
        });
        s.min_tokens = min_tokens;
        for &t in stop_tokens {
            let i = s.slot(t);
            if !s.banned.iter().any(|&(b, _)| b == t) {
                s.banned.push((t, s.edits[i].bias));
                s.edits[i].bias = f32::NEG_INFINITY;
            }
        }
        Some(s)
    }

    /// The index of `token`'s edit, inserted (changing nothing) if it had none.
    fn slot(&mut self, token: u32) -> usize {
        match self.edits.binary_search_by_key(&token, |e| e.token) {
            Ok(i) => i,
            Err(i) => {
                self.edits.insert(i, LogitEdit { token, bias: 0.0, scale: 1.0, sub: 0.0 });
                self.counts.insert(i, 0);
                i
            }
        }
    }

    /// One more generated `token`.
    pub fn record(&mut self, token: u32) {
        // Without penalties a generated token changes no logit (bias alone is fixed).
        if self.repetition != 1.0 || self.frequency != 0.0 || self.presence != 0.0 {
            let i = self.slot(token);
            self.counts[i] += 1;
            let e = &mut self.edits[i];
            e.scale = self.repetition;
            e.sub = self.frequency * self.counts[i] as f32 + self.presence;
        }
        self.generated += 1;
        if self.generated == self.min_tokens {
            for (t, bias) in std::mem::take(&mut self.banned) {
                let i = self.slot(t);
                self.edits[i].bias = bias;
            }
        }
    }

    /// Sorted by token, each token once.
    pub fn edits(&self) -> &[LogitEdit] {
        &self.edits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM's dense formulation, token by token, as the reference for the sparse state.
    fn dense(logits: &[f32], p: &Penalties, prompt: &[u32], generated: &[u32]) -> Vec<f32> {
        let mut out = logits.to_vec();
        for &(t, b) in &p.logit_bias {
            out[t as usize] += b;
        }
        for (t, l) in out.iter_mut().enumerate() {
            let t = t as u32;
            let count = generated.iter().filter(|&&g| g == t).count() as f32;
            if prompt.contains(&t) || count > 0.0 {
                *l = if *l > 0.0 { *l / p.repetition } else { *l * p.repetition };
            }
            *l -= p.frequency * count + p.presence * if count > 0.0 { 1.0 } else { 0.0 };
        }
        out
    }

    #[test]
    fn the_sparse_state_equals_the_dense_formula_bit_for_bit_as_tokens_arrive() {
        let logits: Vec<f32> = (0..40).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.73).collect();
        let prompt = [3, 5, 5, 17, 39];
        let generated = [5, 8, 8, 8, 0, 39, 12, 8];
        for p in [
            Penalties { repetition: 1.3, frequency: 0.4, presence: -0.7, logit_bias: vec![(0, 5.0), (8, -100.0), (20, 2.5)] },
            Penalties { repetition: 0.5, ..Penalties::default() },
            Penalties { frequency: 2.0, ..Penalties::default() },
            Penalties { logit_bias: vec![(1, 100.0)], ..Penalties::default() },
        ] {
            p.validate(40).unwrap();
            let mut state = PenaltyState::new(&p, &prompt).unwrap();
            for n in 0..=generated.len() {
                let mut row = logits.clone();
                apply_edits(&mut row, state.edits()).unwrap();
                let want = dense(&logits, &p, &prompt, &generated[..n]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&row), bits(&want), "{p:?} after {n} tokens");
                assert!(state.edits().windows(2).all(|w| w[0].token < w[1].token), "sorted, distinct");
                if n < generated.len() {
                    state.record(generated[n]);
                }
            }
        }
    }

    #[test]
    fn neutral_penalties_carry_no_state_and_repetition_alone_touches_only_seen_tokens() {
        assert!(PenaltyState::new(&Penalties::default(), &[1, 2]).is_none());
        let p = Penalties { repetition: 2.0, ..Penalties::default() };
        let mut s = PenaltyState::new(&p, &[4, 2, 4]).unwrap();
        assert_eq!(s.edits().iter().map(|e| e.token).collect::<Vec<_>>(), [2, 4]);
        s.record(7);
        let mut row = vec![1.0, -1.0, 2.0, 0.0, -4.0, 0.0, 3.0, 6.0];
        apply_edits(&mut row, s.edits()).unwrap();
        assert_eq!(row, [1.0, -1.0, 1.0, 0.0, -8.0, 0.0, 3.0, 3.0]);
    }

    #[test]
    fn bad_values_are_refused_with_the_allowed_range() {
        let bad = |p: Penalties| p.validate(10).unwrap_err().to_string();
        assert!(bad(Penalties { repetition: 0.0, ..Default::default() }).contains("repetition_penalty must be in [0.01, 100]"));
        assert!(bad(Penalties { repetition: f32::NAN, ..Default::default() }).contains("got NaN"));
        assert!(bad(Penalties { frequency: 2.5, ..Default::default() }).contains("frequency_penalty must be in [-2, 2]"));
        assert!(bad(Penalties { presence: f32::NEG_INFINITY, ..Default::default() }).contains("presence_penalty"));
        assert!(bad(Penalties { logit_bias: vec![(3, 101.0)], ..Default::default() }).contains("logit_bias must be in [-100, 100]"));
        assert!(bad(Penalties { logit_bias: vec![(10, 1.0)], ..Default::default() }).contains("logit_bias names token 10, outside the vocabulary of 10"));
        assert!(bad(Penalties { logit_bias: vec![(3, 1.0), (3, 2.0)], ..Default::default() }).contains("token 3"));
        let edges = Penalties { repetition: 100.0, frequency: -2.0, presence: 2.0, logit_bias: vec![(0, -100.0), (9, 100.0)] };
        assert_eq!(edges.validate(10), Ok(()));
        assert_eq!(Penalties { repetition: 0.01, ..Default::default() }.validate(1), Ok(()));
    }

    #[test]
    fn min_tokens_bans_the_stop_tokens_until_then_and_keeps_their_bias_after() {
        let p = Penalties { logit_bias: vec![(2, 1.5)], ..Penalties::default() };
        let mut s = PenaltyState::with_min_tokens(&p, &[9], &[2, 3, 2], 2).unwrap();
        let row = |s: &PenaltyState| {
            let mut r = vec![1.0f32; 5];
            apply_edits(&mut r, s.edits()).unwrap();
            r
        };
        assert_eq!(row(&s), [1.0, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0]);
        s.record(4);
        assert_eq!(row(&s), [1.0, 1.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0], "one token is not two");
        s.record(4);
        assert_eq!(row(&s), [1.0, 1.0, 2.5, 1.0, 1.0], "banned no more; token 2 keeps its bias");
        assert!(PenaltyState::with_min_tokens(&Penalties::default(), &[1], &[2], 0).is_none());
        assert!(PenaltyState::with_min_tokens(&Penalties::default(), &[1], &[], 5).is_none());
        // Penalties on top: the ban lifts, the penalties stay.
        let p = Penalties { presence: 1.0, ..Penalties::default() };
        let mut s = PenaltyState::with_min_tokens(&p, &[], &[0], 1).unwrap();
        s.record(1);
        assert_eq!(row(&s), [1.0, 0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn an_edit_outside_the_row_is_an_error_not_a_panic() {
        let edit = LogitEdit { token: 3, bias: 1.0, scale: 1.0, sub: 0.0 };
        assert_eq!(apply_edits(&mut [0.0; 3], &[edit]), Err(SamplingError::TokenOutOfRange { token: 3, vocab: 3 }));
    }
}
