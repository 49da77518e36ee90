//! Causal grouped-query attention over a KV cache, in f32.

use rayon::prelude::*;

use super::matmul::{axpy, dot};

#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// `q: [n_q, n_heads, head_dim]` for the tokens at positions `q_start..q_start + n_q`;
/// `k`, `v: [kv_len, n_kv_heads, head_dim]` for positions `0..kv_len`, `kv_len >= q_start + n_q`.
/// Query head `h` reads KV head `h / (n_heads / n_kv_heads)` (transformers' `repeat_kv`), and
/// the query at position `p` attends to positions `0..=p`, scaled by `1 / sqrt(head_dim)`.
/// Returns `[n_q, n_heads, head_dim]`.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], q_start: usize, s: AttentionShape) -> Vec<f32> {
    let AttentionShape {
        n_heads,
        n_kv_heads,
        head_dim,
    } = s;
    assert!(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
    let kv_row = n_kv_heads * head_dim;
    assert_eq!(q.len() % (n_heads * head_dim), 0);
    assert_eq!(k.len(), v.len());
    assert_eq!(k.len() % kv_row, 0);
    let n_q = q.len() / (n_heads * head_dim);
    let kv_len = k.len() / kv_row;
    assert!(
        q_start + n_q <= kv_len,
        "queries reach position {} but the cache holds {kv_len}",
        q_start + n_q
    );
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();

    let mut out = vec![0f32; q.len()];
    out.par_chunks_mut(head_dim)
        .enumerate()
        .for_each_init(Vec::new, |scores, (row, out)| {
            let (t, h) = (row / n_heads, row % n_heads);
            let kvh = h / group;
            let qh = &q[row * head_dim..(row + 1) * head_dim];
            let n_keys = q_start + t + 1; // causal: positions 0..=p
            scores.clear();
            scores.extend((0..n_keys).map(|j| {
                let off = j * kv_row + kvh * head_dim;
                dot(qh, &k[off..off + head_dim]) * scale
            }));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv_sum = 1.0 / sum;
            for (j, &p) in scores.iter().enumerate() {
                let off = j * kv_row + kvh * head_dim;
                let weight = p * inv_sum;
                axpy(out, weight, &v[off..off + head_dim]);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_position_returns_its_own_value_and_heads_share_kv_by_group() {
        let s = AttentionShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 2,
        };
        let q = vec![1.0; 4 * 2];
        let k = vec![0.5, 0.5, -1.0, 2.0];
        let v = vec![1.0, 2.0, 3.0, 4.0];
        let out = attention(&q, &k, &v, 0, s);
        assert_eq!(out, vec![1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0]);
    }

    #[test]
    fn second_position_softmax_weights_match_hand_computation() {
        let s = AttentionShape {
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 2,
        };
        let q = vec![1.0, 0.0];
        let k = vec![0.0, 0.0, 2.0f32.sqrt(), 0.0]; // scores 0 and 1 after the 1/sqrt(2) scale
        let v = vec![0.0, 1.0, 1.0, 0.0];
        let out = attention(&q, &k, &v, 1, s);
        let w1 = 1f32.exp() / (1.0 + 1f32.exp());
        assert!(
            (out[0] - w1).abs() < 1e-6 && (out[1] - (1.0 - w1)).abs() < 1e-6,
            "{out:?}"
        );
    }
}
