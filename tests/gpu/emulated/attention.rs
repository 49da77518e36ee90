//! attention_prefill and attention_decode on the emulator against cpu::attention: the GPU
//! tests' case builder (paged cache with shuffled blocks, batches, cached prefixes), at lengths
//! the emulator runs in seconds.

use super::gemm_wgmma::emu_tensor_map;
use super::{addr, in_both_async_modes, load, PrimaryOutputs};
use crate::attention::{build, shapes, Case};
use crate::attention_e4m3::{to_e4m3, E4m3Case};
use crate::common::*;
use half::bf16;
use nemo_engine::gpu::kernels::attention_wgmma::{self, cache_map_spec, PrefillWgmmaParams, WgmmaSchedule};
use nemo_engine::gpu::kernels::attention::{
    decode_config, decode_splits, prefill_config, scale_log2, AttentionParams, AttentionShape, DecodeKernel, DecodeRope, FlashPrefill,
};
use nemo_engine::gpu::kernels::decode_table::DecodeInstance;
use nemo_engine::gpu::kernels::rope::{RopeDims, RopeShape};
use nemo_engine::model::RopeLayout;

/// The parameter block the wrappers build, over host buffers.
fn params(shape: AttentionShape, case: &Case, out: &mut [bf16]) -> AttentionParams {
    let m = &case.meta;
    AttentionParams {
        q: addr(&case.q),
        k_cache: addr(&case.k_cache),
        v_cache: addr(&case.v_cache),
        out: out.as_mut_ptr() as u64,
        cu_seqlens_q: addr(&m.cu_seqlens_q),
        ctx_lens: addr(&m.ctx_lens),
        block_tables: addr(&m.block_tables),
        partial_o: 0,
        partial_ml: 0,
        split_counters: 0,
        q_stride: shape.q_stride as i32,
        n_heads: shape.n_heads as i32,
        n_kv_heads: shape.n_kv_heads as i32,
        max_blocks: m.max_blocks as i32,
        block_size: m.block_size as i32,
        n_seqs: m.ctx_lens.len() as i32,
        n_splits: 1,
        scale_log2: scale_log2(shape.head_dim),
        k_scales: 0,
        v_scales: 0,
    }
}

fn n_out(shape: AttentionShape, case: &Case) -> usize {
    *case.meta.cu_seqlens_q.last().unwrap() as usize * shape.n_heads * shape.head_dim
}

/// A flash prefill kernel over `case`'s cache, or with `e4m3` its FP8 entry over that cache.
fn run_prefill(kernel: FlashPrefill, shape: AttentionShape, case: &Case, e4m3: Option<&E4m3Case>) -> Vec<f32> {
    let mut out = vec![POISON; n_out(shape, case)];
    let mut p = params(shape, case, &mut out);
    if let Some(e) = e4m3 {
        (p.k_cache, p.v_cache, p.k_scales, p.v_scales) = (addr(&e.k_codes), addr(&e.v_codes), addr(&e.k_scales), addr(&e.v_scales));
    }
    let q_lens = case
        .meta
        .cu_seqlens_q
        .windows(2)
        .map(|w| (w[1] - w[0]) as usize);
    let cfg = prefill_config(kernel, shape, q_lens.max().unwrap(), case.meta.ctx_lens.len(), e4m3.is_some());
    let entry = kernel.entry(e4m3.is_some(), shape.head_dim).unwrap_or_else(|| panic!("{kernel:?} has no entry here"));
    load(kernel.names().module).launch(&entry, cfg, p).unwrap();
    to_f32(&out)
}

/// attention_prefill_wgmma (or its overlap variant) over host buffers, its tensor maps from the
/// wrapper's spec.
fn run_prefill_wgmma(shape: AttentionShape, case: &Case, schedule: WgmmaSchedule) -> Vec<f32> {
    let mut out = vec![POISON; n_out(shape, case)];
    let attn = params(shape, case, &mut out);
    let n_slots = case.meta.block_size * case.n_cache_blocks;
    let map = |cache: &[bf16]| emu_tensor_map(cache_map_spec(addr(cache), n_slots, shape.n_kv_heads, shape.head_dim));
    let p = PrefillWgmmaParams { k_map: map(&case.k_cache), v_map: map(&case.v_cache), attn };
    let q_lens = case.meta.cu_seqlens_q.windows(2).map(|w| (w[1] - w[0]) as usize);
    let cfg = attention_wgmma::launch_config(shape, q_lens.max().unwrap(), case.meta.ctx_lens.len());
    let kernel = attention_wgmma::kernel_name(schedule, shape.head_dim);
    load("attention_prefill_wgmma").launch(&kernel, cfg, p).unwrap();
    to_f32(&out)
}

