//! attention_prefill and attention_decode against cpu::attention, over a paged cache with
//! shuffled blocks, batches of sequences with different lengths and cached prefixes.

use crate::common::*;
use half::bf16;
use nemo_engine::cpu::attention::{attention, AttentionShape as CpuShape};
use nemo_engine::gpu::kernels::attention::{
    attention_decode, attention_decode_with, attention_prefill, decode_splits, DecodeKernel,
    AttentionMeta, AttentionShape, DecodeWorkspace, DeviceAttentionMeta,
};
use nemo_engine::gpu::kernels::attention_wgmma::WgmmaSchedule;
use nemo_engine::gpu::kernels::prefill_table::PrefillKernel;
use nemo_engine::gpu::Gpu;

pub const BLOCK: usize = 16;

/// A batch: per sequence (new tokens, context length); its K/V, q and the expected output.
/// Shared with the emulator's tests (emulated/attention.rs).
pub struct Case {
    pub meta: AttentionMeta,
    pub n_cache_blocks: usize,
    pub k_cache: Vec<bf16>,
    pub v_cache: Vec<bf16>,
    pub q: Vec<bf16>, // [n_tokens, q_stride]
    pub want: Vec<f32>,
}

pub fn build(rng: &mut Rng, shape: AttentionShape, seqs: &[(usize, usize)]) -> Case {
    let AttentionShape { n_heads, n_kv_heads, head_dim, q_stride } = shape;
    let kvd = n_kv_heads * head_dim;
    let blocks_per_seq: Vec<usize> = seqs.iter().map(|&(_, ctx)| ctx.div_ceil(BLOCK)).collect();
    let n_cache_blocks = blocks_per_seq.iter().sum::<usize>() + 5;
    let mut pool: Vec<usize> = (0..n_cache_blocks).collect();
    for i in (1..pool.len()).rev() {
        pool.swap(i, rng.below(i + 1));
    }
    // Block 0 stays free: a kernel that reads "row 0" for a key past the end reads poison.
    let zero = pool.iter().position(|&b| b == 0).unwrap();
    let last = pool.len() - 1;
    pool.swap(zero, last);
    let max_blocks = *blocks_per_seq.iter().max().unwrap();
    let mut meta = AttentionMeta { cu_seqlens_q: vec![0], max_blocks, block_size: BLOCK, ..Default::default() };
    let mut k_cache = rng.bf16_vec(n_cache_blocks * BLOCK * kvd, 1.0);
    let mut v_cache = rng.bf16_vec(n_cache_blocks * BLOCK * kvd, 1.0);
    let mut used = vec![false; n_cache_blocks * BLOCK];
    let n_tokens: usize = seqs.iter().map(|s| s.0).sum();
    let q = rng.bf16_vec(n_tokens * q_stride, 1.0);
    let mut want = Vec::new();
    let mut next = 0;
    for (s, &(q_len, ctx)) in seqs.iter().enumerate() {
        let blocks: Vec<usize> = pool[next..next + blocks_per_seq[s]].to_vec();
        next += blocks_per_seq[s];
        let mut row = blocks.iter().map(|&b| b as i32).collect::<Vec<_>>();
        row.resize(max_blocks, 0);
        meta.block_tables.extend(row);
        meta.ctx_lens.push(ctx as i32);
        let t0 = *meta.cu_seqlens_q.last().unwrap() as usize;
        meta.cu_seqlens_q.push((t0 + q_len) as i32);
        // Gather this sequence's K/V (fresh values per slot) and its q rows for the reference.
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for pos in 0..ctx {
            let slot = blocks[pos / BLOCK] * BLOCK + pos % BLOCK;
            used[slot] = true;
            for x in &mut k_cache[slot * kvd..(slot + 1) * kvd] {
                *x = bf16::from_f32(rng.normal(1.0));
            }
            k.extend(to_f32(&k_cache[slot * kvd..(slot + 1) * kvd]));
            v.extend(to_f32(&v_cache[slot * kvd..(slot + 1) * kvd]));
        }
        let qs: Vec<f32> =
            (t0..t0 + q_len).flat_map(|t| to_f32(&q[t * q_stride..t * q_stride + n_heads * head_dim])).collect();
        want.extend(attention(&qs, &k, &v, ctx - q_len, CpuShape { n_heads, n_kv_heads, head_dim }));
    }
    // Every slot no sequence holds (free blocks, the tail of each last block) is poison, as
    // stale or never-written memory may be: a kernel must mask such keys, not weight them by 0.
    for (slot, _) in used.iter().enumerate().filter(|(_, &u)| !u) {
        k_cache[slot * kvd..(slot + 1) * kvd].fill(POISON);
        v_cache[slot * kvd..(slot + 1) * kvd].fill(POISON);
    }
    Case { meta, n_cache_blocks, k_cache, v_cache, q, want }
}

