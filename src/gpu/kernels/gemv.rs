//! `gemv_bf16` (kernels/gemv.cu): the decode-sized (M <= 8) path of `A . W^T`, reading every
//! weight once at full bandwidth; same epilogues and fused gate/up layout as `gemm`.

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::bf16;

use super::check::ensure;
use super::gemm::{linear_params, Epilogue, GemmShape};
use crate::gpu::error::Result;
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
    launch(gpu, params, epilogue.out_cols(shape.n))
}

/// out = A . W^T stored as f32 (the LM head's logits), 1 <= M <= 8. Shapes as for `gemv`.
pub fn gemv_f32(gpu: &Gpu, a: &CudaView<bf16>, w: &CudaView<bf16>, out: &mut CudaViewMut<f32>, shape: GemmShape) -> Result<()> {
    ensure((1..=MAX_M).contains(&shape.m), KERNEL, || format!("M = {} is outside 1..={MAX_M}", shape.m))?;
    let params = linear_params(gpu, KERNEL, a, w, out, shape, None)?;
    launch(gpu, params, shape.n)
}

/// `gemv`'s launch: one warp per output column (a gate/up pair for SwiGLU), 8 warps a block.
pub fn launch_config(out_cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (out_cols.div_ceil(WARPS) as u32, 1, 1),
        block_dim: ((WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launch(gpu: &Gpu, params: super::gemm::LinearParams, warps_needed: usize) -> Result<()> {
    let cfg = launch_config(warps_needed);
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.gemv_bf16);
    launch.arg(&params);
    // SAFETY: buffers checked by linear_params (lengths, 16-byte alignment, K % 8, N % 8/16);
    // 1 <= M <= 8 selects a row-count instantiation; warps past the last output return.
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
}
