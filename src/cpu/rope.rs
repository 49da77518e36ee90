//! Rotary position embedding for both q/k row orders.
//!
//! Frequencies `inv_freq[i] = theta^(-2i / head_dim)` and angles `pos * inv_freq[i]` are computed
//! in f64 and only cos/sin are rounded to f32, so a position near 128k is as exact as f32 allows
//! (an f32 angle of ~1e5 radians is off by up to ~4e-3).

use rayon::prelude::*;

use crate::model::RopeLayout;

/// `theta^(-2i / head_dim)` for `i in 0..head_dim / 2`.
pub fn rope_inv_freq(head_dim: usize, theta: f64) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
        .collect()
}

/// `(cos, sin)` of `pos * inv_freq[i]` for every pair `i`, rounded to f32 from f64.
pub fn rope_cos_sin(pos: usize, inv_freq: &[f64]) -> Vec<(f32, f32)> {
    inv_freq
        .iter()
        .map(|&f| {
            let angle = pos as f64 * f;
            (angle.cos() as f32, angle.sin() as f32)
        })
        .collect()
}

/// The pair of dimensions that frequency `i` rotates within one head.
pub fn rope_pair(layout: RopeLayout, i: usize, head_dim: usize) -> (usize, usize) {
    match layout {
        RopeLayout::Interleaved => (2 * i, 2 * i + 1),
        RopeLayout::RotateHalf => (i, i + head_dim / 2),
    }
}

/// Rotates every head of every row in place. `x: [n, n_heads * head_dim]`; row `t` is at
/// position `positions[t]`. Pair `(a, b)` becomes `(a cos - b sin, b cos + a sin)`.
pub fn rope(x: &mut [f32], head_dim: usize, positions: &[usize], theta: f64, layout: RopeLayout) {
    assert!(head_dim % 2 == 0, "head_dim {head_dim} is odd");
    assert!(!positions.is_empty() && x.len() % positions.len() == 0);
    let row_len = x.len() / positions.len();
    assert!(
        row_len % head_dim == 0,
        "row of {row_len} is not whole heads of {head_dim}"
    );
    let inv_freq = rope_inv_freq(head_dim, theta);
    x.par_chunks_mut(row_len)
        .zip(positions)
        .for_each(|(row, &pos)| {
            let cos_sin = rope_cos_sin(pos, &inv_freq);
            for head in row.chunks_mut(head_dim) {
                for (i, &(c, s)) in cos_sin.iter().enumerate() {
                    let (ia, ib) = rope_pair(layout, i, head_dim);
                    let (a, b) = (head[ia], head[ib]);
                    head[ia] = a * c - b * s;
                    head[ib] = b * c + a * s;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// head_dim 4, theta 1e6: inv_freq = [1, 1e-3]. A unit vector on the first member of each
    /// pair rotates to (cos, sin) of pos * inv_freq, in the pair positions of each layout.
    #[test]
    fn pins_pairs_and_frequencies_of_both_layouts_by_hand() {
        let pos = 3usize;
        let (c0, s0, c1, s1) = (
            3f64.cos() as f32,
            3f64.sin() as f32,
            3e-3f64.cos() as f32,
            3e-3f64.sin() as f32,
        );
        let mut inter = vec![1.0, 0.0, 1.0, 0.0];
        rope(&mut inter, 4, &[pos], 1e6, RopeLayout::Interleaved);
        assert_eq!(inter, vec![c0, s0, c1, s1]);
        let mut half = vec![1.0, 1.0, 0.0, 0.0];
        rope(&mut half, 4, &[pos], 1e6, RopeLayout::RotateHalf);
        assert_eq!(half, vec![c0, c1, s0, s1]);
    }

    /// HF's permute_for_rope moves interleaved row 2i + p to p * half + i; rotating the permuted
    /// vector must give the permuted rotation, at a position where f32 angles would be wrong.
    #[test]
    fn layouts_agree_on_permuted_heads_at_a_large_position() {
        let (head_dim, n_heads, half) = (128, 3, 64);
        let inter: Vec<f32> = (0..n_heads * head_dim)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let perm =
            |r: usize| (r / head_dim) * head_dim + (r % head_dim % 2) * half + (r % head_dim) / 2;
        let mut rh = vec![0f32; inter.len()];
        for r in 0..inter.len() {
            rh[perm(r)] = inter[r];
        }
        let pos = 131_000;
        let mut a = inter.clone();
        rope(&mut a, head_dim, &[pos], 1e6, RopeLayout::Interleaved);
        rope(&mut rh, head_dim, &[pos], 1e6, RopeLayout::RotateHalf);
        for r in 0..a.len() {
            assert_eq!(a[r], rh[perm(r)], "row {r}");
        }
        // And the angle is the f64 one: pair 0 turns by exactly pos radians.
        let (c, s) = ((pos as f64).cos() as f32, (pos as f64).sin() as f32);
        assert_eq!(a[0], inter[0] * c - inter[1] * s);
        assert_eq!(a[1], inter[1] * c + inter[0] * s);
    }
}
