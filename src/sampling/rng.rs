//! The portable random draw: the uniform number of step `n` is a pure function of `(seed, n)`.
//!
//! SplitMix64 (Steele, Lea, Flood 2014; Vigna's `splitmix64.c`): the `n`-th output (0-based) of a
//! generator started at state `seed` is `mix(seed + (n + 1) * GAMMA)`, so any step can be drawn
//! without replaying the steps before it: a GPU sampler computes the same number from the same
//! `(seed, n)`, and a request resumed mid-way draws what it would have drawn.

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The `n`-th 64-bit output of SplitMix64 seeded with `seed`.
pub fn splitmix64(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform f64 in `[0, 1)` for step `n`: the top 53 bits of the output, times 2^-53, so every
/// value is exact and 1.0 is never reached.
pub fn uniform(seed: u64, n: u64) -> f64 {
    (splitmix64(seed, n) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_reference_outputs_for_seed_0() {
        // The first outputs of splitmix64.c started at state 0 (also xoshiro's seeding example).
        let expected = [
            0xE220A8397B1DCDAF,
            0x6E789E6AA1B965F4,
            0x06C45D188009454F,
            0xF88BB8A8724C81EC,
        ];
        for (n, want) in expected.into_iter().enumerate() {
            assert_eq!(splitmix64(0, n as u64), want, "output {n}");
        }
    }

    #[test]
    fn a_step_is_the_same_as_running_the_generator_sequentially() {
        let seed = 0xDEAD_BEEF_u64;
        let mut state = seed;
        for n in 0..100 {
            state = state.wrapping_add(GAMMA);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            assert_eq!(splitmix64(seed, n), z ^ (z >> 31));
        }
    }

    #[test]
    fn uniform_stays_in_the_unit_interval_and_looks_uniform() {
        let n = 100_000;
        let mut buckets = [0u32; 10];
        let mut sum = 0.0;
        for i in 0..n {
            let u = uniform(7, i);
            assert!((0.0..1.0).contains(&u), "draw {i} = {u}");
            sum += u;
            buckets[(u * 10.0) as usize] += 1;
        }
        assert!(
            (sum / n as f64 - 0.5).abs() < 0.005,
            "mean {}",
            sum / n as f64
        );
        for (b, &count) in buckets.iter().enumerate() {
            assert!((count as i64 - 10_000).abs() < 500, "bucket {b}: {count}");
        }
    }
}
