//! `embedding_gather_bf16` (kernels/embedding.cu): out[t, :] = table[ids[t], :].

use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig, PushKernelArg};
use half::bf16;

use super::check::{as_i32, ensure, vector_buffer};
use crate::gpu::error::Result;
use crate::gpu::Gpu;

const KERNEL: &str = "embedding_gather_bf16";

/// ids: `[n_tokens]` in `[0, vocab)` (out-of-range ids trap the launch); table: `[vocab, dim]`;
/// out: `[n_tokens, dim]`. `dim` must be a multiple of 8.
pub fn embedding_gather(
    gpu: &Gpu,
    ids: &CudaView<i32>,
    table: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    vocab: usize,
    dim: usize,
) -> Result<()> {
    let n_tokens = ids.len();
    ensure(dim > 0 && dim % 8 == 0, KERNEL, || format!("dim {dim} is not a positive multiple of 8"))?;
    vector_buffer(&gpu.stream, KERNEL, "table", table, vocab * dim)?;
    vector_buffer(&gpu.stream, KERNEL, "out", out, n_tokens * dim)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let (dim_i, vocab_i) = (as_i32(KERNEL, "dim", dim)?, as_i32(KERNEL, "vocab", vocab)?);
    as_i32(KERNEL, "n_tokens", n_tokens)?;
    let cfg = launch_config(n_tokens, dim);
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.embedding_gather_bf16);
    launch.arg(ids).arg(table).arg(out).arg(&dim_i).arg(&vocab_i);
    // SAFETY: table holds vocab*dim and out n_tokens*dim elements, both 16-byte aligned, dim % 8
    // == 0; the kernel reads ids[0..n_tokens) and traps on an id outside [0, vocab).
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
}

/// One block per token, a thread per 16-byte chunk of the row (32 to 256 threads).
pub fn launch_config(n_tokens: usize, dim: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n_tokens as u32, 1, 1), block_dim: ((dim / 8).clamp(32, 256) as u32, 1, 1), shared_mem_bytes: 0 }
}
