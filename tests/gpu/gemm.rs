//! gemm_bf16, gemm_wgmma_bf16 and gemv_bf16 against cpu::matmul, every epilogue, Nemo's shapes and awkward ones.

use crate::common::*;
use half::bf16;
use nemo_engine::cpu::matmul::matmul;
use nemo_engine::cpu::ops::{rmsnorm as cpu_rmsnorm, swiglu};
use nemo_engine::gpu::kernels::gemm::{gemm, gemm_f32, gemm_split_k, Epilogue, GemmShape, SplitGemm};
use nemo_engine::gpu::kernels::gemm_wgmma::{gemm_wgmma, gemm_wgmma_f32};
use nemo_engine::gpu::kernels::gemv::{gemv, gemv_f32, gemv_normed, RowNorm};
use nemo_engine::gpu::kernels::rmsnorm::rmsnorm;
use nemo_engine::gpu::model::interleave_gate_up;
use nemo_engine::gpu::Gpu;

fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

type View<'a, T> = cudarc::driver::CudaView<'a, T>;
type ViewMut<'a, T> = cudarc::driver::CudaViewMut<'a, T>;
type Launch = fn(&Gpu, &View<bf16>, &View<bf16>, &mut ViewMut<bf16>, GemmShape, Epilogue) -> nemo_engine::gpu::GpuResult<()>;
type LaunchF32 = fn(&Gpu, &View<bf16>, &View<bf16>, &mut ViewMut<f32>, GemmShape) -> nemo_engine::gpu::GpuResult<()>;

#[allow(clippy::too_many_arguments)]
fn check_all_epilogues(gpu: &Gpu, rng: &mut Rng, (launch, launch_f32): (Launch, LaunchF32), name: &str, m: usize, n: usize, k: usize) {
    let a = rng.bf16_vec(m * k, 1.0);
    let w = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
    let a_f = to_f32(&a);
    let shape = GemmShape { m, n, k };
    let what = format!("{name} M {m} N {n} K {k}");
    let (a_dev, w_dev) = (dev(gpu, &a), dev(gpu, &w));

    // Store
    let want = matmul(&a_f, &w, k);
    let tol = 2e-2 * rms(&want);
    let mut out = poisoned(gpu, m * n);
    launch(gpu, &a_dev.as_view(), &w_dev.as_view(), &mut out.as_view_mut(), shape, Epilogue::Store).unwrap();
    assert_close(&format!("{what} store"), &fetch(gpu, &out), &want, tol, 8e-3);

    // f32 store (logits): no bf16 rounding of the result.
    let mut out32 = dev(gpu, &vec![f32::NAN; m * n]);
    launch_f32(gpu, &a_dev.as_view(), &w_dev.as_view(), &mut out32.as_view_mut(), shape).unwrap();
    let got32 = nemo_engine::gpu::download(gpu, &out32).unwrap();
    assert_close(&format!("{what} f32"), &got32, &want, 1e-3 * rms(&want), 1e-3);

    // AddInPlace: residual + bf16(acc)
    let res = rng.bf16_vec(m * n, 1.0);
    let want_res: Vec<f32> = res.iter().zip(round_bf16(&want)).map(|(r, a)| r.to_f32() + a).collect();
    let mut res_dev = dev(gpu, &res);
    launch(gpu, &a_dev.as_view(), &w_dev.as_view(), &mut res_dev.as_view_mut(), shape, Epilogue::AddInPlace).unwrap();
    assert_close(&format!("{what} residual"), &fetch(gpu, &res_dev), &want_res, tol, 8e-3);

    // SwiGLU: w as gate, a second matrix as up, fused.
    if n % 16 == 0 {
        let up = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
        let fused = interleave_gate_up(&w, &up, k);
        let want_swiglu = swiglu(&round_bf16(&want), &round_bf16(&matmul(&a_f, &up, k)));
        let f_dev = dev(gpu, &fused);
        let mut out = poisoned(gpu, m * n);
        let shape2 = GemmShape { m, n: 2 * n, k };
        launch(gpu, &a_dev.as_view(), &f_dev.as_view(), &mut out.as_view_mut(), shape2, Epilogue::SwiGlu).unwrap();
        assert_close(&format!("{what} swiglu"), &fetch(gpu, &out), &want_swiglu, 2e-2 * rms(&want_swiglu), 1e-2);
    }
}