/// Which wrapper `run` launches.
enum Kernel {
    Prefill(PrefillKernel),
    Decode(DecodeKernel),
}
use Kernel::{Decode, Prefill};

fn run(gpu: &Gpu, shape: AttentionShape, case: &Case, kernel: Kernel) -> Vec<f32> {
    let meta = case.meta.upload(gpu, case.n_cache_blocks).unwrap();
    let (q, k, v) = (dev(gpu, &case.q), dev(gpu, &case.k_cache), dev(gpu, &case.v_cache));
    let mut out = poisoned(gpu, meta.n_tokens * shape.n_heads * shape.head_dim);
    if let Decode(decode) = kernel {
        let splits = decode_splits(132, meta.n_seqs, shape.n_kv_heads, meta.max_ctx);
        let mut ws = DecodeWorkspace::new(gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
        attention_decode_with(gpu, decode, shape, &meta, &q.as_view(), &k.as_view(), &v.as_view(), &mut ws, splits, &mut out.as_view_mut())
            .unwrap();
    } else if let Prefill(prefill) = kernel {
        attention_prefill(gpu, prefill, shape, &meta, &q.as_view(), &k.as_view(), &v.as_view(), &mut out.as_view_mut()).unwrap();
    }
    fetch(gpu, &out)
}

pub fn shapes() -> [AttentionShape; 2] {
    [
        AttentionShape { n_heads: 32, n_kv_heads: 8, head_dim: 128, q_stride: (32 + 16) * 128 }, // Nemo
        AttentionShape { n_heads: 9, n_kv_heads: 3, head_dim: 64, q_stride: 9 * 64 },            // SmolLM2
    ]
}

#[test]
fn attention_prefill_matches_cpu() {
    prefill_matches_cpu("attention_prefill_matches_cpu", PrefillKernel::MMA_FLASH);
}

/// The Hopper variant on its own (scripts/gpu-check runs it with the paths no GPU has checked yet).
#[test]
fn attention_prefill_wgmma_matches_cpu() {
    prefill_matches_cpu("attention_prefill_wgmma_matches_cpu", PrefillKernel::Wgmma(WgmmaSchedule::InOrder));
}

/// Its overlap variant, likewise on its own (a step of its own in scripts/gpu-check).
#[test]
fn attention_prefill_wgmma_overlap_matches_cpu() {
    prefill_matches_cpu("attention_prefill_wgmma_overlap_matches_cpu", PrefillKernel::Wgmma(WgmmaSchedule::Overlap));
}

/// And its ping-pong variant (a step of its own too).
#[test]
fn attention_prefill_wgmma_pingpong_matches_cpu() {
    prefill_matches_cpu("attention_prefill_wgmma_pingpong_matches_cpu", PrefillKernel::Wgmma(WgmmaSchedule::PingPong));
}

fn prefill_matches_cpu(test: &str, prefill: PrefillKernel) {
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        // Whole prompts of awkward lengths, one at 4k+; a chunk over a cached prefix; a batch.
        let batches: Vec<Vec<(usize, usize)>> = vec![
            vec![(1, 1)],
            vec![(17, 17)],
            vec![(100, 100)],
            vec![(4100, 4100)],
            vec![(200, 700)],
            vec![(5, 5), (64, 300), (129, 129), (1, 1000)],
        ];
        for seqs in batches {
            let case = build(&mut rng, shape, &seqs);
            let got = run(&gpu, shape, &case, Prefill(prefill));
            assert_close(&format!("{test} hd {} {:?}", shape.head_dim, seqs), &got, &case.want, 2e-2, 2e-2);
        }
    }
}

#[test]
fn attention_decode_matches_cpu() {
    decode_matches_cpu("attention_decode_matches_cpu", DecodeKernel::CUDA_CORES);
}

/// The tensor-core variant on its own, so scripts/gpu-check can run it with the paths no GPU
/// has checked yet.
#[test]
fn attention_decode_mma_matches_cpu() {
    decode_matches_cpu("attention_decode_mma_matches_cpu", DecodeKernel::MMA);
}

