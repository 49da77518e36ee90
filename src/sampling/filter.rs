//! The filtered distribution a token is drawn from, and the inverse-CDF draw over it.
//!
//! Filters apply in HF transformers' order (the warpers `generate` builds): temperature ->
//! top-k -> top-p -> min-p, each on the distribution the previous one left, renormalised.
//! vLLM's v1 sampler applies min-p before top-k/top-p. Since min-p's threshold is relative to
//! the top probability, which renormalising leaves in proportion, its place against top-k does
//! not matter; against top-p it does, and this is HF's choice.
//! One deliberate difference from HF: top-k keeps exactly `k` tokens, breaking ties at the k-th
//! logit by the lower id, where HF keeps every token tied with the k-th.
//!
//! Arithmetic is f64 on the f32 logits. A token's weight is `exp((logit - max) / T)`, so the top
//! token weighs exactly 1 and nothing overflows for any temperature > 0; probabilities are
//! weights over the kept total, and the draw compares cumulative weights in rank order with
//! `u * total` (no division, so the sampler and [`draw`] agree bit for bit).
//!
//! Speed: each filter's kept set is a prefix of the rank order, as is the part of the order an
//! inverse-CDF walk visits. So only the smallest prefix `{weight >= c}` (c from [`CUTOFFS`])
//! whose mass suffices is sorted, not a 131072-token vocabulary; if rounding makes a walk run
//! off the end of that prefix, the walk is redone over the full sort. The result is exactly the
//! full-sort result.

use super::logits::{argmax, check_logits, rank_key, ranked_tokens};
use super::{SamplingError, SamplingParams};

/// A token that survived the filters and its weight, `exp((logit - max) / T)` (the top one is 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub token: u32,
    pub weight: f64,
}

/// The distribution a token is drawn from: candidates in rank order (probability descending, id
/// ascending) and their total weight. Tokens whose weight is 0 in f64 (masked, or underflowed at
/// a low temperature) are not candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub candidates: Vec<Candidate>,
    pub total: f64,
}

impl Distribution {
    /// `(token, probability)` in rank order; the probabilities sum to 1 up to rounding.
    pub fn probabilities(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.candidates
            .iter()
            .map(|c| (c.token, c.weight / self.total))
    }

    pub fn tokens(&self) -> Vec<u32> {
        self.candidates.iter().map(|c| c.token).collect()
    }
}

/// The filtered distribution for these logits and parameters. Greedy parameters give the argmax
/// alone.
pub fn filtered_distribution(
    logits: &[f32],
    params: &SamplingParams,
) -> Result<Distribution, SamplingError> {
    let kept = apply_filters(logits, params)?;
    let mut candidates = kept.candidates;
    if !kept.sorted {
        sort_by_rank(&mut candidates, logits);
    }
    Ok(Distribution {
        candidates,
        total: kept.total,
    })
}

/// Inverse CDF: the first candidate at which the cumulative weight exceeds `u * total`, for `u`
/// in `[0, 1)`; the last one if rounding leaves the target past the end.
pub fn draw(distribution: &Distribution, u: f64) -> u32 {
    let last = distribution
        .candidates
        .last()
        .expect("a distribution always holds the top token");
    walk(&distribution.candidates, u * distribution.total).unwrap_or(last.token)
}

/// [`draw`] over [`filtered_distribution`], sorting only the prefix of the rank order it visits.
pub(crate) fn draw_filtered(
    logits: &[f32],
    params: &SamplingParams,
    u: f64,
) -> Result<u32, SamplingError> {
    let kept = apply_filters(logits, params)?;
    let target = u * kept.total;
    if kept.sorted {
        let last = kept
            .candidates
            .last()
            .expect("the top token is always kept");
        return Ok(walk(&kept.candidates, target).unwrap_or(last.token));
    }
    let prefix = sufficient_prefix(&kept.candidates, logits, target, |p| {
        walk(p, target).is_some()
    });
    let last = prefix.last().expect("the top token is always kept");
    Ok(walk(&prefix, target).unwrap_or(last.token))
}