#[test]
fn gemm_matches_cpu() {
    let Some(gpu) = gpu_or_skip("gemm_matches_cpu") else { return };
    let mut rng = Rng::fresh("gemm");
    // Nemo: QKV 5120->6144, O 4096->5120, down 14336->5120 (gate/up 5120->2x14336 via SwiGLU on
    // half the width); demo model QKV 576->960; awkward M (not a multiple of 128) and tiny.
    // K not a multiple of the 64-wide k-tile: 200, 72.
    for (m, n, k) in [(130, 6144, 5120), (9, 5120, 4096), (200, 5120, 14336), (77, 960, 576), (1, 16, 64), (300, 14336, 5120), (33, 64, 200), (129, 136, 72)] {
        check_all_epilogues(&gpu, &mut rng, (gemm, gemm_f32), "gemm", m, n, k);
    }
}

#[test]
fn gemm_wgmma_matches_cpu() {
    let Some(gpu) = gpu_or_skip("gemm_wgmma_matches_cpu") else { return };
    let mut rng = Rng::fresh("gemm_wgmma");
    // As gemm_matches_cpu, plus a full 128 x 256 tile grid (512 x 6144), N not a multiple of the
    // 256-wide tile (960, 136, 5120 = 20 tiles exactly), more k-steps than stages (14336 / 64),
    // and a K below one k-step (8).
    for (m, n, k) in [
        (130, 6144, 5120), (9, 5120, 4096), (200, 5120, 14336), (77, 960, 576), (1, 16, 64), (300, 14336, 5120),
        (33, 64, 200), (129, 136, 72), (512, 6144, 5120), (256, 272, 8),
    ] {
        check_all_epilogues(&gpu, &mut rng, (gemm_wgmma, gemm_wgmma_f32), "gemm_wgmma", m, n, k);
    }
}

/// Split-K (kernels/gemm.cu over ranges of K, then gemm_split_reduce_bf16) at decode-batch shapes
/// with few output tiles, where it splits; and at one where it does not.
#[test]
fn gemm_split_k_matches_cpu() {
    let Some(gpu) = gpu_or_skip("gemm_split_k_matches_cpu") else { return };
    split_k_matches_cpu(&gpu, SplitGemm::Mma, "gemm_split_k");
}

/// Split-K on wgmma (its f32 partials summed by gemm.cu's reduce kernel), the same shapes.
#[test]
fn gemm_wgmma_split_k_matches_cpu() {
    let Some(gpu) = gpu_or_skip("gemm_wgmma_split_k_matches_cpu") else { return };
    split_k_matches_cpu(&gpu, SplitGemm::Wgmma, "gemm_wgmma_split_k");
}

/// Decode-batch shapes with few output tiles, where `kernel` splits, and one where it does not.
fn split_k_matches_cpu(gpu: &Gpu, kernel: SplitGemm, name: &str) {
    let mut rng = Rng::fresh(name);
    let (split, f32_out): (Launch, LaunchF32) = match kernel {
        SplitGemm::Mma => (|g, a, w, o, s, e| gemm_split_k(g, SplitGemm::Mma, a, w, o, s, e), gemm_f32),
        SplitGemm::Wgmma => (|g, a, w, o, s, e| gemm_split_k(g, SplitGemm::Wgmma, a, w, o, s, e), gemm_wgmma_f32),
    };
    for (m, n, k) in [(128, 5120, 14336), (9, 6144, 5120), (256, 5120, 4096), (33, 1024, 200), (4096, 6144, 5120)] {
        let splits = kernel.splits(GemmShape { m, n, k }, gpu.info.multiprocessors);
        eprintln!("{name} M {m} N {n} K {k}: {splits} splits");
        check_all_epilogues(gpu, &mut rng, (split, f32_out), name, m, n, k);
    }
}