fn decode_matches_cpu(test: &str, decode: DecodeKernel) {
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(1, 32_768)], vec![(1, 1), (1, 100), (1, 4097), (1, 20_000)]] {
            let case = build(&mut rng, shape, &seqs);
            let got = run(&gpu, shape, &case, Decode(decode));
            assert_close(&format!("{test} hd {} {:?}", shape.head_dim, seqs), &got, &case.want, 2e-2, 2e-2);
        }
    }
}

/// The step's new tokens at position ctx_len - 1 of each sequence, and their cache slots.
pub fn new_token_slots(case: &Case) -> (Vec<i32>, Vec<i32>) {
    let m = &case.meta;
    let positions: Vec<i32> = m.ctx_lens.iter().map(|&c| c - 1).collect();
    let slots = positions
        .iter()
        .enumerate()
        .map(|(s, &p)| m.block_tables[s * m.max_blocks + p as usize / BLOCK] * BLOCK as i32 + p % BLOCK as i32)
        .collect();
    (positions, slots)
}

/// The q | k | v row layout the fused kernel reads: q_stride is the whole row.
pub fn qkv_shape(shape: AttentionShape) -> AttentionShape {
    AttentionShape { q_stride: (shape.n_heads + 2 * shape.n_kv_heads) * shape.head_dim, ..shape }
}

/// `attention_decode_rope` (the decode layer without a rope_write_kv launch) against
/// rope_write_kv followed by the same kernel without RoPE, each checked against the CPU on its
/// own: the same output, K cache and V cache bit for bit, and the qkv rows left unrotated; both
/// layouts, single and batched sequences, contexts across many splits.
#[test]
fn attention_decode_rope_equals_rope_write_kv_then_decode() {
    decode_rope_equals_separate("attention_decode_rope_equals_rope_write_kv_then_decode", DecodeKernel::CUDA_CORES);
}

/// The same on the tensor-core kernel (`NEMO_DECODE_ATTENTION=mma-split-k`).
#[test]
fn attention_decode_mma_rope_equals_rope_write_kv_then_decode() {
    decode_rope_equals_separate("attention_decode_mma_rope_equals_rope_write_kv_then_decode", DecodeKernel::MMA);
}

fn decode_rope_equals_separate(test: &str, kernel: DecodeKernel) {
    use nemo_engine::gpu::kernels::attention::attention_decode_rope;
    use nemo_engine::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv, RopeShape};
    use nemo_engine::model::RopeLayout;
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    for shape in shapes().map(qkv_shape) {
        let table = rope_cos_sin_table(&gpu, 32_768, shape.head_dim, 1e6).unwrap();
        for layout in [RopeLayout::Interleaved, RopeLayout::RotateHalf] {
            for seqs in [vec![(1, 1)], vec![(1, 4097)], vec![(1, 1), (1, 100), (1, 4097), (1, 20_000)]] {
                let case = build(&mut rng, shape, &seqs);
                let meta = case.meta.upload(&gpu, case.n_cache_blocks).unwrap();
                let (positions, slots) = new_token_slots(&case);
                let splits = decode_splits(132, meta.n_seqs, shape.n_kv_heads, meta.max_ctx);
                let n_out = meta.n_seqs * shape.n_heads * shape.head_dim;
                let what = format!("{} {layout:?} hd {} {seqs:?}", kernel.names().label(false), shape.head_dim);
                // Separate launches.
                let (mut qkv, mut k, mut v) = (dev(&gpu, &case.q), dev(&gpu, &case.k_cache), dev(&gpu, &case.v_cache));
                let rope_shape = RopeShape { n_heads: shape.n_heads, n_kv_heads: shape.n_kv_heads, head_dim: shape.head_dim, layout };
                let (pos_dev, slots_dev) = (dev(&gpu, &positions), dev(&gpu, &slots));
                rope_write_kv(&gpu, rope_shape, &table, &mut qkv.as_view_mut(), &pos_dev.as_view(), &slots_dev.as_view(), &mut k.as_view_mut(), &mut v.as_view_mut())
                    .unwrap();
                let mut ws = DecodeWorkspace::new(&gpu, meta.n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
                let mut want = poisoned(&gpu, n_out);
                attention_decode_with(&gpu, kernel, shape, &meta, &qkv.as_view(), &k.as_view(), &v.as_view(), &mut ws, splits, &mut want.as_view_mut())
                    .unwrap();
                // Fused.
                let (qkv_f, mut k_f, mut v_f) = (dev(&gpu, &case.q), dev(&gpu, &case.k_cache), dev(&gpu, &case.v_cache));
                let mut got = poisoned(&gpu, n_out);
                attention_decode_rope(
                    &gpu, kernel, shape, &table, layout, &meta, &qkv_f.as_view(), &mut k_f.as_view_mut(), &mut v_f.as_view_mut(), &mut ws, splits,
                    &mut got.as_view_mut(),
                )
                .unwrap();
                let same = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                let (got_o, want_o) = (fetch(&gpu, &got), fetch(&gpu, &want));
                assert!(want_o.iter().all(|x| x.is_finite()), "{what}: the separate launches gave non-finite outputs");
                assert!(same(&got_o, &want_o), "{what}: outputs differ");
                assert!(same(&fetch(&gpu, &k_f), &fetch(&gpu, &k)), "{what}: K caches differ");
                assert!(same(&fetch(&gpu, &v_f), &fetch(&gpu, &v)), "{what}: V caches differ");
                assert!(same(&fetch(&gpu, &qkv_f), &to_f32(&case.q)), "{what}: the fused kernel wrote qkv");
            }
        }
    }
}

