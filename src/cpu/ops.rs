//! Elementwise and row-wise reference ops: embedding lookup, RMSNorm, SwiGLU, residual add.
//! Plain f32 loops written to be obviously right; they are the oracles for the GPU kernels.

use half::bf16;
use rayon::prelude::*;

/// Rows `tokens[t]` of `table: [vocab, dim]`, widened to f32 -> `[n, dim]`.
/// The caller has checked every token is below `vocab`.
pub fn embedding(table: &[bf16], dim: usize, tokens: &[u32]) -> Vec<f32> {
    let mut out = vec![0f32; tokens.len() * dim];
    for (row, &tok) in out.chunks_mut(dim).zip(tokens) {
        let src = &table[tok as usize * dim..(tok as usize + 1) * dim];
        super::matmul::bf16_to_f32(src, row);
    }
    out
}

/// RMSNorm per row, as transformers' `MistralRMSNorm` in f32:
/// `y = weight * x / sqrt(mean(x^2) + eps)`. `x: [n, dim]`, `weight: [dim]`.
/// The sum of squares is accumulated in f64 so the reference carries no reduction error.
pub fn rmsnorm(x: &[f32], weight: &[bf16], eps: f32) -> Vec<f32> {
    let dim = weight.len();
    assert!(
        dim > 0 && x.len() % dim == 0,
        "x has {} values, not rows of {dim}",
        x.len()
    );
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .for_each(|(y, x)| {
            let mean_sq = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
            let inv_rms = (1.0 / (mean_sq + eps as f64).sqrt()) as f32;
            for ((y, &x), w) in y.iter_mut().zip(x).zip(weight) {
                *y = w.to_f32() * (x * inv_rms);
            }
        });
    out
}

/// SwiGLU: `silu(gate) * up`, elementwise; `silu(g) = g * sigmoid(g)`.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    gate.par_iter()
        .zip(up)
        .map(|(&g, &u)| silu(g) * u)
        .collect()
}

pub fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// `acc += x`, elementwise (the residual stream).
pub fn add_in_place(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len());
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_normalises_each_row_to_unit_rms_times_weight() {
        let w: Vec<bf16> = [1.0, 2.0, 0.5, -1.0]
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        let x = [3.0f32, -4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let y = rmsnorm(&x, &w, 0.0);
        // Row 0: rms = sqrt(25/4) = 2.5.
        let expect = [1.2, -3.2, 0.0, 0.0, 1.0, 2.0, 0.5, -1.0];
        for (a, b) in y.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn silu_matches_its_definition_and_saturates_without_nan() {
        assert_eq!(silu(0.0), 0.0);
        assert!((silu(1.0) - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-7);
        assert_eq!(silu(-200.0), -0.0);
        assert_eq!(silu(200.0), 200.0);
        assert_eq!(
            swiglu(&[1.0, -200.0], &[2.0, 3.0]),
            vec![2.0 * silu(1.0), -0.0]
        );
    }
}
