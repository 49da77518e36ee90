//! Attention over an FP8 e4m3 KV cache (src/gpu/kernels/attention_e4m3.rs) against
//! cpu::attention over the values the codes stand for, on attention.rs's cases quantised by
//! `to_e4m3`; and the fused RoPE write against rope_write_kv_e4m3.

use crate::attention::{build, new_token_slots, qkv_shape, shapes, Case, BLOCK};
use crate::common::*;
use half::bf16;
use nemo_engine::cpu::attention::{attention, AttentionShape as CpuShape};
use nemo_engine::gpu::kernels::attention::{decode_splits, AttentionShape, DecodeWorkspace};
use nemo_engine::gpu::kernels::attention_e4m3::{attention_decode_e4m3, attention_decode_rope_e4m3, attention_prefill_e4m3, E4m3KvCache};

/// `case`'s cache as an FP8 e4m3 cache would hold it (docs/fp8-kv.md): every slot's head rows
/// quantised by `cpu::fp8::quantize_row_e4m3`, slots no sequence holds left as NaN codes and
/// NaN scales; `want` recomputed by cpu::attention over the values the codes stand for.
#[derive(Clone)]
pub struct E4m3Case {
    pub k_codes: Vec<u8>,
    pub v_codes: Vec<u8>,
    pub k_scales: Vec<f32>,
    pub v_scales: Vec<f32>,
    pub want: Vec<f32>,
}

pub fn to_e4m3(shape: AttentionShape, case: &Case) -> E4m3Case {
    use nemo_engine::cpu::fp8::{e4m3_to_f32, quantize_row_e4m3};
    let AttentionShape { n_heads, n_kv_heads, head_dim, q_stride } = shape;
    let quantise = |cache: &[bf16]| {
        let mut codes = vec![0u8; cache.len()];
        let mut scales = vec![0f32; cache.len() / head_dim];
        let mut values = vec![0f32; cache.len()];
        for (r, row) in cache.chunks_exact(head_dim).enumerate() {
            let at = r * head_dim..(r + 1) * head_dim;
            if row[0].is_nan() {
                codes[at.clone()].fill(POISON_E4M3);
                scales[r] = f32::NAN;
                values[at].fill(f32::NAN);
                continue;
            }
            scales[r] = quantize_row_e4m3(&to_f32(row), &mut codes[at.clone()]);
            for i in at {
                values[i] = e4m3_to_f32(codes[i]) * scales[r];
            }
        }
        (codes, scales, values)
    };
    let (k_codes, k_scales, k) = quantise(&case.k_cache);
    let (v_codes, v_scales, v) = quantise(&case.v_cache);
    let m = &case.meta;
    let kvd = n_kv_heads * head_dim;
    let mut want = Vec::new();
    for s in 0..m.ctx_lens.len() {
        let ctx = m.ctx_lens[s] as usize;
        let (t0, t1) = (m.cu_seqlens_q[s] as usize, m.cu_seqlens_q[s + 1] as usize);
        let slot = |pos: usize| m.block_tables[s * m.max_blocks + pos / BLOCK] as usize * BLOCK + pos % BLOCK;
        let ks: Vec<f32> = (0..ctx).flat_map(|p| k[slot(p) * kvd..(slot(p) + 1) * kvd].to_vec()).collect();
        let vs: Vec<f32> = (0..ctx).flat_map(|p| v[slot(p) * kvd..(slot(p) + 1) * kvd].to_vec()).collect();
        let qs: Vec<f32> = (t0..t1).flat_map(|t| to_f32(&case.q[t * q_stride..t * q_stride + n_heads * head_dim])).collect();
        want.extend(attention(&qs, &ks, &vs, ctx - (t1 - t0), CpuShape { n_heads, n_kv_heads, head_dim }));
    }
    E4m3Case { k_codes, v_codes, k_scales, v_scales, want }
}

