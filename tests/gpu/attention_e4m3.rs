//! Attention over an FP8 e4m3 KV cache (src/gpu/kernels/attention_e4m3.rs) against
//! cpu::attention over the values the codes stand for, on attention.rs's cases quantised by
//! `to_e4m3`; and the fused RoPE write against rope_write_kv_e4m3.

use crate::attention::{build, new_token_slots, qkv_shape, shapes, Case, BLOCK};
use crate::common::*;
use half::bf16;
use nemo_engine::cpu::attention::{attention, AttentionShape as CpuShape};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use nemo_engine::gpu::kernels::attention::{decode_splits, AttentionShape, DecodeKernel, DecodeWorkspace, DeviceAttentionMeta, FlashPrefill};
use nemo_engine::gpu::kernels::rope::E4m3KvViews;
use nemo_engine::gpu::Gpu;
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

/// An `E4m3Case`'s cache on the device.
struct DeviceE4m3 {
    k_codes: CudaSlice<u8>,
    v_codes: CudaSlice<u8>,
    k_scales: CudaSlice<f32>,
    v_scales: CudaSlice<f32>,
}

impl DeviceE4m3 {
    fn upload(gpu: &Gpu, e: &E4m3Case) -> DeviceE4m3 {
        DeviceE4m3 { k_codes: dev(gpu, &e.k_codes), v_codes: dev(gpu, &e.v_codes), k_scales: dev(gpu, &e.k_scales), v_scales: dev(gpu, &e.v_scales) }
    }

    /// `f` over the cache as the readers take it.
    fn read<R>(&self, f: impl FnOnce(E4m3KvCache) -> R) -> R {
        let (kc, vc, ks, vs) = (self.k_codes.as_view(), self.v_codes.as_view(), self.k_scales.as_view(), self.v_scales.as_view());
        f(E4m3KvCache { k_codes: &kc, v_codes: &vc, k_scales: &ks, v_scales: &vs })
    }

    /// `f` over the cache as the writers take it.
    fn write<R>(&mut self, f: impl FnOnce(E4m3KvViews) -> R) -> R {
        let (mut kc, mut vc) = (self.k_codes.as_view_mut(), self.v_codes.as_view_mut());
        let (mut ks, mut vs) = (self.k_scales.as_view_mut(), self.v_scales.as_view_mut());
        f(E4m3KvViews { k_codes: &mut kc, v_codes: &mut vc, k_scales: &mut ks, v_scales: &mut vs })
    }

    /// Codes and scales, back on the host.
    fn download(&self, gpu: &Gpu) -> (Vec<u8>, Vec<u8>, Vec<f32>, Vec<f32>) {
        let d = |b| nemo_engine::gpu::download(gpu, b).unwrap();
        let f = |b| nemo_engine::gpu::download(gpu, b).unwrap();
        (d(&self.k_codes), d(&self.v_codes), f(&self.k_scales), f(&self.v_scales))
    }
}

/// `attention` (an FP8 reader) on `case`'s q and metadata over `e`'s cache, against `e.want`.
fn reader_matches_cpu(gpu: &Gpu, test: &str, shape: AttentionShape, seqs: &[(usize, usize)], case: &Case, e: &E4m3Case, attention: ReadFn) {
    let meta = case.meta.upload(gpu, case.n_cache_blocks).unwrap();
    let q = dev(gpu, &case.q);
    let cache = DeviceE4m3::upload(gpu, e);
    let mut out = poisoned(gpu, meta.n_tokens * shape.n_heads * shape.head_dim);
    cache.read(|c| attention(gpu, shape, &meta, &q.as_view(), c, &mut out.as_view_mut()));
    assert_close(&format!("{test} hd {} {seqs:?}", shape.head_dim), &fetch(gpu, &out), &e.want, 2e-2, 2e-2);
}

type ReadFn = fn(&Gpu, AttentionShape, &DeviceAttentionMeta, &CudaView<bf16>, E4m3KvCache, &mut CudaViewMut<bf16>);

