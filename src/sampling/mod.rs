//! Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p; seeded and
//! portable; stop criteria; logprobs. Works on `&[f32]` logits only, with no model dependency.
//!
//! The rule (docs/architecture.md, "Sampling"), shared with the GPU sampler so that both choose
//! the same token from the same logits:
//! 1. temperature 0 is greedy: the argmax, lowest id on ties;
//! 2. otherwise the filtered distribution ([`filter`]): temperature -> top-k -> top-p -> min-p
//!    (HF transformers' order), in rank order (probability descending, id ascending);
//! 3. the draw of step `n` is `u = uniform(seed, n)` ([`rng`], SplitMix64), and the token is the
//!    first whose cumulative probability exceeds `u` (inverse CDF).
//!
//! NaN or +inf logits are errors, never a silent pick. Logprobs ([`logprobs`]) come from the raw
//! logits, before temperature and filters.

mod error;
pub mod filter;
mod logits;
pub mod logprobs;
pub mod mask;
mod params;
pub mod penalties;
pub mod rng;
mod stop;

pub use error::SamplingError;
pub use filter::{draw, filtered_distribution, Candidate, Distribution};
pub use logits::argmax;
pub use logprobs::{log_softmax, token_logprobs, top_logprobs, TokenLogprobs};
pub use mask::{apply_token_mask, is_allowed, mask_words};
pub use params::SamplingParams;
pub use penalties::{apply_edits, LogitEdit, Penalties, PenaltyState};
pub use stop::{FinishReason, StopCriteria};

/// The token for step `step` of a run: a pure function of the parameters, the logits and the step.
pub fn sample_at(params: &SamplingParams, logits: &[f32], step: u64) -> Result<u32, SamplingError> {
    if params.is_greedy() {
        params.validate()?;
        return argmax(logits);
    }
    // Exactly `draw(&filtered_distribution(..), u)`, sorting only what the walk visits.
    filter::draw_filtered(logits, params, rng::uniform(params.seed, step))
}

