//! `gemv_bf16` (kernels/gemv.cu): the decode-sized (M <= 8) path of `A . W^T`, reading every
//! weight once at full bandwidth; same epilogues and fused gate/up layout as `gemm`; optionally
//! with the RMSNorm before it fused in (`RowNorm`).

use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use half::bf16;

use super::check::{address, ensure, vector_buffer};
use super::gemm::{linear_params, Epilogue, GemmShape};
use crate::gpu::error::Result;
use crate::gpu::launch::arg;
use crate::gpu::Gpu;

const KERNEL: &str = "gemv_bf16";
/// Largest M the kernel's register-resident accumulators serve.
pub const MAX_M: usize = 8;
const WARPS: usize = 8;

/// Mirror of `GemvNorm` in kernels/gemv.cu (public for the emulator tests): the RMSNorm applied
/// to A's rows inside the GEMV; `weight` 0 for none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GemvNorm {
    pub weight: u64,
    pub eps: f32,
    pub unused: i32,
}
const _: () = assert!(std::mem::size_of::<GemvNorm>() == 16);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for GemvNorm {}

/// An RMSNorm for the GEMV to apply to A's rows first: rows * rsqrt(mean(rows^2) + eps) * weight,
/// with `weight` `[K]`.
#[derive(Clone, Copy)]
pub struct RowNorm<'a> {
    pub weight: &'a CudaView<'a, bf16>,
    pub eps: f32,
}

fn norm_params(gpu: &Gpu, norm: Option<RowNorm<'_>>, k: usize) -> Result<GemvNorm> {
    let Some(norm) = norm else { return Ok(GemvNorm::default()) };
    vector_buffer(&gpu.stream, KERNEL, "the norm's weight", norm.weight, k)?;
    ensure(norm.eps.is_finite() && norm.eps > 0.0, KERNEL, || format!("norm eps {} is not a positive number", norm.eps))?;
    Ok(GemvNorm { weight: address(&gpu.stream, norm.weight), eps: norm.eps, unused: 0 })
}

/// out = epilogue(A . W^T) for 1 <= M <= 8. A: `[M, K]`, W: `[N, K]`, out: `[M, N]` (`[M, N/2]`
/// for SwiGLU). K must be a multiple of 8, N of 8 (16 for SwiGLU).
pub fn gemv(
    gpu: &Gpu,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epilogue: Epilogue,
) -> Result<()> {
    gemv_normed(gpu, None, a, w, out, shape, epilogue)
}

/// `gemv` of the rows of A normalised by `norm` first (when given), in one kernel.
pub fn gemv_normed(
    gpu: &Gpu,
    norm: Option<RowNorm<'_>>,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epilogue: Epilogue,
) -> Result<()> {
    checked_launch(gpu, norm, a, w, out, shape, Some(epilogue))
}

/// out = A . W^T stored as f32 (the LM head's logits), 1 <= M <= 8, A's rows normalised by
/// `norm` first when given. Shapes as for `gemv`.
pub fn gemv_f32(
    gpu: &Gpu,
    norm: Option<RowNorm<'_>>,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<f32>,
    shape: GemmShape,
) -> Result<()> {
    checked_launch(gpu, norm, a, w, out, shape, None)
}

/// Checks the shapes and buffers (`epilogue` None: f32 output), then launches.
fn checked_launch<T>(
    gpu: &Gpu,
    norm: Option<RowNorm<'_>>,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<T>,
    shape: GemmShape,
    epilogue: Option<Epilogue>,
) -> Result<()> {
    ensure((1..=MAX_M).contains(&shape.m), KERNEL, || format!("M = {} is outside 1..={MAX_M}", shape.m))?;
    let params = linear_params(gpu, KERNEL, a, w, out, shape, epilogue)?;
    let norm = norm_params(gpu, norm, shape.k)?;
    let out_cols = epilogue.map_or(shape.n, |e| e.out_cols(shape.n));
    launch(gpu, params, norm, out_cols, epilogue == Some(Epilogue::SwiGlu))
}

/// Output columns per warp: mirrors `cols_per_warp` in kernels/gemv.cu.
fn cols_per_warp(m: usize, swiglu: bool) -> usize {
    match m {
        1 => 1,
        2 | 3 => 2,
        _ if swiglu => 2,
        _ => 4,
    }
}

/// The kernel for M rows: `gemv_bf16` (M = 1) or `gemv_multi_bf16` (2..=8).
pub fn kernel_name(m: usize) -> &'static str {
    if m == 1 { "gemv_bf16" } else { "gemv_multi_bf16" }
}

/// `gemv`'s launch for M rows and `out_cols` output columns: 8 warps a block, each warp
/// `cols_per_warp` columns (of gate/up pairs for SwiGLU).
pub fn launch_config(m: usize, out_cols: usize, swiglu: bool) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (out_cols.div_ceil(cols_per_warp(m, swiglu) * WARPS) as u32, 1, 1),
        block_dim: ((WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launch(gpu: &Gpu, params: super::gemm::LinearParams, norm: GemvNorm, out_cols: usize, swiglu: bool) -> Result<()> {
    let m = params.m as usize;
    let cfg = launch_config(m, out_cols, swiglu);
    let func = if m == 1 { &gpu.kernels.gemv_bf16 } else { &gpu.kernels.gemv_multi_bf16 };
    // SAFETY: buffers checked by linear_params (lengths, 16-byte alignment, K % 8, N % 8/16);
    // 1 <= M <= 8 (checked by the callers) selects the entry point and a row-count
    // instantiation; out_cols is a multiple of 8, so every warp's columns lie inside the matrix
    // or all past it (those warps return); the norm's weight, when given, has K values
    // (`norm_params`). As a dependent launch: every thread waits for the kernel before before it
    // touches A, the norm, the residual or the output (kernels/gemv.cu, `prefetch_then_wait`;
    // tests/gpu/emulated/gemm.rs checks it with A poisoned until then).
    gpu.launched(kernel_name(m), unsafe { gpu.launch_after_previous(func, cfg, &mut [arg(&params), arg(&norm)]) })
}