/// The FP8 cache's decode (`attention_decode_e4m3`) against cpu::attention over the values its
/// codes stand for (`to_e4m3`), at the bf16 test's contexts.
#[test]
fn attention_decode_e4m3_matches_cpu() {
    decode_matches_cpu("attention_decode_e4m3_matches_cpu", |gpu, shape, meta, q, cache, out| {
        let splits = decode_splits(132, meta.n_seqs, shape.n_kv_heads, meta.max_ctx);
        let mut ws = DecodeWorkspace::new(gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
        attention_decode_e4m3(gpu, DecodeKernel::CUDA_CORES, shape, meta, q, cache, &mut ws, splits, out).unwrap()
    });
}

/// The same on the tensor-core kernel (`NEMO_DECODE_ATTENTION=mma-split-k`).
#[test]
fn attention_decode_mma_e4m3_matches_cpu() {
    decode_matches_cpu("attention_decode_mma_e4m3_matches_cpu", |gpu, shape, meta, q, cache, out| {
        let splits = decode_splits(132, meta.n_seqs, shape.n_kv_heads, meta.max_ctx);
        let mut ws = DecodeWorkspace::new(gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
        attention_decode_e4m3(gpu, DecodeKernel::MMA, shape, meta, q, cache, &mut ws, splits, out).unwrap()
    });
}

fn decode_matches_cpu(test: &str, decode: ReadFn) {
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(1, 32_768)], vec![(1, 1), (1, 100), (1, 4097), (1, 20_000)]] {
            let case = build(&mut rng, shape, &seqs);
            reader_matches_cpu(&gpu, test, shape, &seqs, &case, &to_e4m3(shape, &case), decode);
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
            reader_matches_cpu(&gpu, test, shape, &seqs, &case, &to_e4m3(shape, &case), |gpu, shape, meta, q, cache, out| {
                attention_prefill_e4m3(gpu, FlashPrefill::MMA, shape, meta, q, cache, out).unwrap()
            });
        }
    }
}

/// `attention_decode_rope_e4m3` (an FP8 decode layer without a RoPE launch) against
/// rope_write_kv_e4m3 followed by `attention_decode_e4m3`: the same output, codes and scales bit
/// for bit, the qkv rows left unrotated; both layouts, single and batched sequences.
#[test]
fn attention_decode_e4m3_rope_equals_rope_write_kv_e4m3_then_decode() {
    decode_rope_equals_separate("attention_decode_e4m3_rope_equals_rope_write_kv_e4m3_then_decode", DecodeKernel::CUDA_CORES);
}

/// The same on the tensor-core kernel.
#[test]
fn attention_decode_mma_e4m3_rope_equals_rope_write_kv_e4m3_then_decode() {
    decode_rope_equals_separate("attention_decode_mma_e4m3_rope_equals_rope_write_kv_e4m3_then_decode", DecodeKernel::MMA);
}

fn decode_rope_equals_separate(test: &str, kernel: DecodeKernel) {
    use nemo_engine::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv_e4m3, RopeShape};
    use nemo_engine::model::RopeLayout;
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
                let what = format!("{} {layout:?} hd {} {seqs:?}", kernel.names().label(true), shape.head_dim);
                let rope_shape = RopeShape { n_heads: shape.n_heads, n_kv_heads: shape.n_kv_heads, head_dim: shape.head_dim, layout };
                let mut ws = DecodeWorkspace::new(&gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
                // Separate launches.
                let mut qkv = dev(&gpu, &case.q);
                let mut separate = DeviceE4m3::upload(&gpu, &e);
                let (pos_dev, slots_dev) = (dev(&gpu, &positions), dev(&gpu, &slots));
                separate
                    .write(|c| rope_write_kv_e4m3(&gpu, rope_shape, &table, &mut qkv.as_view_mut(), &pos_dev.as_view(), &slots_dev.as_view(), c))
                    .unwrap();
                let mut want = poisoned(&gpu, n_out);
                separate.read(|c| attention_decode_e4m3(&gpu, kernel, shape, &meta, &qkv.as_view(), c, &mut ws, splits, &mut want.as_view_mut())).unwrap();
                // Fused.
                let qkv_f = dev(&gpu, &case.q);
                let mut fused = DeviceE4m3::upload(&gpu, &e);
                let mut got = poisoned(&gpu, n_out);
                fused
                    .write(|c| attention_decode_rope_e4m3(&gpu, kernel, shape, &table, layout, &meta, &qkv_f.as_view(), c, &mut ws, splits, &mut got.as_view_mut()))
                    .unwrap();
                let same = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                let ((kc_f, vc_f, ks_f, vs_f), (kc, vc, ks, vs)) = (fused.download(&gpu), separate.download(&gpu));
                let (got_o, want_o) = (fetch(&gpu, &got), fetch(&gpu, &want));
                assert!(want_o.iter().all(|x| x.is_finite()), "{what}: the separate launches gave non-finite outputs");
                assert!(same(&got_o, &want_o), "{what}: outputs differ");
                assert!(kc_f == kc && same(&ks_f, &ks), "{what}: K caches differ");
                assert!(vc_f == vc && same(&vs_f, &vs), "{what}: V caches differ");
                assert!(same(&fetch(&gpu, &qkv_f), &to_f32(&case.q)), "{what}: the fused kernel wrote qkv");
            }
        }
    }
}