/// Runs a decode kernel (its splits, merged by the last split block of each (sequence, KV head));
/// `dependent`: as a programmatic dependent of the kernel that wrote its inputs (q and the
/// caches: rope_write_kv), which are poison until its wait. `splits`: None for what the model
/// would choose on 132 SMs. Runs it twice on one workspace: the arrival counts must be back at
/// zero after each launch, and the second launch must give the first's answer.
fn run_decode(kernel: DecodeKernel, shape: AttentionShape, case: &Case, dependent: bool, splits: Option<usize>) -> Vec<f32> {
    run_decode_with(kernel, shape, case, dependent, splits, None, None)
}

/// `run_decode`; with `rope` (the cos/sin table [positions, head_dim / 2] and the layout) the
/// kernel rotates the new tokens itself and writes them into the cache it reads, which then
/// holds them as the kernel left them. With `e4m3` it runs the `_e4m3` kernel over that FP8
/// cache (`case` still gives q and the metadata).
fn run_decode_with(
    kernel: DecodeKernel,
    shape: AttentionShape,
    case: &Case,
    dependent: bool,
    splits: Option<usize>,
    rope: Option<(&[f32], RopeLayout)>,
    e4m3: Option<&E4m3Case>,
) -> Vec<f32> {
    let n_seqs = case.meta.ctx_lens.len();
    let max_ctx = *case.meta.ctx_lens.iter().max().unwrap() as usize;
    let splits = splits.unwrap_or_else(|| decode_splits(132, n_seqs, shape.n_kv_heads, max_ctx));
    let mut partial_o = vec![f32::NAN; n_seqs * shape.n_heads * splits * shape.head_dim];
    let mut partial_ml = vec![f32::NAN; n_seqs * shape.n_heads * splits * 2];
    let mut counters = vec![0i32; n_seqs * shape.n_kv_heads];
    let cfg = decode_config(kernel, shape, splits, n_seqs, e4m3.is_some());
    let group = shape.n_heads / shape.n_kv_heads;
    let instance = DecodeInstance { kernel, e4m3: e4m3.is_some(), head_dim: shape.head_dim, group };
    let decode = instance.entry().unwrap_or_else(|| panic!("{} has no entries over this cache", kernel.names().name));
    let file = kernel.names().module;
    // The cache it reads (and with `rope` writes): (K, V, K scales, V scales), scales 0 for bf16.
    let (k_cache, v_cache, k_scales, v_scales) = match e4m3 {
        None => (addr(&case.k_cache), addr(&case.v_cache), 0, 0),
        Some(e) => (addr(&e.k_codes), addr(&e.v_codes), addr(&e.k_scales), addr(&e.v_scales)),
    };
    let inputs = match e4m3 {
        None => PrimaryOutputs::of(&[&case.q[..], &case.k_cache[..], &case.v_cache[..]]),
        Some(e) => PrimaryOutputs::of(&[&case.q[..]]).and(&e.k_codes).and(&e.v_codes).and(&e.k_scales).and(&e.v_scales),
    };
    let mut outs = Vec::new();
    for _ in 0..2 {
        let mut out = vec![POISON; n_out(shape, case)];
        let mut p = params(shape, case, &mut out);
        (p.k_cache, p.v_cache, p.k_scales, p.v_scales) = (k_cache, v_cache, k_scales, v_scales);
        p.partial_o = partial_o.as_mut_ptr() as u64;
        p.partial_ml = partial_ml.as_mut_ptr() as u64;
        p.split_counters = counters.as_mut_ptr() as u64;
        p.n_splits = splits as i32;
        let r = rope.map_or(DecodeRope::default(), |(cos_sin, layout)| DecodeRope {
            cos_sin: addr(cos_sin),
            k_cache,
            v_cache,
            max_positions: (cos_sin.len() / shape.head_dim) as i32,
            rotate_half: (layout == RopeLayout::RotateHalf) as i32,
            k_scales,
            v_scales,
        });
        // SAFETY: the parameter blocks' buffers are live host buffers of the kernel's sizes (the
        // caches written through `r` are the case's, which the caller does not touch meanwhile).
        load(file)
            .launch_args_after(&decode, cfg, dependent.then_some(&inputs), |k: unsafe extern "C" fn(AttentionParams, DecodeRope)| unsafe { k(p, r) })
            .unwrap();
        assert!(counters.iter().all(|&c| c == 0), "{decode}: arrival counts left at {counters:?}");
        outs.push(to_f32(&out));
    }
    let second = outs.pop().unwrap();
    let first = outs.pop().unwrap();
    assert!(first.iter().zip(&second).all(|(a, b)| a.to_bits() == b.to_bits()), "{decode}: a second launch differs");
    first
}