/// Weight levels (relative to the top token's 1) tried, largest first, when looking for a prefix
/// of the rank order that holds enough mass; the last resort is the whole pool.
const CUTOFFS: [f64; 4] = [1e-2, 1e-4, 1e-8, 1e-16];

/// The kept candidates, their total weight, and whether they are already in rank order (only
/// the plain-temperature case leaves them in id order, to be sorted as far as a walk needs).
struct Kept {
    candidates: Vec<Candidate>,
    total: f64,
    sorted: bool,
}

fn apply_filters(logits: &[f32], params: &SamplingParams) -> Result<Kept, SamplingError> {
    params.validate()?;
    if params.is_greedy() {
        let top = Candidate {
            token: argmax(logits)?,
            weight: 1.0,
        };
        return Ok(Kept {
            candidates: vec![top],
            total: 1.0,
            sorted: true,
        });
    }
    let max = check_logits(logits)? as f64;
    let inv_temperature = 1.0 / params.temperature as f64;
    let weigh = |token: u32| Candidate {
        token,
        weight: ((logits[token as usize] as f64 - max) * inv_temperature).exp(),
    };

    // Temperature and top-k. Without top-k, all unmasked tokens in id order.
    let top_k = params.top_k > 0 && params.top_k < logits.len();
    let mut pool: Vec<Candidate> = if top_k {
        ranked_tokens(logits, params.top_k)
            .into_iter()
            .map(weigh)
            .collect()
    } else {
        (0..logits.len() as u32)
            .filter(|&t| logits[t as usize] != f32::NEG_INFINITY)
            .map(weigh)
            .collect()
    };
    pool.retain(|c| c.weight > 0.0);
    let total: f64 = pool.iter().map(|c| c.weight).sum();
    let mut sorted = top_k;

    // Min-p keeps the tokens weighing at least `min_p` (the top one weighs 1): a rank-order
    // prefix, whose intersection with top-p's prefix is the same whichever is cut first, as long
    // as top-p's threshold comes from the mass before min-p (HF's order). Cutting it first
    // leaves less to sort.
    if params.min_p > 0.0 {
        let threshold = params.min_p as f64;
        pool.retain(|c| c.weight >= threshold);
    }

    if params.top_p < 1.0 {
        // Keep a token while the mass ranked strictly before it is below `top_p` of the total:
        // the smallest prefix reaching `top_p` (HF: "remove if this token and all less probable
        // ones weigh <= 1 - top_p", read from the top). The first token always stays.
        let threshold = params.top_p as f64 * total;
        if !sorted {
            // Enough of the order that the walk stops inside it.
            pool = sufficient_prefix(&pool, logits, threshold, |p| {
                keep_top_p(p, threshold) < p.len()
            });
        }
        let count = keep_top_p(&pool, threshold);
        pool.truncate(count);
        sorted = true;
    } else if params.min_p > 0.0 && !sorted {
        sort_by_rank(&mut pool, logits);
        sorted = true;
    }

    // With no filter besides temperature, the kept mass is the total (summed in id order, and
    // the pool stays unsorted); otherwise it is summed over the kept set in rank order.
    let filtered = top_k || params.top_p < 1.0 || params.min_p > 0.0;
    let kept_total = if filtered {
        pool.iter().map(|c| c.weight).sum()
    } else {
        total
    };
    Ok(Kept {
        candidates: pool,
        total: kept_total,
        sorted,
    })
}

/// How many leading candidates top-p keeps: those with the mass before them below `threshold`.
fn keep_top_p(ranked: &[Candidate], threshold: f64) -> usize {
    let mut before = 0.0;
    let count = ranked
        .iter()
        .take_while(|c| {
            let keep = before < threshold;
            before += c.weight;
            keep
        })
        .count();
    count.max(1)
}

/// The first candidate at which the cumulative weight exceeds `target`; None if none does.
fn walk(ranked: &[Candidate], target: f64) -> Option<u32> {
    let mut cumulative = 0.0;
    ranked
        .iter()
        .find(|c| {
            cumulative += c.weight;
            target < cumulative
        })
        .map(|c| c.token)
}

