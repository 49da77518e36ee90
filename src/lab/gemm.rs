//! GEMM variants: `out = epilogue(A . W^T)`, A `[M, K]` activations, W `[N, K]` a Linear weight.
//! Checked on sampled rows against `cpu::matmul`; the peer is cuBLAS (plain product, same shape).

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::bf16;

use super::{check_and_time, random_bf16, sample_rows, Check, Expected, Lab, Row, POISON};
use crate::cpu::matmul::matmul;
use crate::cpu::ops::silu;
use crate::gpu::kernels::gemm::{self, gemm, gemm_split_k, launch_n_major, linear_params, Epilogue, GemmShape, SplitGemm};
use crate::gpu::kernels::gemm_wgmma::gemm_wgmma;
use crate::gpu::kernels::gemv::{gemv, MAX_M};
use crate::gpu::{upload, Gpu, GpuResult};

pub type GemmFn = fn(&Gpu, &CudaView<bf16>, &CudaView<bf16>, &mut CudaViewMut<bf16>, GemmShape, Epilogue) -> GpuResult<()>;

/// Every GEMM variant: (name, wrapper). A new one is one line here.
pub const VARIANTS: &[(&str, GemmFn)] = &[
    ("mma", gemm),         // kernels/gemm.cu: mma.sync, cp.async, 128x128x64
    // The same, blocks taking tiles N fastest (the order before kernels/tile_order.cuh).
    ("mma-n-major", |gpu, a, w, out, shape, epi| {
        launch_n_major(gpu, linear_params(gpu, gemm::KERNEL, a, w, out, shape, Some(epi))?, shape)
    }),
    ("wgmma", gemm_wgmma), // kernels/gemm_wgmma.cu: wgmma + TMA, warp-specialised, 128x256x64
    // kernels/gemm.cu, then kernels/gemm_wgmma.cu, split over K + gemm_split_reduce_bf16, for few tiles
    ("mma-split-k", |gpu, a, w, out, shape, epi| gemm_split_k(gpu, SplitGemm::Mma, a, w, out, shape, epi)),
    ("wgmma-split-k", |gpu, a, w, out, shape, epi| gemm_split_k(gpu, SplitGemm::Wgmma, a, w, out, shape, epi)),
    ("gemv", gemv), // kernels/gemv.cu: the decode path, M <= 8 only (`serves`)
];

/// Whether `variant` serves `shape` (the GEMV takes M <= 8 only; the rest take any shape).
fn serves(variant: &str, shape: GemmShape) -> bool {
    variant != "gemv" || shape.m <= MAX_M
}

/// Nemo's linear layers at prefill (M = 4096), a short prompt (M = 512) and a decode batch of 128
/// (few output tiles: where split-K matters).
pub const DEFAULT_SHAPES: &[&str] = &[
    "4096x6144x5120",          // qkv
    "4096x5120x4096:residual", // o
    "4096x28672x5120:swiglu",  // gate/up
    "4096x5120x14336:residual", // down
    "4096x131072x5120",        // LM head (all rows: scoring)
    "512x6144x5120",
    "512x28672x5120:swiglu",
    "128x6144x5120",
    "128x5120x14336:residual",
    "1x28672x5120:swiglu", // batch-1 decode: the GEMV's regime
    "8x6144x5120",
];

/// `MxNxK[:epilogue]`.
pub fn parse_shape(s: &str) -> Result<(GemmShape, Epilogue), String> {
    let (dims, epi) = s.split_once(':').unwrap_or((s, "store"));
    let epilogue = match epi {
        "store" => Epilogue::Store,
        "residual" => Epilogue::AddInPlace,
        "swiglu" => Epilogue::SwiGlu,
        other => return Err(format!("gemm shape `{s}`: unknown epilogue `{other}` (store, residual, swiglu)")),
    };
    let n: Vec<usize> = dims.split('x').map(|d| d.parse::<usize>()).collect::<Result<_, _>>().map_err(|_| bad(s))?;
    let [m, n, k] = n[..] else { return Err(bad(s)) };
    let need_n = if epilogue == Epilogue::SwiGlu { 16 } else { 8 };
    if m == 0 || n == 0 || k == 0 || k % 8 != 0 || n % need_n != 0 {
        return Err(format!("gemm shape `{s}`: M, N, K must be positive, K a multiple of 8, N of {need_n}"));
    }
    if m.checked_mul(k).and_then(|x| x.checked_mul(2)).is_none_or(|b| b > 1 << 34) || n.checked_mul(k).is_none_or(|b| b > 1 << 33) {
        return Err(format!("gemm shape `{s}` is implausibly large"));
    }
    Ok((GemmShape { m, n, k }, epilogue))
}

fn bad(s: &str) -> String {
    format!("gemm shape `{s}` is not MxNxK[:store|:residual|:swiglu]")
}

/// The CPU reference for `rows` of the output (bf16 rounding where the kernels round).
fn reference(a: &[bf16], w: &[bf16], residual: &[bf16], shape: GemmShape, epi: Epilogue, rows: &[usize]) -> Vec<f32> {
    let GemmShape { n, k, .. } = shape;
    let x: Vec<f32> = rows.iter().flat_map(|&r| a[r * k..(r + 1) * k].iter().map(|v| v.to_f32())).collect();
    let acc = matmul(&x, w, k); // [rows, n]
    let round = |v: f32| bf16::from_f32(v).to_f32();
    let mut want = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        let acc = &acc[i * n..(i + 1) * n];
        match epi {
            Epilogue::Store => want.extend_from_slice(acc),
            Epilogue::AddInPlace => want.extend(acc.iter().enumerate().map(|(j, &v)| residual[r * n + j].to_f32() + round(v))),
            Epilogue::SwiGlu => want.extend((0..n / 2).map(|j| {
                let gate = (j / 8) * 16 + j % 8; // 8-row interleaved groups (gpu::model::interleave_gate_up)
                silu(round(acc[gate])) * round(acc[gate + 8])
            })),
        }
    }
    want
}

