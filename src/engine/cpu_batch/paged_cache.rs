//! The CPU backend's paged KV cache: per layer, K and V in f32 as `[num_blocks, block_size,
//! kv_dim]`, preallocated once. A sequence's position `p` lives in block `table[p / block_size]`,
//! slot `p % block_size` (the layout the CUDA cache uses, in f32 instead of bf16).

use half::bf16;

use crate::cpu::fp8::round_row_through_e4m3;

pub struct PagedKvCache {
    block_size: usize,
    num_blocks: usize,
    kv_dim: usize,
    /// Per layer: (k, v), each `[num_blocks * block_size, kv_dim]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    rounding: Rounding,
}

/// What a write keeps of the values: the f32 reference keeps them all; the others model the
/// GPU caches' storage, to measure what it costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rounding {
    None,
    Bf16,
    /// Each row of this many values (one KV head of one token) as its e4m3 codes times its
    /// scale ([`crate::cpu::fp8`]).
    Fp8E4m3 { head_dim: usize },
}

impl PagedKvCache {
    pub fn new(n_layers: usize, kv_dim: usize, block_size: usize, num_blocks: usize) -> Self {
        assert!(block_size > 0 && kv_dim > 0, "block_size and kv_dim must be positive");
        let slots = num_blocks * block_size * kv_dim;
        PagedKvCache {
            block_size,
            num_blocks,
            kv_dim,
            layers: vec![(vec![0.0; slots], vec![0.0; slots]); n_layers],
            rounding: Rounding::None,
        }
    }

    /// From now on, values written are rounded as an FP8 e4m3 cache with one scale per
    /// `head_dim` values (a KV head of a token) stores them.
    pub fn store_fp8_e4m3(&mut self, head_dim: usize) {
        assert!(head_dim > 0 && self.kv_dim % head_dim == 0, "head_dim {head_dim} must divide kv_dim {}", self.kv_dim);
        self.rounding = Rounding::Fp8E4m3 { head_dim };
    }

    /// From now on, values written are rounded to bf16, as the GPU's default cache stores them.
    pub fn store_bf16(&mut self) {
        self.rounding = Rounding::Bf16;
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Row offset of position `pos` of the sequence whose blocks are `table`.
    fn slot(&self, table: &[u32], pos: usize) -> usize {
        (table[pos / self.block_size] as usize * self.block_size + pos % self.block_size) * self.kv_dim
    }

    /// Stores `k`, `v: [n, kv_dim]` of `layer` at positions `start..start + n`.
    pub fn write(&mut self, layer: usize, table: &[u32], start: usize, k: &[f32], v: &[f32]) {
        let d = self.kv_dim;
        assert_eq!(k.len(), v.len());
        let offsets: Vec<usize> = (0..k.len() / d).map(|t| self.slot(table, start + t)).collect();
        let (kc, vc) = &mut self.layers[layer];
        for (t, off) in offsets.into_iter().enumerate() {
            kc[off..off + d].copy_from_slice(&k[t * d..(t + 1) * d]);
            vc[off..off + d].copy_from_slice(&v[t * d..(t + 1) * d]);
            for row in [&mut kc[off..off + d], &mut vc[off..off + d]] {
                match self.rounding {
                    Rounding::None => {}
                    Rounding::Bf16 => row.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
                    Rounding::Fp8E4m3 { head_dim } => row.chunks_exact_mut(head_dim).for_each(round_row_through_e4m3),
                }
            }
        }
    }

    /// K and V of `layer` at positions `0..len`, gathered contiguous: `[len, kv_dim]` each (the
    /// layout [`crate::cpu::attention`] reads, so the values and their order are those of a
    /// contiguous [`crate::cpu::KvCache`]).
    pub fn gather(&self, layer: usize, table: &[u32], len: usize) -> (Vec<f32>, Vec<f32>) {
        let d = self.kv_dim;
        let (kc, vc) = &self.layers[layer];
        let mut k = Vec::with_capacity(len * d);
        let mut v = Vec::with_capacity(len * d);
        for pos in 0..len {
            let off = self.slot(table, pos);
            k.extend_from_slice(&kc[off..off + d]);
            v.extend_from_slice(&vc[off..off + d]);
        }
        (k, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_through_the_block_table_and_sequences_do_not_overlap() {
        let mut cache = PagedKvCache::new(2, 2, 3, 4);
        let row = |x: f32| vec![x, -x];
        // Sequence A in blocks [2, 0], positions 0..5; sequence B in block [1], 0..3.
        let a_k: Vec<f32> = (0..5).flat_map(|p| row(p as f32)).collect();
        let a_v: Vec<f32> = (0..5).flat_map(|p| row(10.0 + p as f32)).collect();
        cache.write(1, &[2, 0], 0, &a_k[..6], &a_v[..6]); // a prefill chunk
        cache.write(1, &[2, 0], 3, &a_k[6..], &a_v[6..]); // then the rest
        let b: Vec<f32> = (0..3).flat_map(|p| row(100.0 + p as f32)).collect();
        cache.write(1, &[1], 0, &b, &b);
        assert_eq!(cache.gather(1, &[2, 0], 5), (a_k.clone(), a_v));
        assert_eq!(cache.gather(1, &[1], 3), (b.clone(), b));
        // Position 3 of A is slot 0 of block 0: row 0 of layer 1's storage.
        assert_eq!(&cache.layers[1].0[..2], &row(3.0)[..]);
        // Layer 0 untouched.
        assert!(cache.layers[0].0.iter().all(|&x| x == 0.0));
    }
}
