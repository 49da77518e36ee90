//! `fill_uniform_bf16` (kernels/random.cu): seeded uniform values for `--dummy-weights`.

use cudarc::driver::{CudaViewMut, LaunchConfig, PushKernelArg};
use half::bf16;

use crate::gpu::error::Result;
use crate::gpu::Gpu;

/// out[i] = uniform(-scale, scale), a pure function of (seed, i).
pub fn fill_uniform(gpu: &Gpu, out: &mut CudaViewMut<bf16>, seed: u64, scale: f32) -> Result<()> {
    let n = out.len() as u64;
    if n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid_dim: (4 * gpu.info.multiprocessors as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.fill_uniform_bf16);
    launch.arg(out).arg(&n).arg(&seed).arg(&scale);
    // SAFETY: the grid-stride loop writes out[0..n) and nothing else.
    gpu.launched("fill_uniform_bf16", unsafe { launch.launch(cfg) }.map(|_| ()))
}