/// The FP8 cache's decode (`attention_decode_e4m3`) against cpu::attention over the values its
/// codes stand for (`to_e4m3`), at the bf16 test's contexts.
#[test]
fn attention_decode_e4m3_matches_cpu() {
    let test = "attention_decode_e4m3_matches_cpu";
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(1, 32_768)], vec![(1, 1), (1, 100), (1, 4097), (1, 20_000)]] {
            let case = build(&mut rng, shape, &seqs);
            let e = to_e4m3(shape, &case);
            let meta = case.meta.upload(&gpu, case.n_cache_blocks).unwrap();
            let q = dev(&gpu, &case.q);
            let (kc, vc) = (dev(&gpu, &e.k_codes), dev(&gpu, &e.v_codes));
            let (ks, vs) = (dev(&gpu, &e.k_scales), dev(&gpu, &e.v_scales));
            let mut out = poisoned(&gpu, meta.n_tokens * shape.n_heads * shape.head_dim);
            let splits = decode_splits(132, meta.n_seqs, shape.n_kv_heads, meta.max_ctx);
            let mut ws = DecodeWorkspace::new(&gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
            let cache = E4m3KvCache { k_codes: &kc.as_view(), v_codes: &vc.as_view(), k_scales: &ks.as_view(), v_scales: &vs.as_view() };
            attention_decode_e4m3(&gpu, shape, &meta, &q.as_view(), cache, &mut ws, splits, &mut out.as_view_mut()).unwrap();
            assert_close(&format!("{test} hd {} {:?}", shape.head_dim, seqs), &fetch(&gpu, &out), &e.want, 2e-2, 2e-2);
        }
    }
}

/// The FP8 prefill (`attention_prefill_e4m3`) against cpu::attention over the values its codes
/// stand for, at the bf16 prefill test's prompts: awkward lengths, one past 4k, a chunk over a
/// cached prefix, a batch.
#[test]
fn attention_prefill_e4m3_matches_cpu() {
    let test = "attention_prefill_e4m3_matches_cpu";
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [
            vec![(1, 1)],
            vec![(17, 17)],
            vec![(100, 100)],
            vec![(4100, 4100)],
            vec![(200, 700)],
            vec![(5, 5), (64, 300), (129, 129), (1, 1000)],
        ] {
            let case = build(&mut rng, shape, &seqs);
            let e = to_e4m3(shape, &case);
            let meta = case.meta.upload(&gpu, case.n_cache_blocks).unwrap();
            let q = dev(&gpu, &case.q);
            let (kc, vc) = (dev(&gpu, &e.k_codes), dev(&gpu, &e.v_codes));
            let (ks, vs) = (dev(&gpu, &e.k_scales), dev(&gpu, &e.v_scales));
            let mut out = poisoned(&gpu, meta.n_tokens * shape.n_heads * shape.head_dim);
            let cache = E4m3KvCache { k_codes: &kc.as_view(), v_codes: &vc.as_view(), k_scales: &ks.as_view(), v_scales: &vs.as_view() };
            attention_prefill_e4m3(&gpu, shape, &meta, &q.as_view(), cache, &mut out.as_view_mut()).unwrap();
            assert_close(&format!("{test} hd {} {:?}", shape.head_dim, seqs), &fetch(&gpu, &out), &e.want, 2e-2, 2e-2);
        }
    }
}

