//! `rmsnorm_bf16` and `fused_add_rmsnorm_bf16` (kernels/rmsnorm.cu).

use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::bf16;

use super::check::{address, as_i32, ensure, vector_buffer};
use crate::gpu::launch::arg;
use crate::gpu::error::Result;
use crate::gpu::Gpu;

/// The kernel keeps one f32 row in shared memory; beyond 48 KiB it would need an opt-in.
const MAX_DIM: usize = 48 * 1024 / 4;

/// Both kernels' launch: one block per token, a thread per 8 elements (32..=512), the f32 row in
/// dynamic shared memory.
pub fn launch_config(kernel: &'static str, n_tokens: usize, dim: usize) -> Result<LaunchConfig> {
    ensure(dim > 0 && dim % 8 == 0 && dim <= MAX_DIM, kernel, || {
        format!("dim {dim} must be a positive multiple of 8, at most {MAX_DIM}")
    })?;
    Ok(LaunchConfig {
        grid_dim: (as_i32(kernel, "n_tokens", n_tokens)? as u32, 1, 1),
        block_dim: ((dim / 8).next_multiple_of(32).clamp(32, 512) as u32, 1, 1),
        shared_mem_bytes: (dim * 4) as u32,
    })
}

/// out[t] = input[t] * rsqrt(mean(input[t]^2) + eps) * weight.
/// input, out: `[n_tokens, dim]`; weight: `[dim]`; dim a multiple of 8.
pub fn rmsnorm(
    gpu: &Gpu,
    input: &CudaView<bf16>,
    weight: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    dim: usize,
    eps: f32,
) -> Result<()> {
    const KERNEL: &str = "rmsnorm_bf16";
    let n_tokens = input.len() / dim.max(1);
    let cfg = launch_config(KERNEL, n_tokens, dim)?;
    vector_buffer(&gpu.stream, KERNEL, "input", input, n_tokens * dim)?;
    vector_buffer(&gpu.stream, KERNEL, "weight", weight, dim)?;
    vector_buffer(&gpu.stream, KERNEL, "out", out, n_tokens * dim)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let func: &CudaFunction = &gpu.kernels.rmsnorm_bf16;
    let dim_i = dim as i32;
    let (input_ptr, out_ptr, weight_ptr) = (address(&gpu.stream, input), address(&gpu.stream, &*out), address(&gpu.stream, weight));
    // SAFETY: input and out hold n_tokens*dim elements, weight dim, all 16-byte aligned; dim % 8
    // == 0 and dim*4 bytes of dynamic shared memory (<= 48 KiB) are requested; the kernel waits
    // for the one before it first. The arguments: three device pointers, an int, a float.
    let args = &mut [arg(&input_ptr), arg(&weight_ptr), arg(&out_ptr), arg(&dim_i), arg(&eps)];
    gpu.launched(KERNEL, unsafe { gpu.launch_after_previous(func, cfg, args) })
}

/// residual[t] += x[t] (rounded to bf16, in place); out[t] = rmsnorm(residual[t]) * weight.
/// residual, x, out: `[n_tokens, dim]`; weight: `[dim]`; dim a multiple of 8.
pub fn fused_add_rmsnorm(
    gpu: &Gpu,
    residual: &mut CudaViewMut<bf16>,
    x: &CudaView<bf16>,
    weight: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    dim: usize,
    eps: f32,
) -> Result<()> {
    const KERNEL: &str = "fused_add_rmsnorm_bf16";
    let n_tokens = residual.len() / dim.max(1);
    let cfg = launch_config(KERNEL, n_tokens, dim)?;
    vector_buffer(&gpu.stream, KERNEL, "residual", residual, n_tokens * dim)?;
    vector_buffer(&gpu.stream, KERNEL, "x", x, n_tokens * dim)?;
    vector_buffer(&gpu.stream, KERNEL, "weight", weight, dim)?;
    vector_buffer(&gpu.stream, KERNEL, "out", out, n_tokens * dim)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let dim_i = dim as i32;
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.fused_add_rmsnorm_bf16);
    launch.arg(residual).arg(x).arg(weight).arg(out).arg(&dim_i).arg(&eps);
    // SAFETY: as for `rmsnorm`, with residual and x of n_tokens*dim elements each.
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
}