/// Every flash kernel of `FLASH_PREFILL_KERNELS` (so a new one is checked here without a line of
/// its own); over an FP8 cache, every one with FP8 entries.
fn each_flash_prefill(e4m3: bool, check: impl Fn(FlashPrefill, &str), test: &str) {
    let kernels: Vec<FlashPrefill> = FlashPrefill::all().filter(|k| k.names().entry_prefix(e4m3).is_some()).collect();
    assert!(!kernels.is_empty(), "the mma-flash kernel at least");
    for kernel in kernels {
        check(kernel, &format!("{test} {}", kernel.names().name));
    }
}

#[test]
fn emulated_attention_prefill_matches_cpu() {
    each_flash_prefill(false, prefill_matches_cpu, "emulated_attention_prefill");
}

fn prefill_matches_cpu(kernel: FlashPrefill, test: &str) {
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        // Whole prompts of awkward lengths; a chunk over a cached prefix; a batch.
        for seqs in [
            vec![(1, 1)],
            vec![(17, 17)],
            vec![(100, 100)],
            vec![(40, 300)],
            vec![(5, 5), (64, 130), (1, 77)],
        ] {
            let case = build(&mut rng, shape, &seqs);
            in_both_async_modes(|| {
                let got = run_prefill(kernel, shape, &case, None);
                let what = format!("emulated {kernel:?} hd {} {:?}", shape.head_dim, seqs);
                assert_close(&what, &got, &case.want, 2e-2, 2e-2);
            });
        }
    }
}

/// The FP8 prefill against cpu::attention over the values the codes stand for: the bf16 test's
/// prompts, chunks and batch (free slots NaN codes and NaN scales), in both async modes.
#[test]
fn emulated_attention_prefill_e4m3_matches_cpu() {
    each_flash_prefill(true, prefill_e4m3_matches_cpu, "emulated_attention_prefill_e4m3");
}

fn prefill_e4m3_matches_cpu(kernel: FlashPrefill, test: &str) {
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(17, 17)], vec![(100, 100)], vec![(40, 300)], vec![(5, 5), (64, 130), (1, 77)]] {
            let case = build(&mut rng, shape, &seqs);
            let e = to_e4m3(shape, &case);
            in_both_async_modes(|| {
                let got = run_prefill(kernel, shape, &case, Some(&e));
                assert_close(&format!("emulated {kernel:?} e4m3 hd {} {seqs:?}", shape.head_dim), &got, &e.want, 2e-2, 2e-2);
            });
            // The FP8 rounding is there: against the bf16 cache's answer the error is larger.
            let got = run_prefill(kernel, shape, &case, Some(&e));
            let c = nemo_engine::lab::Check::compare(&got, &case.want, 0.0, 0.0);
            let own = nemo_engine::lab::Check::compare(&got, &e.want, 0.0, 0.0);
            assert!(c.max_abs > 2.0 * own.max_abs, "fp8 {:e} vs its reference {:e}", c.max_abs, own.max_abs);
        }
    }
}

/// Tiles of 128 keys over prompts that end mid-tile and mid-block, chunks over a cached prefix
/// (keys before the chunk; 300 keys: 3 tiles, so the 2-stage ring wraps), several blocks of
/// 128 / G positions (SmolLM2: G = 3, 42 positions and 2 padding rows per block), a batch.
#[test]
fn emulated_attention_prefill_wgmma_matches_cpu() {
    prefill_wgmma_matches_cpu(WgmmaSchedule::InOrder, "emulated_attention_prefill_wgmma");
}

#[test]
fn emulated_attention_prefill_wgmma_overlap_matches_cpu() {
    prefill_wgmma_matches_cpu(WgmmaSchedule::Overlap, "emulated_attention_prefill_wgmma_overlap");
}

#[test]
fn emulated_attention_prefill_wgmma_pingpong_matches_cpu() {
    prefill_wgmma_matches_cpu(WgmmaSchedule::PingPong, "emulated_attention_prefill_wgmma_pingpong");
}

