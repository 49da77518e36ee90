//! gemm_bf16 and gemv_bf16 on the emulator against cpu::matmul: every epilogue, both tile
//! orders, awkward shapes (M, N not multiples of the 128 x 128 tile, K not a multiple of the
//! 64-wide k-step; gemv at M = 1, 3, 8 with K past its unrolled loop, with and without the
//! RMSNorm fused in).

use super::{addr, in_both_async_modes, load, PrimaryOutputs};
use crate::common::*;
use half::bf16;
use nemo_engine::cpu::matmul::matmul;
use nemo_engine::cpu::ops::{rmsnorm, swiglu};
use nemo_engine::gpu::kernels::gemm::{
    launch_config, split_launch_config, split_reduce_config, Epilogue, GemmShape, LinearParams, SplitReduceParams, TILE_GROUP,
};
use nemo_engine::gpu::kernels::gemv::{self, GemvNorm};
use nemo_engine::gpu::model::interleave_gate_up;

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

/// Which kernel `run` launches.
#[derive(Clone, Copy, Debug)]
pub enum Linear {
    /// gemm_bf16 with this tile group, split over K `splits` ways when > 1.
    Mma { group: i32, splits: usize },
    /// gemv_bf16, with A's rows normalised by a (random) RMSNorm inside the kernel when `normed`.
    Gemv { normed: bool },
    /// gemv_bf16 as a programmatic dependent of the kernel that wrote A (`NEMO_PDL=1`): A is
    /// poison until the block's griddepcontrol.wait.
    GemvDependent { normed: bool },
    /// gemm_wgmma_bf16 likewise.
    Wgmma { group: i32, splits: usize },
}

/// The parameters the wrappers build (`linear_params`), over host buffers; `out` is bf16 or f32
/// as the epilogue code says.
pub fn host_params<T>(a: &[bf16], w: &[bf16], out: &mut [T], shape: GemmShape, epilogue: i32, tile_group: i32) -> LinearParams {
    let out_cols = if epilogue == Epilogue::SwiGlu.code() { shape.n / 2 } else { shape.n };
    assert_eq!(out.len(), shape.m * out_cols);
    let out_addr = out.as_mut_ptr() as u64;
    LinearParams {
        a: addr(a),
        w: addr(w),
        out: out_addr,
        residual: if epilogue == Epilogue::AddInPlace.code() { out_addr } else { 0 },
        m: shape.m as i32,
        n: shape.n as i32,
        k: shape.k as i32,
        lda: shape.k as i32,
        ldo: out_cols as i32,
        epilogue,
        tile_group,
        k_splits: 1,
    }
}

/// Runs `kernel` over host buffers; `out` is bf16 or f32 as the epilogue code says; `norm`: the
/// GEMV's fused RMSNorm weight, when it has one.
fn run<T>(a: &[bf16], w: &[bf16], out: &mut [T], shape: GemmShape, epilogue: i32, kernel: Linear, norm: Option<&[bf16]>) {
    let (tile_group, splits, wgmma) = match kernel {
        Linear::Mma { group, splits } => (group, splits, false),
        Linear::Gemv { .. } | Linear::GemvDependent { .. } => (0, 1, false),
        Linear::Wgmma { group, splits } => (group, splits, true),
    };
    let p = host_params(a, w, out, shape, epilogue, tile_group);
    let out_cols = p.ldo as usize;
    if wgmma && splits == 1 {
        super::gemm_wgmma::run_wgmma(p, shape, 1);
    } else if splits > 1 {
        // Partials of each K range into a workspace, then the reduce kernel's epilogue.
        let mut partial = vec![f32::NAN; splits * shape.m * shape.n];
        let partials = LinearParams {
            out: partial.as_mut_ptr() as u64,
            residual: 0,
            ldo: shape.n as i32,
            epilogue: Epilogue::F32_CODE,
            k_splits: splits as i32,
            ..p
        };
        if wgmma {
            super::gemm_wgmma::run_wgmma(partials, shape, splits);
        } else {
            load("gemm").launch("gemm_bf16", split_launch_config(shape, splits).unwrap(), partials).unwrap();
        }
        let reduce = SplitReduceParams {
            partial: addr(&partial),
            out: p.out,
            residual: p.residual,
            m: p.m,
            n: p.n,
            k_splits: splits as i32,
            ldo: p.ldo,
            epilogue,
        };
        load("gemm").launch("gemm_split_reduce_bf16", split_reduce_config(shape.m, out_cols), reduce).unwrap();
    } else if tile_group > 0 {
        load("gemm").launch("gemm_bf16", launch_config(shape).unwrap(), p).unwrap();
    } else {
        let cfg = gemv::launch_config(shape.m, out_cols, epilogue == Epilogue::SwiGlu.code());
        let name = gemv::kernel_name(shape.m);
        let norm = norm.map_or(GemvNorm::default(), |w| GemvNorm { weight: addr(w), eps: NORM_EPS, unused: 0 });
        let primary = PrimaryOutputs::of(&[a]);
        let dependent = matches!(kernel, Linear::GemvDependent { .. }).then_some(&primary);
        // SAFETY: the parameter blocks' buffers are live host buffers of the kernel's sizes.
        load("gemv")
            .launch_args_after(name, cfg, dependent, |k: unsafe extern "C" fn(LinearParams, GemvNorm)| unsafe { k(p, norm) })
            .unwrap();
    }
}