/// The shortest rank-order prefix `{weight >= c}` (c from [`CUTOFFS`]) whose mass exceeds `mass`
/// and that `enough` accepts, sorted; the whole pool, sorted, if none is. Weights fall along the
/// rank order, so each such set is a prefix of it, and a walk over it does exactly what a walk
/// over the full sort does until it runs off its end.
fn sufficient_prefix(
    pool: &[Candidate],
    logits: &[f32],
    mass: f64,
    enough: impl Fn(&[Candidate]) -> bool,
) -> Vec<Candidate> {
    for cutoff in CUTOFFS {
        let subset: Vec<Candidate> = pool
            .iter()
            .copied()
            .filter(|c| c.weight >= cutoff)
            .collect();
        if subset.len() == pool.len() {
            break;
        }
        if subset.iter().map(|c| c.weight).sum::<f64>() > mass {
            let prefix = sorted(&subset, logits);
            if enough(&prefix) {
                return prefix;
            }
        }
    }
    sorted(pool, logits)
}

fn sorted(pool: &[Candidate], logits: &[f32]) -> Vec<Candidate> {
    let mut all = pool.to_vec();
    sort_by_rank(&mut all, logits);
    all
}

fn sort_by_rank(candidates: &mut [Candidate], logits: &[f32]) {
    candidates.sort_unstable_by_key(|c| rank_key(logits[c.token as usize], c.token));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits whose softmax at temperature 1 is exactly proportional to `probs`.
    fn logits_for(probs: &[f64]) -> Vec<f32> {
        probs
            .iter()
            .map(|&p| {
                if p == 0.0 {
                    f32::NEG_INFINITY
                } else {
                    p.ln() as f32
                }
            })
            .collect()
    }

    fn kept(probs: &[f64], f: impl FnOnce(&mut SamplingParams)) -> Vec<u32> {
        let mut params = SamplingParams::default();
        f(&mut params);
        filtered_distribution(&logits_for(probs), &params)
            .unwrap()
            .tokens()
    }

    // Token:              0     1     2     3     4     5
    const PROBS: [f64; 6] = [0.05, 0.40, 0.10, 0.25, 0.15, 0.05];
    // Rank order: 1 (.40), 3 (.25), 4 (.15), 2 (.10), 0 (.05), 5 (.05, ties 0: higher id last).

    #[test]
    fn no_filter_keeps_every_token_in_rank_order() {
        assert_eq!(kept(&PROBS, |_| {}), vec![1, 3, 4, 2, 0, 5]);
        let dist = filtered_distribution(&logits_for(&PROBS), &SamplingParams::default()).unwrap();
        for (token, p) in dist.probabilities() {
            assert!((p - PROBS[token as usize]).abs() < 1e-7, "{token}: {p}");
        }
    }

    #[test]
    fn top_k_keeps_exactly_k_tokens_with_ties_to_the_lower_id() {
        assert_eq!(kept(&PROBS, |p| p.top_k = 1), vec![1]);
        assert_eq!(kept(&PROBS, |p| p.top_k = 3), vec![1, 3, 4]);
        assert_eq!(
            kept(&PROBS, |p| p.top_k = 5),
            vec![1, 3, 4, 2, 0],
            "0 and 5 tie; 0 wins"
        );
        assert_eq!(kept(&PROBS, |p| p.top_k = 6), vec![1, 3, 4, 2, 0, 5]);
        assert_eq!(kept(&PROBS, |p| p.top_k = 1000), vec![1, 3, 4, 2, 0, 5]);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
        // Cumulative in rank order: .40, .65, .80, .90, .95, 1.0.
        assert_eq!(kept(&PROBS, |p| p.top_p = 0.30), vec![1]);
        assert_eq!(kept(&PROBS, |p| p.top_p = 0.41), vec![1, 3]);
        assert_eq!(kept(&PROBS, |p| p.top_p = 0.70), vec![1, 3, 4]);
        assert_eq!(kept(&PROBS, |p| p.top_p = 0.85), vec![1, 3, 4, 2]);
        assert_eq!(kept(&PROBS, |p| p.top_p = 0.97), vec![1, 3, 4, 2, 0, 5]);
        assert_eq!(kept(&PROBS, |p| p.top_p = f32::MIN_POSITIVE), vec![1]);
    }

    #[test]
    fn top_p_applies_to_the_distribution_renormalised_after_top_k() {
        // Top-3 renormalised: .40/.80 = .5, .25/.80 = .3125, .15/.80 = .1875.
        assert_eq!(kept(&PROBS, |p| (p.top_k, p.top_p) = (3, 0.45)), vec![1]);
        assert_eq!(kept(&PROBS, |p| (p.top_k, p.top_p) = (3, 0.55)), vec![1, 3]);
        assert_eq!(
            kept(&PROBS, |p| (p.top_k, p.top_p) = (3, 0.85)),
            vec![1, 3, 4]
        );
        // Without top-k, 0.85 would also keep token 2.
        assert_eq!(kept(&PROBS, |p| p.top_p = 0.85), vec![1, 3, 4, 2]);
    }

    #[test]
    fn min_p_drops_tokens_below_a_fraction_of_the_top_one() {
        // Thresholds: .40 * min_p.
        assert_eq!(
            kept(&PROBS, |p| p.min_p = 0.5),
            vec![1, 3],
            ".25 >= .20 > .15"
        );
        assert_eq!(
            kept(&PROBS, |p| p.min_p = 0.3),
            vec![1, 3, 4],
            ".15 >= .12 > .10"
        );
        assert_eq!(
            kept(&PROBS, |p| p.min_p = 0.2),
            vec![1, 3, 4, 2],
            ".10 >= .08 > .05"
        );
        assert_eq!(kept(&PROBS, |p| p.min_p = 0.1), vec![1, 3, 4, 2, 0, 5]);
        assert_eq!(kept(&PROBS, |p| p.min_p = 1.0), vec![1]);
        assert_eq!(
            kept(&[0.5, 0.5], |p| p.min_p = 1.0),
            vec![0, 1],
            "equal to the top is kept"
        );
    }

    #[test]
    fn min_p_comes_after_top_p_as_in_transformers() {
        let probs = [0.30, 0.25, 0.20, 0.15, 0.10];
        // min-p 0.45 alone (threshold .135) keeps {0, 1, 2, 3}.
        assert_eq!(kept(&probs, |p| p.min_p = 0.45), vec![0, 1, 2, 3]);
        // HF order: top-p 0.6 keeps {0, 1, 2} (mass before token 2: .55 < .6), min-p keeps all
        // three. The other order would renormalise over {0, 1, 2, 3} (.90) first, where the mass
        // before token 2 is .61, and keep only {0, 1}.
        assert_eq!(
            kept(&probs, |p| (p.top_p, p.min_p) = (0.6, 0.45)),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn temperature_sharpens_or_flattens_before_the_filters() {
        // At T = 0.5, probabilities go as p^2: .16, .0625, .0225, .01, .0025, .0025 over .26.
        let mut params = SamplingParams {
            temperature: 0.5,
            ..Default::default()
        };
        let dist = filtered_distribution(&logits_for(&PROBS), &params).unwrap();
        let total: f64 = PROBS.iter().map(|p| p * p).sum();
        for (token, p) in dist.probabilities() {
            let want = PROBS[token as usize].powi(2) / total;
            assert!((p - want).abs() < 1e-6, "{token}: {p}, want {want}");
        }
        // .16/.26 = .615 alone reaches top-p .6 at T = 0.5, not at T = 1 (.40).
        params.top_p = 0.6;
        let dist = filtered_distribution(&logits_for(&PROBS), &params).unwrap();
        assert_eq!(dist.tokens(), vec![1]);
    }

    fn cand(token: u32, weight: f64) -> Candidate {
        Candidate { token, weight }
    }

    #[test]
    fn a_tiny_temperature_leaves_only_the_top_token_and_no_nan() {
        let params = SamplingParams {
            temperature: 1e-30,
            ..Default::default()
        };
        let dist = filtered_distribution(&[1.0, 3.0, 2.999, -5.0], &params).unwrap();
        assert_eq!(
            dist,
            Distribution {
                candidates: vec![cand(1, 1.0)],
                total: 1.0
            }
        );
    }

    #[test]
    fn greedy_parameters_give_the_argmax_whatever_the_filters() {
        let params = SamplingParams {
            top_k: 3,
            top_p: 0.1,
            min_p: 0.9,
            ..SamplingParams::greedy()
        };
        let dist = filtered_distribution(&[0.0, 2.0, 2.0, 1.0], &params).unwrap();
        assert_eq!(dist.tokens(), vec![1]);
    }

    #[test]
    fn masked_tokens_are_never_candidates() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        let dist = filtered_distribution(&logits, &SamplingParams::default()).unwrap();
        assert_eq!(
            dist.probabilities().collect::<Vec<_>>(),
            vec![(1, 0.5), (3, 0.5)]
        );
    }

    #[test]
    fn bad_logits_and_parameters_are_errors() {
        let params = SamplingParams::default();
        let nan = filtered_distribution(&[0.0, f32::NAN], &params);
        assert_eq!(nan, Err(SamplingError::NanLogit { token: 1 }));
        let inf = filtered_distribution(&[f32::INFINITY, 0.0], &params);
        assert_eq!(inf, Err(SamplingError::InfiniteLogit { token: 0 }));
        assert_eq!(
            filtered_distribution(&[], &params),
            Err(SamplingError::EmptyLogits)
        );
        let bad = SamplingParams {
            top_p: 0.0,
            ..params
        };
        assert_eq!(
            filtered_distribution(&[0.0], &bad),
            Err(SamplingError::InvalidTopP(0.0))
        );
    }

    #[test]
    fn draw_walks_the_cumulative_distribution() {
        let dist = Distribution {
            candidates: vec![cand(7, 2.0), cand(2, 1.0), cand(9, 1.0)],
            total: 4.0,
        };
        assert_eq!(draw(&dist, 0.0), 7);
        assert_eq!(draw(&dist, 0.4999), 7);
        assert_eq!(draw(&dist, 0.5), 2);
        assert_eq!(draw(&dist, 0.7499), 2);
        assert_eq!(draw(&dist, 0.75), 9);
        assert_eq!(draw(&dist, 1.0 - f64::EPSILON / 2.0), 9);
        // A total a hair above the walked sum (rounding) still gives a token: the last.
        let short = Distribution {
            candidates: vec![cand(4, 1.0), cand(5, 0.9999999)],
            total: 2.0,
        };
        assert_eq!(draw(&short, 0.99999999), 5);
    }

    /// The definition, with nothing clever: sort everything, then cut.
    fn naive(logits: &[f32], p: &SamplingParams) -> (Vec<u32>, f64) {
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        ids.sort_by(|&a, &b| {
            logits[b as usize]
                .partial_cmp(&logits[a as usize])
                .unwrap()
                .then(a.cmp(&b))
        });
        let max = logits[ids[0] as usize] as f64;
        let mut w: Vec<(u32, f64)> = ids
            .into_iter()
            .map(|t| {
                (
                    t,
                    ((logits[t as usize] as f64 - max) / p.temperature as f64).exp(),
                )
            })
            .filter(|&(_, w)| w > 0.0)
            .collect();
        if p.top_k > 0 {
            w.truncate(p.top_k);
        }
        let total: f64 = w.iter().map(|x| x.1).sum();
        if p.top_p < 1.0 {
            let mut before = 0.0;
            let mut n = 0;
            while n < w.len() && before < p.top_p as f64 * total {
                before += w[n].1;
                n += 1;
            }
            w.truncate(n.max(1));
        }
        let min_weight = p.min_p as f64 * w[0].1;
        w.retain(|&(_, x)| x >= min_weight);
        let kept: f64 = w.iter().map(|x| x.1).sum();
        (w.into_iter().map(|x| x.0).collect(), kept)
    }

    /// Reproducible pseudo-random logits with a heavy head and a long tail, like a model's.
    fn vocab_logits(n: usize, seed: u64) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let u = super::super::rng::uniform(seed, i);
                let v = super::super::rng::uniform(seed ^ 0x5555, i);
                (8.0 * u.powi(6) + 2.0 * v - 1.0) as f32
            })
            .collect()
    }

    #[test]
    fn the_pruned_filters_equal_the_naive_full_sort() {
        let grid = [
            SamplingParams::default(),
            SamplingParams {
                temperature: 0.3,
                ..Default::default()
            },
            SamplingParams {
                temperature: 3.0,
                top_p: 0.9,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.5,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.99,
                ..Default::default()
            },
            SamplingParams {
                min_p: 0.05,
                ..Default::default()
            },
            SamplingParams {
                min_p: 0.9,
                top_p: 0.95,
                ..Default::default()
            },
            SamplingParams {
                top_k: 40,
                top_p: 0.8,
                min_p: 0.02,
                temperature: 0.7,
                seed: 0,
            },
            SamplingParams {
                top_k: 5000,
                temperature: 1.3,
                ..Default::default()
            },
        ];
        for (i, params) in grid.iter().enumerate() {
            for seed in 0..3 {
                let logits = vocab_logits(20_000, seed);
                let dist = filtered_distribution(&logits, params).unwrap();
                let (want, want_total) = naive(&logits, params);
                assert_eq!(dist.tokens(), want, "grid {i} seed {seed}");
                assert!(
                    (dist.total - want_total).abs() <= 1e-9 * want_total,
                    "grid {i} seed {seed}"
                );
            }
        }
    }

    #[test]
    fn the_sampler_draws_bit_for_bit_what_draw_does_over_the_full_distribution() {
        let grid = [
            SamplingParams::default(),
            SamplingParams {
                temperature: 0.4,
                ..Default::default()
            },
            SamplingParams {
                temperature: 2.5,
                ..Default::default()
            },
            SamplingParams {
                top_p: 0.7,
                ..Default::default()
            },
            SamplingParams {
                min_p: 0.1,
                ..Default::default()
            },
            SamplingParams {
                top_k: 50,
                ..Default::default()
            },
        ];
        let logits = vocab_logits(20_000, 9);
        for params in &grid {
            let dist = filtered_distribution(&logits, params).unwrap();
            for step in 0..200 {
                let u = super::super::rng::uniform(1, step);
                assert_eq!(
                    draw_filtered(&logits, params, u).unwrap(),
                    draw(&dist, u),
                    "{params:?} u = {u}"
                );
            }
            // The edges of [0, 1).
            for u in [0.0, 1.0 - f64::EPSILON / 2.0] {
                assert_eq!(
                    draw_filtered(&logits, params, u).unwrap(),
                    draw(&dist, u),
                    "{params:?} u = {u}"
                );
            }
        }
    }

    #[test]
    fn a_sufficient_prefix_is_a_prefix_of_the_full_sort() {
        // A peaked distribution: a walk to half the mass needs only the head.
        let logits: Vec<f32> = vocab_logits(20_000, 4).iter().map(|l| l * 3.0).collect();
        let kept = apply_filters(&logits, &SamplingParams::default()).unwrap();
        assert!(!kept.sorted);
        let full = sorted(&kept.candidates, &logits);
        let target = 0.5 * kept.total;
        let prefix = sufficient_prefix(&kept.candidates, &logits, target, |p| {
            walk(p, target).is_some()
        });
        assert!(
            prefix.len() < full.len() / 10,
            "{} of {}",
            prefix.len(),
            full.len()
        );
        assert_eq!(prefix[..], full[..prefix.len()]);
        assert_eq!(walk(&prefix, target), walk(&full, target));
        // A target past the head's mass needs more of the order, up to all of it.
        let all = sufficient_prefix(&kept.candidates, &logits, kept.total, |p| {
            walk(p, kept.total).is_some()
        });
        assert_eq!(all, full);
    }
}