fn prefill_wgmma_matches_cpu(schedule: WgmmaSchedule, test: &str) {
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(17, 17)], vec![(100, 100)], vec![(40, 300)], vec![(40, 600)], vec![(5, 5), (64, 130), (1, 77)]] {
            let case = build(&mut rng, shape, &seqs);
            in_both_async_modes(|| {
                let got = run_prefill_wgmma(shape, &case, schedule);
                let what = format!("emulated {} hd {} {:?}", attention_wgmma::kernel_name(schedule, shape.head_dim), shape.head_dim, seqs);
                assert_close(&what, &got, &case.want, 2e-2, 2e-2);
            });
        }
    }
}

/// Every kernel of `DECODE_KERNELS` (src/gpu/kernels/decode_table.rs), so a new one is checked
/// here without a line of its own; over an FP8 cache, every one with FP8 entries.
fn each_decode_kernel(e4m3: bool, check: impl Fn(DecodeKernel, &str), test: &str) {
    let kernels: Vec<DecodeKernel> = DecodeKernel::all().filter(|k| k.names().entry_prefix(e4m3).is_some()).collect();
    assert!(kernels.len() >= 2, "the split-k and mma-split-k kernels at least");
    for kernel in kernels {
        check(kernel, &format!("{test} {}", kernel.names().name));
    }
}

#[test]
fn emulated_attention_decode_kernels_match_cpu() {
    each_decode_kernel(false, decode_matches_cpu, "emulated_attention_decode");
}

/// One token per sequence over contexts that leave partial tiles, splits shorter than a tile
/// (warps with no visible key) and empty splits (batch of short and long contexts); then whole
/// contexts in one split (a large batch's launch), so each warp carries its online softmax over
/// many steps.
fn decode_matches_cpu(kernel: DecodeKernel, test: &str) {
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(1, 1500)], vec![(1, 1), (1, 100), (1, 333), (1, 700)]] {
            let case = build(&mut rng, shape, &seqs);
            in_both_async_modes(|| {
                let got = run_decode(kernel, shape, &case, false, None);
                let what = format!("emulated {} hd {} {:?}", kernel.names().label(false), shape.head_dim, seqs);
                assert_close(&what, &got, &case.want, 2e-2, 2e-2);
            });
            if seqs.len() > 1 || seqs[0].1 > 1 {
                let got = run_decode(kernel, shape, &case, false, Some(1));
                let what = format!("emulated {} hd {} {:?}, one split", kernel.names().label(false), shape.head_dim, seqs);
                assert_close(&what, &got, &case.want, 2e-2, 2e-2);
            }
            // As dependent launches (NEMO_PDL=1): inputs poison until each kernel's wait.
            let got = run_decode(kernel, shape, &case, true, None);
            let what = format!("emulated {} hd {} {:?}, dependent launches", kernel.names().label(false), shape.head_dim, seqs);
            assert_close(&what, &got, &case.want, 2e-2, 2e-2);
        }
    }
}

/// The decode kernel that rotates its own new tokens (`DecodeRope`) against rope_write_kv then
/// the plain decode kernel: the same output and caches bit for bit, qkv left unrotated; both
/// layouts, contexts over several splits and a batch (several blocks write their own KV head of
/// one new token's slot while the other splits of that sequence read other keys: the race check
/// sees every access), and as a dependent launch.
#[test]
fn emulated_attention_decode_kernels_rope_equals_rope_write_kv_then_decode() {
    each_decode_kernel(false, |kernel, test| rope_in_decode_equals_separate(kernel, test, false), "emulated_attention_decode_rope");
}