/// `attention_decode_rope_e4m3` (an FP8 decode layer without a RoPE launch) against
/// rope_write_kv_e4m3 followed by `attention_decode_e4m3`: the same output, codes and scales bit
/// for bit, the qkv rows left unrotated; both layouts, single and batched sequences.
#[test]
fn attention_decode_e4m3_rope_equals_rope_write_kv_e4m3_then_decode() {
    use nemo_engine::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv_e4m3, E4m3KvViews, RopeShape};
    use nemo_engine::model::RopeLayout;
    let test = "attention_decode_e4m3_rope_equals_rope_write_kv_e4m3_then_decode";
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes().map(qkv_shape) {
        let table = rope_cos_sin_table(&gpu, 32_768, shape.head_dim, 1e6).unwrap();
        for layout in [RopeLayout::Interleaved, RopeLayout::RotateHalf] {
            for seqs in [vec![(1, 1)], vec![(1, 4097)], vec![(1, 1), (1, 100), (1, 4097), (1, 20_000)]] {
                let case = build(&mut rng, shape, &seqs);
                let e = to_e4m3(shape, &case);
                let meta = case.meta.upload(&gpu, case.n_cache_blocks).unwrap();
                let (positions, slots) = new_token_slots(&case);
                let splits = decode_splits(132, meta.n_seqs, shape.n_kv_heads, meta.max_ctx);
                let n_out = meta.n_seqs * shape.n_heads * shape.head_dim;
                let what = format!("attention_decode_e4m3 {layout:?} hd {} {seqs:?}", shape.head_dim);
                let rope_shape = RopeShape { n_heads: shape.n_heads, n_kv_heads: shape.n_kv_heads, head_dim: shape.head_dim, layout };
                let mut ws = DecodeWorkspace::new(&gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
                // Separate launches.
                let mut qkv = dev(&gpu, &case.q);
                let (mut kc, mut vc, mut ks, mut vs) = (dev(&gpu, &e.k_codes), dev(&gpu, &e.v_codes), dev(&gpu, &e.k_scales), dev(&gpu, &e.v_scales));
                let (pos_dev, slots_dev) = (dev(&gpu, &positions), dev(&gpu, &slots));
                let views = E4m3KvViews { k_codes: &mut kc.as_view_mut(), v_codes: &mut vc.as_view_mut(), k_scales: &mut ks.as_view_mut(), v_scales: &mut vs.as_view_mut() };
                rope_write_kv_e4m3(&gpu, rope_shape, &table, &mut qkv.as_view_mut(), &pos_dev.as_view(), &slots_dev.as_view(), views).unwrap();
                let mut want = poisoned(&gpu, n_out);
                let cache = E4m3KvCache { k_codes: &kc.as_view(), v_codes: &vc.as_view(), k_scales: &ks.as_view(), v_scales: &vs.as_view() };
                attention_decode_e4m3(&gpu, shape, &meta, &qkv.as_view(), cache, &mut ws, splits, &mut want.as_view_mut()).unwrap();
                // Fused.
                let qkv_f = dev(&gpu, &case.q);
                let (mut kc_f, mut vc_f, mut ks_f, mut vs_f) = (dev(&gpu, &e.k_codes), dev(&gpu, &e.v_codes), dev(&gpu, &e.k_scales), dev(&gpu, &e.v_scales));
                let views = E4m3KvViews { k_codes: &mut kc_f.as_view_mut(), v_codes: &mut vc_f.as_view_mut(), k_scales: &mut ks_f.as_view_mut(), v_scales: &mut vs_f.as_view_mut() };
                let mut got = poisoned(&gpu, n_out);
                attention_decode_rope_e4m3(&gpu, shape, &table, layout, &meta, &qkv_f.as_view(), views, &mut ws, splits, &mut got.as_view_mut()).unwrap();
                let host = |b: &cudarc::driver::CudaSlice<u8>| nemo_engine::gpu::download(&gpu, b).unwrap();
                let host_f32 = |b: &cudarc::driver::CudaSlice<f32>| nemo_engine::gpu::download(&gpu, b).unwrap();
                let same = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                let (got_o, want_o) = (fetch(&gpu, &got), fetch(&gpu, &want));
                assert!(want_o.iter().all(|x| x.is_finite()), "{what}: the separate launches gave non-finite outputs");
                assert!(same(&got_o, &want_o), "{what}: outputs differ");
                assert!(host(&kc_f) == host(&kc) && same(&host_f32(&ks_f), &host_f32(&ks)), "{what}: K caches differ");
                assert!(host(&vc_f) == host(&vc) && same(&host_f32(&vs_f), &host_f32(&vs)), "{what}: V caches differ");
                assert!(same(&fetch(&gpu, &qkv_f), &to_f32(&case.q)), "{what}: the fused kernel wrote qkv");
            }
        }
    }
}
