//! `y = x · Wᵀ` with bf16 weights `W: [out, in]` (PyTorch's Linear layout) and f32 activations.
//!
//! Weights are converted to f32 one row at a time, on the fly. Tokens are processed in blocks:
//! each weight row is read once per block of `TOKEN_BLOCK` tokens rather than once per token,
//! while the block's activations stay in cache. Each output is one dot product whose summation
//! order depends only on `in` (not on the block or the thread), so a token's result is the same
//! bit for bit whether it is computed alone (decode) or inside a long prompt (prefill).

use half::bf16;
use rayon::prelude::*;

/// Tokens per pass over the weights: 64 rows of 5120 f32 = 1.3 MiB of activations.
const TOKEN_BLOCK: usize = 64;
/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `x: [n, in]`, `w: [out, in]` -> `[n, out]`.
pub fn matmul(x: &[f32], w: &[bf16], in_dim: usize) -> Vec<f32> {
    assert!(
        in_dim > 0 && x.len() % in_dim == 0,
        "x has {} values, not a multiple of in={in_dim}",
        x.len()
    );
    assert!(
        w.len() % in_dim == 0,
        "w has {} values, not a multiple of in={in_dim}",
        w.len()
    );
    let n = x.len() / in_dim;
    let out_dim = w.len() / in_dim;
    let mut y = vec![0f32; n * out_dim];
    let mut y_t = Vec::new(); // [out, block] for one token block
    for t0 in (0..n).step_by(TOKEN_BLOCK) {
        let tb = TOKEN_BLOCK.min(n - t0);
        let xb = &x[t0 * in_dim..(t0 + tb) * in_dim];
        y_t.clear();
        y_t.resize(out_dim * tb, 0f32);
        y_t.par_chunks_mut(ROWS_PER_TASK * tb)
            .enumerate()
            .for_each_init(
                || vec![0f32; in_dim],
                |w_row, (task, out_chunk)| {
                    for (r, out_row) in out_chunk.chunks_mut(tb).enumerate() {
                        let j = task * ROWS_PER_TASK + r;
                        bf16_to_f32(&w[j * in_dim..(j + 1) * in_dim], w_row);
                        for (t, out) in out_row.iter_mut().enumerate() {
                            *out = dot(w_row, &xb[t * in_dim..(t + 1) * in_dim]);
                        }
                    }
                },
            );
        for j in 0..out_dim {
            for t in 0..tb {
                y[(t0 + t) * out_dim + j] = y_t[j * tb + t];
            }
        }
    }
    y
}

/// Exact widening (bf16 is the top half of an f32).
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

pub fn bf16_to_f32_vec(src: &[bf16]) -> Vec<f32> {
    src.iter().map(|s| s.to_f32()).collect()
}

/// Dot product with sixteen independent partial sums (so it vectorises and the additions
/// overlap), then summed in order. The order depends only on the length, not on the instruction
/// set: each lane is its own chain of IEEE multiplies and adds (Rust never fuses them into
/// FMAs), so the AVX2 build below gives the same bits as the portable one.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let whole = a.len() / LANES * LANES;
    for (ca, cb) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        for k in 0..LANES {
            acc[k] += ca[k] * cb[k];
        }
    }
    let mut tail = 0f32;
    for i in whole..a.len() {
        tail += a[i] * b[i];
    }
    // A plain left-to-right sum: a reduction tree here makes LLVM pick 2-wide vectors.
    acc.iter().fold(tail, |s, &x| s + x)
}

/// `y += a * x`, elementwise (so the result does not depend on the vector width either).
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { axpy_avx2(y, a, x) };
    }
    axpy_plain(y, a, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_plain(y, a, x)
}

#[inline(always)]
fn axpy_plain(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_double_precision_product_across_block_edges() {
        let (n, k, m) = (TOKEN_BLOCK + 3, 37, 2 * ROWS_PER_TASK + 5); // ragged everywhere
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 113) as f32 - 56.0) / 50.0)
            .collect();
        let w: Vec<bf16> = (0..m * k)
            .map(|i| bf16::from_f32(((i * 104729 % 97) as f32 - 48.0) / 40.0))
            .collect();
        let y = matmul(&x, &w, k);
        for t in 0..n {
            for j in 0..m {
                let exact: f64 = (0..k)
                    .map(|i| x[t * k + i] as f64 * w[j * k + i].to_f64())
                    .sum();
                assert!(
                    (y[t * m + j] as f64 - exact).abs() < 1e-5,
                    "({t},{j}): {} vs {exact}",
                    y[t * m + j]
                );
            }
        }
        // A token alone gives the same bits as inside the block.
        let last = matmul(&x[(n - 1) * k..], &w, k);
        assert_eq!(&last[..], &y[(n - 1) * m..]);
    }
}