/// The decode kernel rotating and writing its own new tokens (`DecodeRope`) against the RoPE
/// write (rope_write_kv, or rope_write_kv_e4m3 with `fp8`) followed by the plain kernel: the
/// same output and caches bit for bit, qkv left unrotated.
fn rope_in_decode_equals_separate(kernel: DecodeKernel, test: &str, fp8: bool) {
    use crate::attention::{new_token_slots, qkv_shape};
    use nemo_engine::cpu::rope::{rope_cos_sin, rope_inv_freq};
    let mut rng = Rng::fresh(test);
    let name = kernel.names().label(fp8);
    for shape in shapes().map(qkv_shape) {
        let max_positions = 1600;
        let inv_freq = rope_inv_freq(shape.head_dim, 1e6);
        let cos_sin: Vec<f32> = (0..max_positions).flat_map(|p| rope_cos_sin(p, &inv_freq)).flat_map(|(c, s)| [c, s]).collect();
        for (layout, seqs, dependent) in [
            (RopeLayout::RotateHalf, vec![(1, 1)], false),
            (RopeLayout::Interleaved, vec![(1, 1500)], false),
            (RopeLayout::RotateHalf, vec![(1, 1), (1, 100), (1, 333), (1, 700)], false),
            (RopeLayout::RotateHalf, vec![(1, 40), (1, 300)], true),
            (RopeLayout::Interleaved, vec![(1, 40), (1, 300)], true),
        ] {
            let case = build(&mut rng, shape, &seqs);
            let e = fp8.then(|| to_e4m3(shape, &case));
            let what = format!("emulated {name} with RoPE, {layout:?} hd {} {seqs:?}", shape.head_dim);
            // The RoPE write, then the plain kernel.
            let (positions, slots) = new_token_slots(&case);
            let copy = |c: &Case| Case { meta: c.meta.clone(), n_cache_blocks: c.n_cache_blocks, k_cache: c.k_cache.clone(), v_cache: c.v_cache.clone(), q: c.q.clone(), want: Vec::new() };
            let (mut separate, mut sep_e) = (copy(&case), e.clone());
            let rope = RopeWrite { shape, layout, cos_sin: &cos_sin, max_positions, positions: &positions, slots: &slots };
            rope.launch(&mut separate, sep_e.as_mut());
            let want = run_decode_with(kernel, shape, &separate, dependent, None, None, sep_e.as_ref());
            assert!(want.iter().all(|x| x.is_finite()), "{what}: the separate launches gave non-finite outputs");
            // The write happened: every new token's K row differs from what the case held there.
            let kvd = shape.n_kv_heads * shape.head_dim;
            for &slot in &slots {
                let rows = slot as usize * kvd..(slot as usize + 1) * kvd;
                let changed = match (&sep_e, &e) {
                    (Some(s), Some(e)) => s.k_codes[rows.clone()] != e.k_codes[rows],
                    _ => separate.k_cache[rows.clone()].iter().zip(&case.k_cache[rows]).any(|(a, b)| a.to_bits() != b.to_bits()),
                };
                assert!(changed, "{what}: the RoPE write left slot {slot} as it was");
            }
            let same = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            let same_bf16 = |a: &[bf16], b: &[bf16]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            // One launch, in both of the emulator's async modes (the mma kernel's cp.async of the
            // new key's tile must come after the block wrote it).
            in_both_async_modes(|| {
                let (fused, fused_e) = (copy(&case), e.clone());
                let got = run_decode_with(kernel, shape, &fused, dependent, None, Some((&cos_sin, layout)), fused_e.as_ref());
                assert!(same(&got, &want), "{what}: outputs differ");
                match (&fused_e, &sep_e) {
                    (Some(f), Some(s)) => {
                        assert!(f.k_codes == s.k_codes && same(&f.k_scales, &s.k_scales), "{what}: K caches differ");
                        assert!(f.v_codes == s.v_codes && same(&f.v_scales, &s.v_scales), "{what}: V caches differ");
                    }
                    _ => {
                        assert!(same_bf16(&fused.k_cache, &separate.k_cache), "{what}: K caches differ");
                        assert!(same_bf16(&fused.v_cache, &separate.v_cache), "{what}: V caches differ");
                    }
                }
                assert!(same_bf16(&fused.q, &case.q), "{what}: the fused kernel wrote qkv");
            });
        }
    }
}

/// One rope_write_kv launch over a case's cache (bf16, or its FP8 form).
struct RopeWrite<'a> {
    shape: AttentionShape,
    layout: RopeLayout,
    cos_sin: &'a [f32],
    max_positions: usize,
    positions: &'a [i32],
    slots: &'a [i32],
}

