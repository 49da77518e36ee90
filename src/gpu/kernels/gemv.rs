//! `gemv_bf16` (kernels/gemv.cu): the decode-sized (M <= 8) path of `A . W^T`, reading every
//! weight once at full bandwidth; same epilogues and fused gate/up layout as `gemm`.

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};
use half::bf16;

use super::check::ensure;
use super::gemm::{linear_params, Epilogue, GemmShape};
use crate::gpu::error::Result;
use crate::gpu::launch::arg;
use crate::gpu::Gpu;

const KERNEL: &str = "gemv_bf16";
/// Largest M the kernel's register-resident accumulators serve.
pub const MAX_M: usize = 8;
const WARPS: usize = 8;

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
    ensure((1..=MAX_M).contains(&shape.m), KERNEL, || format!("M = {} is outside 1..={MAX_M}", shape.m))?;
    let params = linear_params(gpu, KERNEL, a, w, out, shape, Some(epilogue))?;
    launch(gpu, params, epilogue.out_cols(shape.n), epilogue == Epilogue::SwiGlu)
}

/// out = A . W^T stored as f32 (the LM head's logits), 1 <= M <= 8. Shapes as for `gemv`.
pub fn gemv_f32(gpu: &Gpu, a: &CudaView<bf16>, w: &CudaView<bf16>, out: &mut CudaViewMut<f32>, shape: GemmShape) -> Result<()> {
    ensure((1..=MAX_M).contains(&shape.m), KERNEL, || format!("M = {} is outside 1..={MAX_M}", shape.m))?;
    let params = linear_params(gpu, KERNEL, a, w, out, shape, None)?;
    launch(gpu, params, shape.n, false)
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

fn launch(gpu: &Gpu, params: super::gemm::LinearParams, out_cols: usize, swiglu: bool) -> Result<()> {
    let m = params.m as usize;
    let cfg = launch_config(m, out_cols, swiglu);
    let func = if m == 1 { &gpu.kernels.gemv_bf16 } else { &gpu.kernels.gemv_multi_bf16 };
    // SAFETY: buffers checked by linear_params (lengths, 16-byte alignment, K % 8, N % 8/16);
    // 1 <= M <= 8 (checked by the callers) selects the entry point and a row-count
    // instantiation; out_cols is a multiple of 8, so every warp's columns lie inside the matrix
    // or all past it (those warps return). As a dependent launch: every thread waits for the
    // kernel before before it touches A, the residual or the output (kernels/gemv.cu,
    // `prefetch_then_wait`; tests/gpu/emulated/gemm.rs checks it with A poisoned until then).
    gpu.launched(kernel_name(m), unsafe { gpu.launch_after_previous(func, cfg, &mut [arg(&params)]) })
}
