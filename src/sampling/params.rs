//! Sampling parameters and their validation.

use super::SamplingError;

/// How the next token is chosen. The neutral value of each filter turns it off, as in vLLM and
/// HF transformers: `top_k == 0`, `top_p == 1.0`, `min_p == 0.0`. `temperature == 0.0` is greedy
/// decoding (the filters cannot change the argmax, so they are moot there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the softmax; 0 = greedy. Finite and >= 0.
    pub temperature: f32,
    /// Keep the `top_k` most probable tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most probable tokens whose mass reaches `top_p`; in (0, 1].
    pub top_p: f32,
    /// Drop tokens less probable than `min_p` times the most probable one; in [0, 1].
    pub min_p: f32,
    /// Seeds the per-step draws (see [`super::rng`]).
    pub seed: u64,
}

impl SamplingParams {
    /// Greedy decoding: always the most probable token, lowest id on ties.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Rejects NaN, infinities and out-of-range values with an error saying what is allowed.
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError::InvalidTemperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::InvalidTopP(self.top_p));
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return Err(SamplingError::InvalidMinP(self.min_p));
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    /// Plain sampling from the model's distribution: temperature 1, every filter off, seed 0.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::default();
        f(&mut p);
        p
    }

    #[test]
    fn accepts_the_edges_of_every_range() {
        for p in [
            SamplingParams::default(),
            SamplingParams::greedy(),
            with(|p| p.temperature = 1e-6),
            with(|p| p.temperature = 100.0),
            with(|p| p.top_k = usize::MAX),
            with(|p| p.top_p = f32::MIN_POSITIVE),
            with(|p| p.min_p = 1.0),
        ] {
            assert_eq!(p.validate(), Ok(()), "{p:?}");
        }
        assert!(SamplingParams::greedy().is_greedy());
        assert!(!SamplingParams::default().is_greedy());
    }

    #[test]
    fn rejects_nan_negative_and_out_of_range_values() {
        use SamplingError::*;
        let cases = [
            (
                with(|p| p.temperature = f32::NAN),
                InvalidTemperature(f32::NAN),
            ),
            (with(|p| p.temperature = -0.5), InvalidTemperature(-0.5)),
            (
                with(|p| p.temperature = f32::INFINITY),
                InvalidTemperature(f32::INFINITY),
            ),
            (with(|p| p.top_p = 0.0), InvalidTopP(0.0)),
            (with(|p| p.top_p = 1.5), InvalidTopP(1.5)),
            (with(|p| p.top_p = f32::NAN), InvalidTopP(f32::NAN)),
            (with(|p| p.min_p = -0.1), InvalidMinP(-0.1)),
            (with(|p| p.min_p = 1.1), InvalidMinP(1.1)),
            (with(|p| p.min_p = f32::NAN), InvalidMinP(f32::NAN)),
        ];
        for (params, want) in cases {
            let got = params.validate().unwrap_err();
            // NaN != NaN, so compare the messages, which carry the offending value.
            assert_eq!(got.to_string(), want.to_string(), "{params:?}");
        }
        assert_eq!(
            with(|p| p.temperature = -1.0)
                .validate()
                .unwrap_err()
                .to_string(),
            "temperature must be a finite number >= 0 (0 = greedy), got -1"
        );
    }
}