pub fn run(lab: &Lab, only: Option<&str>, shape_text: &str, rows: &mut Vec<Row>) -> GpuResult<()> {
    let (shape, epi) = parse_shape(shape_text).expect("checked by lab::run");
    let GemmShape { m, n, k } = shape;
    let gpu = &lab.gpu;
    let a = random_bf16(m * k, 1, 1.0);
    let w = random_bf16(n * k, 2, 1.0 / (k as f32).sqrt());
    let out_cols = epi.out_cols(n);
    let residual = if epi == Epilogue::AddInPlace { random_bf16(m * out_cols, 3, 1.0) } else { Vec::new() };
    let picked = sample_rows(m, 8);
    let want = reference(&a, &w, &residual, shape, epi, &picked);
    let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt() as f32;
    let (a_dev, w_dev) = (upload(gpu, &a)?, upload(gpu, &w)?);
    let flops = 2.0 * (m * n * k) as f64;

    let peer_ms = super::peers::cublas_ms(gpu, &a_dev, &w_dev, shape, lab.warmup, lab.iters);
    let peer_rate = peer_ms.map(|ms| flops / (ms * 1e-3) / 1e12);
    let row = |variant: String, ms: f64, check: Option<Check>| Row {
        family: "gemm".into(),
        variant,
        shape: shape_text.into(),
        ms,
        rate: flops / (ms * 1e-3) / 1e12,
        unit: "TFLOP/s",
        of_ceiling: peer_rate.map(|p| flops / (ms * 1e-3) / 1e12 / p),
        check,
    };
    let expected = Expected { rows: &picked, row_len: out_cols, want: &want, atol: 2e-2 * rms, rtol: 1e-2 };
    for &(name, launch) in VARIANTS.iter().filter(|(name, _)| only.is_none_or(|o| o == *name)) {
        if !serves(name, shape) {
            // Asked for by name: say why there is no number; in a full sweep, leave it out.
            if only.is_some() {
                rows.push(row(format!("{name} (not run: it serves M <= {MAX_M})"), f64::NAN, None));
            }
            continue;
        }
        // Checked on a poisoned output (or a fresh residual), then timed.
        let mut out = if epi == Epilogue::AddInPlace { upload(gpu, &residual)? } else { upload(gpu, &vec![POISON; m * out_cols])? };
        let mut run = |out: &mut CudaSlice<bf16>| launch(gpu, &a_dev.as_view(), &w_dev.as_view(), &mut out.as_view_mut(), shape, epi);
        check_and_time(lab, name, &mut out, &mut run, &expected, &row, rows);
    }
    match peer_ms {
        Some(ms) => rows.push(Row { of_ceiling: Some(1.0), ..row("cublas (peer, plain product)".into(), ms, None) }),
        None => rows.push(row("cublas (not loadable: set LD_LIBRARY_PATH to PyTorch's nvidia/cublas/lib)".into(), f64::NAN, None)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_are_refused() {
        let (s, e) = parse_shape("4096x28672x5120:swiglu").unwrap();
        assert_eq!((s.m, s.n, s.k, e), (4096, 28672, 5120, Epilogue::SwiGlu));
        assert_eq!(parse_shape("1x8x8").unwrap().1, Epilogue::Store);
        for bad in ["4096x6144", "4096x6144x5121", "0x8x8", "8x8x8:gelu", "8x24x8:swiglu", "axbxc", "9999999x9999999x9999999"] {
            assert!(parse_shape(bad).is_err(), "{bad} accepted");
        }
        for s in DEFAULT_SHAPES {
            parse_shape(s).unwrap();
        }
    }

    #[test]
    fn the_reference_applies_each_epilogue() {
        // 2 x 16 output from K = 8: rows of ones against W rows of j / 16.
        let (m, n, k) = (2, 32, 8);
        let a = vec![bf16::ONE; m * k];
        let w: Vec<bf16> = (0..n * k).map(|i| bf16::from_f32((i / k) as f32 / 16.0)).collect();
        let shape = GemmShape { m, n, k };
        let store = reference(&a, &w, &[], shape, Epilogue::Store, &[1]);
        assert_eq!(store[3], 8.0 * 3.0 / 16.0);
        let residual = vec![bf16::from_f32(1.0); m * n];
        let added = reference(&a, &w, &residual, shape, Epilogue::AddInPlace, &[0]);
        assert_eq!(added[3], 1.0 + 8.0 * 3.0 / 16.0);
        let swiglu = reference(&a, &w, &[], shape, Epilogue::SwiGlu, &[0]);
        assert_eq!(swiglu.len(), 16);
        // Output column 9: gate row 16 + 1 = 17, up row 25.
        let (g, u) = (8.0 * 17.0 / 16.0, 8.0 * 25.0 / 16.0);
        assert!((swiglu[9] - silu(g) * u).abs() < 1e-4);
    }
}