/// The GEMVs read what the kernel before them wrote, launched back to back with no host sync:
/// rmsnorm -> GEMV (5120 -> 14336) -> GEMV (14336 -> 5120) -> GEMV with the norm fused in
/// (5120 -> 14336), every intermediate poisoned first.
/// With `NEMO_PDL=1` each GEMV starts while its predecessor is still running (the second one
/// behind a 147 MB GEMV), so one that read its input before `griddepcontrol.wait` would see
/// poison or a half-written row; without it, plain stream order is checked.
#[test]
fn gemv_reads_the_output_of_the_kernel_before_it() {
    let Some(gpu) = gpu_or_skip("gemv_reads_the_output_of_the_kernel_before_it") else { return };
    let mut rng = Rng::fresh("gemv_chain");
    let (dim, ffn, eps) = (5120, 14336, 1e-5);
    let norm_w = rng.bf16_vec(dim, 1.0);
    let w1 = rng.bf16_vec(ffn * dim, 1.0 / (dim as f32).sqrt());
    let w2 = rng.bf16_vec(dim * ffn, 1.0 / (ffn as f32).sqrt());
    let (norm_dev, w1_dev, w2_dev) = (dev(&gpu, &norm_w), dev(&gpu, &w1), dev(&gpu, &w2));
    for m in [1, 4, 8, 1] {
        let x = rng.bf16_vec(m * dim, 1.0);
        let normed_want = round_bf16(&cpu_rmsnorm(&to_f32(&x), &norm_w, eps));
        let h_want = round_bf16(&matmul(&normed_want, &w1, dim));
        let out_want = matmul(&h_want, &w2, ffn);
        let x_dev = dev(&gpu, &x);
        let (mut normed, mut h, mut out) = (poisoned(&gpu, m * dim), poisoned(&gpu, m * ffn), poisoned(&gpu, m * dim));
        rmsnorm(&gpu, &x_dev.as_view(), &norm_dev.as_view(), &mut normed.as_view_mut(), dim, eps).unwrap();
        let shape1 = GemmShape { m, n: ffn, k: dim };
        gemv(&gpu, &normed.as_view(), &w1_dev.as_view(), &mut h.as_view_mut(), shape1, Epilogue::Store).unwrap();
        let shape2 = GemmShape { m, n: dim, k: ffn };
        gemv(&gpu, &h.as_view(), &w2_dev.as_view(), &mut out.as_view_mut(), shape2, Epilogue::Store).unwrap();
        // Then the GEMV with the norm fused in, reading the second GEMV's output.
        let mut h2 = poisoned(&gpu, m * ffn);
        let norm = RowNorm { weight: &norm_dev.as_view(), eps };
        gemv_normed(&gpu, Some(norm), &out.as_view(), &w1_dev.as_view(), &mut h2.as_view_mut(), shape1, Epilogue::Store).unwrap();
        let what = format!("rmsnorm -> gemv -> gemv -> gemv + rmsnorm, M {m} (PDL {})", gpu.pdl);
        assert_close(&format!("{what}: the first GEMV"), &fetch(&gpu, &h), &h_want, 2e-2 * rms(&h_want), 8e-3);
        // The second GEMV's input is the GPU's own h (equal to h_want up to bf16 rounding).
        let out_got = fetch(&gpu, &out);
        assert_close(&format!("{what}: the second GEMV"), &out_got, &out_want, 3e-2 * rms(&out_want), 1e-2);
        let h2_want = matmul(&cpu_rmsnorm(&out_got, &norm_w, eps), &w1, dim);
        assert_close(&format!("{what}: the normed GEMV"), &fetch(&gpu, &h2), &h2_want, 2e-2 * rms(&h2_want), 8e-3);
    }
}

#[test]
fn gemv_matches_cpu() {
    let Some(gpu) = gpu_or_skip("gemv_matches_cpu") else { return };
    let mut rng = Rng::fresh("gemv");
    for m in 1..=8 {
        check_all_epilogues(&gpu, &mut rng, (gemv, gemv_plain_f32), "gemv", m, 6144, 5120);
    }
    for (m, n, k) in [(1, 131_072, 5120), (3, 960, 576), (2, 5120, 14336), (5, 16, 8)] {
        check_all_epilogues(&gpu, &mut rng, (gemv, gemv_plain_f32), "gemv", m, n, k);
    }
}