#[test]
fn emulated_gemm_matches_cpu_for_every_epilogue_and_tile_order() {
    let mut rng = Rng::fresh("emulated_gemm");
    for (m, n, k, group) in [(1, 16, 8, TILE_GROUP), (9, 136, 72, TILE_GROUP), (129, 272, 200, TILE_GROUP), (300, 144, 136, 1)] {
        check_every_epilogue(&mut rng, m, n, k, Linear::Mma { group, splits: 1 });
    }
}

/// Split-K: K ranges of unequal length (K = 328: 6 k-tiles over 4 splits = 2, 2, 2, 0 — an empty
/// last range writes zero partials), the partials summed through every epilogue.
#[test]
fn emulated_gemm_split_k_matches_cpu_for_every_epilogue() {
    let mut rng = Rng::fresh("emulated_gemm_split_k");
    for (m, n, k, splits) in [(9, 136, 328, 4), (130, 144, 200, 2), (1, 16, 72, 3)] {
        check_every_epilogue(&mut rng, m, n, k, Linear::Mma { group: TILE_GROUP, splits });
    }
}

#[test]
fn emulated_gemv_matches_cpu_for_every_epilogue() {
    let mut rng = Rng::fresh("emulated_gemv");
    // K = 1032: 129 chunks of 8, past one unrolled pass of 4 x 32 lanes, with a remainder; every
    // M, so each columns-per-warp case (1, 2, 4; 2 for SwiGLU) runs; N = 72: 9 warps of 8 columns.
    for (m, n, k) in [(1, 16, 8), (1, 40, 1032), (2, 24, 264), (3, 40, 1032), (4, 72, 136), (5, 16, 8), (6, 24, 520), (7, 8, 64), (8, 24, 264)] {
        check_every_epilogue(&mut rng, m, n, k, Linear::Gemv { normed: false });
        check_every_epilogue(&mut rng, m, n, k, Linear::Gemv { normed: true });
    }
}

/// The GEMV launched behind the kernel that writes its activations (programmatic dependent
/// launch): it prefetches weights before its griddepcontrol.wait and must read A only after it.
/// The emulator poisons A until every thread of a block has reached the wait. Shapes with warps
/// past N (M = 4: 6 of a block's 8 warps have columns), each columns-per-warp case.
#[test]
fn emulated_gemv_reads_its_activations_only_after_the_dependency_wait() {
    let mut rng = Rng::fresh("emulated_gemv_dependent");
    for (m, n, k) in [(1, 40, 1032), (3, 40, 264), (4, 24, 136), (8, 16, 72)] {
        check_every_epilogue(&mut rng, m, n, k, Linear::GemvDependent { normed: false });
        check_every_epilogue(&mut rng, m, n, k, Linear::GemvDependent { normed: true });
    }
}

const NORM_EPS: f32 = 1e-5;

/// Store, f32, residual and SwiGLU of `kernel` against cpu::matmul (of cpu::rmsnorm's rows for a
/// normed GEMV: A then has rows of rms ~3, and a gain of 1 + N(0, 0.5), so a missing norm fails).
pub fn check_every_epilogue(rng: &mut Rng, m: usize, n: usize, k: usize, kernel: Linear) {
    let shape = GemmShape { m, n, k };
    let what = format!("emulated {kernel:?} M {m} N {n} K {k}");
    let normed = matches!(kernel, Linear::Gemv { normed: true } | Linear::GemvDependent { normed: true });
    let a = rng.bf16_vec(m * k, if normed { 3.0 } else { 1.0 });
    let w = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
    let norm_w: Vec<bf16> = rng.bf16_vec(k, 0.5).iter().map(|g| bf16::from_f32(1.0 + g.to_f32())).collect();
    let norm = normed.then_some(&norm_w[..]);
    let a_in = if normed { rmsnorm(&to_f32(&a), &norm_w, NORM_EPS) } else { to_f32(&a) };
    let want = matmul(&a_in, &w, k);
    let tol = 2e-2 * rms(&want);

    let res = rng.bf16_vec(m * n, 1.0);
    let want_res: Vec<f32> = res.iter().zip(round_bf16(&want)).map(|(r, a)| r.to_f32() + a).collect();
    let up = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
    let want_swiglu = swiglu(&round_bf16(&want), &round_bf16(&matmul(&a_in, &up, k)));
    let fused = interleave_gate_up(&w, &up, k);

    in_both_async_modes(|| {
        let mut out = vec![POISON; m * n];
        run(&a, &w, &mut out, shape, Epilogue::Store.code(), kernel, norm);
        assert_close(&format!("{what} store"), &to_f32(&out), &want, tol, 8e-3);

        let mut out32 = vec![f32::NAN; m * n];
        run(&a, &w, &mut out32, shape, Epilogue::F32_CODE, kernel, norm);
        assert_close(&format!("{what} f32"), &out32, &want, 1e-3 * rms(&want), 1e-3);

        let mut res = res.clone();
        run(&a, &w, &mut res, shape, Epilogue::AddInPlace.code(), kernel, norm);
        assert_close(&format!("{what} residual"), &to_f32(&res), &want_res, tol, 8e-3);

        let mut out = vec![POISON; m * n];
        run(&a, &fused, &mut out, GemmShape { m, n: 2 * n, k }, Epilogue::SwiGlu.code(), kernel, norm);
        assert_close(&format!("{what} swiglu"), &to_f32(&out), &want_swiglu, 2e-2 * rms(&want_swiglu), 1e-2);
    });
}