/// A CUDA graph's metadata (`DeviceAttentionMeta::persistent`): rows as wide as the cache,
/// refilled each step with only the entries in use (`upload_rows`, one strided copy). A refill
/// after a wider one leaves the old entries past each row's end in place: they name a free,
/// NaN-poisoned block, so decode over them must still equal the CPU.
#[test]
fn attention_decode_over_cuda_graph_metadata_matches_cpu() {
    let test = "attention_decode_over_cuda_graph_metadata_matches_cpu";
    let Some(gpu) = gpu_or_skip(test) else { return };
    let mut rng = Rng::fresh(test);
    let shape = shapes()[0];
    let case = build(&mut rng, shape, &[(1, 1), (1, 100), (1, 4097), (1, 33)]);
    let (n_seqs, stride) = (case.meta.ctx_lens.len(), case.meta.max_blocks + 37);
    let mut meta = DeviceAttentionMeta::persistent(&gpu, n_seqs + 2, stride, BLOCK, case.n_cache_blocks).unwrap();
    // First a step with rows as wide as the stride, every entry block 0 (free, poisoned).
    let wide = AttentionMeta {
        ctx_lens: vec![(stride * BLOCK) as i32; n_seqs],
        block_tables: vec![0; n_seqs * stride],
        max_blocks: stride,
        ..case.meta.clone()
    };
    meta.refill(&gpu, &wide).unwrap();
    let too_wide = AttentionMeta { block_tables: vec![0; n_seqs * (stride + 1)], max_blocks: stride + 1, ..wide };
    assert!(meta.refill(&gpu, &too_wide).unwrap_err().to_string().contains("do not fit"), "rows wider than the stride");
    meta.refill(&gpu, &case.meta).unwrap();
    let (q, k, v) = (dev(&gpu, &case.q), dev(&gpu, &case.k_cache), dev(&gpu, &case.v_cache));
    let mut out = poisoned(&gpu, n_seqs * shape.n_heads * shape.head_dim);
    let splits = decode_splits(132, n_seqs, shape.n_kv_heads, meta.max_ctx);
    let mut ws = DecodeWorkspace::new(&gpu, n_seqs, shape.n_heads, splits, shape.head_dim).unwrap();
    attention_decode(&gpu, shape, &meta, &q.as_view(), &k.as_view(), &v.as_view(), &mut ws, splits, &mut out.as_view_mut()).unwrap();
    assert_close(test, &fetch(&gpu, &out), &case.want, 2e-2, 2e-2);
}

#[test]
fn attention_meta_refuses_out_of_range_blocks() {
    let meta = AttentionMeta {
        cu_seqlens_q: vec![0, 1],
        ctx_lens: vec![40],
        block_tables: vec![0, 1, 9],
        max_blocks: 3,
        block_size: 16,
    };
    assert!(meta.validate(10).is_ok());
    assert!(meta.validate(9).unwrap_err().contains("block id 9"));
    let too_long = AttentionMeta { ctx_lens: vec![49], ..meta.clone() };
    assert!(too_long.validate(10).unwrap_err().contains("needs 4 blocks"));
    let no_tokens = AttentionMeta { cu_seqlens_q: vec![0, 0], ..meta };
    assert!(no_tokens.validate(10).is_err());
}