/// Samples one run's tokens in order, counting steps from 0. Every step consumes its draw
/// index, greedy or not, so a run's `n`-th token depends only on `(params, logits, n)`.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    step: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, SamplingError> {
        params.validate()?;
        Ok(Self { params, step: 0 })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The index of the next draw (the number of tokens sampled so far).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Chooses the next token. On error the step does not advance.
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        let token = sample_at(&self.params, logits, self.step)?;
        self.step += 1;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits of a fixed, unremarkable distribution over 12 tokens (not sorted by id).
    fn logits12() -> Vec<f32> {
        vec![
            0.3, 1.9, -0.4, 1.1, 2.4, 0.0, -1.5, 1.6, 0.9, -0.2, 2.0, 0.5,
        ]
    }

    fn run(params: SamplingParams, logits: &[f32], steps: usize) -> Vec<u32> {
        let mut sampler = Sampler::new(params).unwrap();
        (0..steps)
            .map(|_| sampler.sample(logits).unwrap())
            .collect()
    }

    #[test]
    fn greedy_is_the_argmax_with_ties_to_the_lowest_id() {
        let tokens = run(SamplingParams::greedy(), &[1.0, 4.0, 2.0, 4.0], 5);
        assert_eq!(tokens, vec![1; 5]);
        assert_eq!(run(SamplingParams::greedy(), &logits12(), 3), vec![4; 3]);
    }

    #[test]
    fn a_seeded_run_is_reproducible_and_other_seeds_differ() {
        let params = SamplingParams {
            seed: 42,
            ..Default::default()
        };
        let a = run(params, &logits12(), 64);
        assert_eq!(a, run(params, &logits12(), 64));
        for seed in [0, 1, 43, u64::MAX] {
            let b = run(SamplingParams { seed, ..params }, &logits12(), 64);
            assert_ne!(a, b, "seed {seed} gave the same 64 tokens as seed 42");
        }
        // Not stuck on one token: 64 draws from 12 tokens visit several.
        let mut seen = a.clone();
        seen.sort();
        seen.dedup();
        assert!(seen.len() >= 6, "{seen:?}");
    }

    #[test]
    fn a_step_depends_only_on_seed_step_and_logits() {
        let params = SamplingParams {
            seed: 7,
            top_p: 0.9,
            ..Default::default()
        };
        let mut sampler = Sampler::new(params).unwrap();
        let other = [5.0f32, 0.0, 0.0, 0.0];
        for step in 0..50u64 {
            // Interleave other logits: the draw for `step` must not depend on what came before.
            let logits = if step % 3 == 0 {
                other.to_vec()
            } else {
                logits12()
            };
            let token = sampler.sample(&logits).unwrap();
            assert_eq!(token, sample_at(&params, &logits, step).unwrap());
        }
        assert_eq!(sampler.step(), 50);
    }

    #[test]
    fn the_draw_is_the_inverse_cdf_of_the_seeded_uniform() {
        // Two equally likely tokens: token 0 iff u < 0.5, token 1 otherwise.
        let params = SamplingParams {
            seed: 3,
            ..Default::default()
        };
        for step in 0..200 {
            let want = if rng::uniform(3, step) < 0.5 { 0 } else { 1 };
            assert_eq!(
                sample_at(&params, &[0.25, 0.25], step),
                Ok(want),
                "step {step}"
            );
        }
    }

    /// Pearson's chi-square of `counts` against `probs` (which cover every observed token).
    fn chi_square(counts: &[u64], probs: &[f64], n: u64) -> f64 {
        counts
            .iter()
            .zip(probs)
            .map(|(&c, &p)| (c as f64 - p * n as f64).powi(2) / (p * n as f64))
            .sum()
    }

    /// Draws `n` tokens and checks that only candidates appear, at their probabilities.
    fn check_frequencies(params: SamplingParams, logits: &[f32], n: u64) {
        let dist = filtered_distribution(logits, &params).unwrap();
        let mut counts = vec![0u64; logits.len()];
        let mut sampler = Sampler::new(params).unwrap();
        for _ in 0..n {
            counts[sampler.sample(logits).unwrap() as usize] += 1;
        }
        for (token, &c) in counts.iter().enumerate() {
            if !dist.candidates.iter().any(|d| d.token == token as u32) {
                assert_eq!(c, 0, "token {token} was filtered out but drawn {c} times");
            }
        }
        let kept: Vec<u64> = dist.tokens().iter().map(|&t| counts[t as usize]).collect();
        let probs: Vec<f64> = dist.probabilities().map(|(_, p)| p).collect();
        let chi2 = chi_square(&kept, &probs, n);
        // The 99.9th percentile of chi-square with up to 11 degrees of freedom is 31.3. The draws
        // are seeded, so this either always passes or always fails.
        assert!(
            chi2 < 31.3,
            "chi-square {chi2:.1} over {} tokens for {params:?}",
            dist.candidates.len()
        );
    }

    #[test]
    fn empirical_frequencies_match_the_filtered_distribution() {
        let logits = logits12();
        let base = SamplingParams {
            seed: 11,
            ..Default::default()
        };
        check_frequencies(base, &logits, 40_000);
        check_frequencies(
            SamplingParams {
                temperature: 0.6,
                ..base
            },
            &logits,
            40_000,
        );
        check_frequencies(
            SamplingParams {
                temperature: 1.8,
                top_k: 7,
                ..base
            },
            &logits,
            40_000,
        );
        check_frequencies(SamplingParams { top_p: 0.8, ..base }, &logits, 40_000);
        check_frequencies(SamplingParams { min_p: 0.3, ..base }, &logits, 40_000);
        check_frequencies(
            SamplingParams {
                temperature: 0.9,
                top_k: 9,
                top_p: 0.95,
                min_p: 0.1,
                ..base
            },
            &logits,
            40_000,
        );
    }

    #[test]
    fn the_filtered_distribution_of_the_frequency_test_is_the_expected_one() {
        // Guards the frequency test against a filter that keeps everything: computed by hand
        // from logits12 sorted: 2.4 (4), 2.0 (10), 1.9 (1), 1.6 (7), 1.1 (3), 0.9 (8), 0.5 (11)...
        let params = SamplingParams {
            min_p: 0.3,
            ..Default::default()
        };
        let dist = filtered_distribution(&logits12(), &params).unwrap();
        // exp(l - 2.4) >= 0.3  <=>  l >= 2.4 + ln 0.3 = 1.196.
        assert_eq!(dist.tokens(), vec![4, 10, 1, 7]);
        let weights: Vec<f64> = [2.4f64, 2.0, 1.9, 1.6]
            .iter()
            .map(|l| (l - 2.4).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        for ((_, p), w) in dist.probabilities().zip(&weights) {
            assert!((p - w / total).abs() < 1e-6);
        }
    }

    #[test]
    fn nan_logits_are_an_error_not_a_pick_and_do_not_advance_the_step() {
        for params in [SamplingParams::greedy(), SamplingParams::default()] {
            let mut sampler = Sampler::new(params).unwrap();
            let mut logits = logits12();
            logits[5] = f32::NAN;
            assert_eq!(
                sampler.sample(&logits),
                Err(SamplingError::NanLogit { token: 5 })
            );
            logits[5] = f32::INFINITY;
            assert_eq!(
                sampler.sample(&logits),
                Err(SamplingError::InfiniteLogit { token: 5 })
            );
            assert_eq!(sampler.step(), 0);
        }
    }

    #[test]
    fn invalid_parameters_are_refused_up_front() {
        let bad = SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        };
        assert!(
            matches!(Sampler::new(bad), Err(SamplingError::InvalidTemperature(t)) if t.is_nan())
        );
        assert!(matches!(
            sample_at(&bad, &[0.0], 0),
            Err(SamplingError::InvalidTemperature(_))
        ));
    }

    /// Per-step time over Nemo's 131072-token vocabulary, printed with `--nocapture`. Sorting
    /// the whole vocabulary is the cost; the bound only catches an accidental blow-up (the
    /// machine may be shared), it is not a benchmark.
    fn time_per_step(params: SamplingParams, logits: &[f32]) -> std::time::Duration {
        let start = std::time::Instant::now();
        let tokens = run(params, logits, 20);
        assert!(tokens.iter().all(|&t| (t as usize) < logits.len()));
        start.elapsed() / 20
    }

    #[test]
    fn sampling_a_full_size_vocabulary_is_fast_enough_for_the_cpu_path() {
        let n = 131_072u64;
        // Gaussian logits (std 3): the worst case, mass spread over the whole tail.
        let flat: Vec<f32> = (0..n)
            .map(|i| {
                let (u, v) = (rng::uniform(1, i), rng::uniform(2, i));
                (3.0 * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        // Peaked, as a trained model's usually are: a few tokens far above the rest.
        let mut peaked = flat.clone();
        for (rank, token) in [17u32, 4000, 99_999, 123].into_iter().enumerate() {
            peaked[token as usize] = 25.0 - 2.0 * rank as f32;
        }
        let cases = [
            ("greedy", SamplingParams::greedy(), &flat),
            ("T=1 flat", SamplingParams::default(), &flat),
            (
                "T=1 top-p 0.9 flat",
                SamplingParams {
                    top_p: 0.9,
                    ..Default::default()
                },
                &flat,
            ),
            (
                "T=0.7 top-k 50 flat",
                SamplingParams {
                    temperature: 0.7,
                    top_k: 50,
                    ..Default::default()
                },
                &flat,
            ),
            ("T=1 peaked", SamplingParams::default(), &peaked),
            (
                "T=0.7 top-p 0.9 peaked",
                SamplingParams {
                    temperature: 0.7,
                    top_p: 0.9,
                    ..Default::default()
                },
                &peaked,
            ),
        ];
        for (name, params, logits) in cases {
            let per_step = time_per_step(params, logits);
            eprintln!("131072 tokens, {name}: {per_step:?} per step");
            assert!(per_step.as_millis() < 250, "{name}: {per_step:?} per step");
        }
    }
}