impl RopeWrite<'_> {
    /// Rotates `case.q` in place and writes the new tokens into `case`'s caches, or into `e4m3`'s.
    fn launch(&self, case: &mut Case, e4m3: Option<&mut E4m3Case>) {
        use nemo_engine::gpu::kernels::rope::{RopeKvE4m3Params, RopeKvParams};
        let cfg = cudarc::driver::LaunchConfig { grid_dim: (self.positions.len() as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let d = rope_dims(self.shape, self.layout, self.max_positions, case);
        let (cos_sin, positions, slots) = (addr(self.cos_sin), addr(self.positions), addr(self.slots));
        let qkv = case.q.as_mut_ptr() as u64;
        match e4m3 {
            None => {
                let (k_cache, v_cache) = (case.k_cache.as_mut_ptr() as u64, case.v_cache.as_mut_ptr() as u64);
                let p = RopeKvParams { qkv, k_cache, v_cache, cos_sin, positions, slots, d };
                // SAFETY: the parameter block's buffers are live host buffers of the kernel's sizes.
                load("rope").launch_args("rope_write_kv_bf16", cfg, |k: unsafe extern "C" fn(RopeKvParams)| unsafe { k(p) }).unwrap();
            }
            Some(e) => {
                let (k_codes, v_codes) = (e.k_codes.as_mut_ptr() as u64, e.v_codes.as_mut_ptr() as u64);
                let (k_scales, v_scales) = (e.k_scales.as_mut_ptr() as u64, e.v_scales.as_mut_ptr() as u64);
                let p = RopeKvE4m3Params { qkv, k_codes, v_codes, k_scales, v_scales, cos_sin, positions, slots, d };
                // SAFETY: as above.
                load("rope").launch_args("rope_write_kv_e4m3", cfg, |k: unsafe extern "C" fn(RopeKvE4m3Params)| unsafe { k(p) }).unwrap();
            }
        }
    }
}

/// The RoPE write's scalars for `case`'s cache and a table of `max_positions` positions.
fn rope_dims(shape: AttentionShape, layout: RopeLayout, max_positions: usize, case: &Case) -> RopeDims {
    let rope = RopeShape { n_heads: shape.n_heads, n_kv_heads: shape.n_kv_heads, head_dim: shape.head_dim, layout };
    RopeDims::new("emulated", rope, max_positions, case.n_cache_blocks * case.meta.block_size).unwrap()
}

/// A decode kernel over `e`'s FP8 cache (`case` gives q and the metadata), as `run_decode`.
fn run_decode_e4m3(kernel: DecodeKernel, shape: AttentionShape, case: &Case, e: &E4m3Case, dependent: bool, splits: Option<usize>) -> Vec<f32> {
    run_decode_with(kernel, shape, case, dependent, splits, None, Some(e))
}

/// The FP8 cache's decode against cpu::attention over the values its codes stand for: the same
/// contexts as the bf16 kernel's test (partial tiles, empty splits, one split, dependent launch);
/// free slots hold NaN codes and NaN scales, which must be masked, not weighted by zero.
#[test]
fn emulated_attention_decode_e4m3_kernels_match_cpu() {
    each_decode_kernel(true, decode_e4m3_matches_cpu, "emulated_attention_decode_e4m3");
}

fn decode_e4m3_matches_cpu(kernel: DecodeKernel, test: &str) {
    let mut rng = Rng::fresh(test);
    for shape in shapes() {
        for seqs in [vec![(1, 1)], vec![(1, 1500)], vec![(1, 1), (1, 100), (1, 333), (1, 700)]] {
            let case = build(&mut rng, shape, &seqs);
            let e = to_e4m3(shape, &case);
            for (splits, dependent, how) in [(None, false, ""), (Some(1), false, ", one split"), (None, true, ", dependent launch")] {
                let got = run_decode_e4m3(kernel, shape, &case, &e, dependent, splits);
                assert_close(&format!("{test} hd {} {seqs:?}{how}", shape.head_dim), &got, &e.want, 2e-2, 2e-2);
            }
            // The FP8 rounding is there: against the bf16 cache's answer the error is larger.
            let got = run_decode_e4m3(kernel, shape, &case, &e, false, None);
            let c = nemo_engine::lab::Check::compare(&got, &case.want, 0.0, 0.0);
            let own = nemo_engine::lab::Check::compare(&got, &e.want, 0.0, 0.0);
            assert!(c.max_abs > 2.0 * own.max_abs, "fp8 {:e} vs its reference {:e}", c.max_abs, own.max_abs);
        }
    }
}

/// The FP8 decode kernel that rotates and writes its own new tokens (`attention_decode_rope_e4m3`)
/// against rope_write_kv_e4m3 followed by the plain FP8 decode: the same output, codes and
/// scales bit for bit (one row writer, kernels/kv_e4m3.cuh), and q left unrotated; both layouts,
/// Nemo's and the demo's heads, batches, many splits, a dependent launch.
#[test]
fn emulated_attention_decode_e4m3_kernels_rope_equals_rope_write_kv_e4m3_then_decode() {
    each_decode_kernel(true, |kernel, test| rope_in_decode_equals_separate(kernel, test, true), "emulated_attention_decode_e4m3_rope");
}