fn gemv_plain_f32(g: &Gpu, a: &View<bf16>, w: &View<bf16>, o: &mut ViewMut<f32>, s: GemmShape) -> nemo_engine::gpu::GpuResult<()> {
    gemv_f32(g, None, a, w, o, s)
}

/// The GEMV with the RMSNorm before it fused in, as the decode layer runs it (attention norm ->
/// QKV, FFN norm -> gate/up with SwiGLU, final norm -> the LM head's f32 logits), at Nemo's shapes
/// and the demo model's, against cpu::rmsnorm then cpu::matmul. A's rows have rms ~3 and the
/// gain is 1 + N(0, 0.5), so a missing or misplaced norm fails.
#[test]
fn gemv_with_rmsnorm_matches_cpu() {
    let Some(gpu) = gpu_or_skip("gemv_with_rmsnorm_matches_cpu") else { return };
    let mut rng = Rng::fresh("gemv_rmsnorm");
    let eps = 1e-5;
    for (m, n, k, epilogue) in [
        (1, 6144, 5120, Some(Epilogue::Store)),
        (3, 6144, 5120, Some(Epilogue::Store)),
        (8, 6144, 5120, Some(Epilogue::Store)),
        (1, 2 * 14336, 5120, Some(Epilogue::SwiGlu)),
        (5, 2 * 14336, 5120, Some(Epilogue::SwiGlu)),
        (2, 960, 576, Some(Epilogue::Store)),
        (1, 131_072, 5120, None),
        (4, 49_152, 576, None),
    ] {
        // (None: the LM head's f32 logits.)
        let what = format!("gemv + rmsnorm M {m} N {n} K {k} {epilogue:?}");
        let a = rng.bf16_vec(m * k, 3.0);
        let norm_w: Vec<bf16> = rng.bf16_vec(k, 0.5).iter().map(|g| bf16::from_f32(1.0 + g.to_f32())).collect();
        let w = rng.bf16_vec(n * k, 1.0 / (k as f32).sqrt());
        let a_normed = cpu_rmsnorm(&to_f32(&a), &norm_w, eps);
        let (a_dev, norm_dev, w_dev) = (dev(&gpu, &a), dev(&gpu, &norm_w), dev(&gpu, &w));
        let norm = RowNorm { weight: &norm_dev.as_view(), eps };
        let shape = GemmShape { m, n, k };
        match epilogue {
            None => {
                let want = matmul(&a_normed, &w, k);
                let mut out = dev(&gpu, &vec![f32::NAN; m * n]);
                gemv_f32(&gpu, Some(norm), &a_dev.as_view(), &w_dev.as_view(), &mut out.as_view_mut(), shape).unwrap();
                let got = nemo_engine::gpu::download(&gpu, &out).unwrap();
                assert_close(&what, &got, &want, 1e-3 * rms(&want), 1e-3);
            }
            Some(Epilogue::SwiGlu) => {
                // w holds the gate and up rows interleaved, as the model's fused weight does.
                let (gate, up) = (&w[..n / 2 * k], &w[n / 2 * k..]);
                let want = swiglu(&round_bf16(&matmul(&a_normed, gate, k)), &round_bf16(&matmul(&a_normed, up, k)));
                let f_dev = dev(&gpu, &interleave_gate_up(gate, up, k));
                let mut out = poisoned(&gpu, m * n / 2);
                gemv_normed(&gpu, Some(norm), &a_dev.as_view(), &f_dev.as_view(), &mut out.as_view_mut(), shape, Epilogue::SwiGlu).unwrap();
                assert_close(&what, &fetch(&gpu, &out), &want, 2e-2 * rms(&want), 1e-2);
            }
            Some(epilogue) => {
                let want = matmul(&a_normed, &w, k);
                let mut out = poisoned(&gpu, m * n);
                gemv_normed(&gpu, Some(norm), &a_dev.as_view(), &w_dev.as_view(), &mut out.as_view_mut(), shape, epilogue).unwrap();
                assert_close(&what, &fetch(&gpu, &out), &want, 2e-2 * rms(&want), 8e-3);
            }
        }
    }
}
