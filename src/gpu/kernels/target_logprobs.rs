//! `target_logprobs_f32` (kernels/sampling.cu): per logits row, the log-probability of a given
//! next token, for scoring text (`nemo perplexity`) without copying `[vocab]` rows to the host;
//! as `sampling::token_logprobs` computes it there.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

use super::check::{as_i32, ensure};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::Gpu;

const KERNEL: &str = "target_logprobs_f32";

/// One block of 512 threads per row (the kernel's THREADS).
pub fn launch_config(n_rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n_rows as u32, 1, 1), block_dim: (512, 1, 1), shared_mem_bytes: 0 }
}

/// `out[i] = log_softmax(logits[i])[targets[i]]` for the `targets.len()` rows of `logits`
/// (`[n_rows, vocab]`), NaN for a row with NaN, +inf or nothing finite. `targets` are uploaded
/// into `targets_dev` (at least as long).
pub fn target_logprobs(
    gpu: &Gpu,
    logits: &CudaView<f32>,
    vocab: usize,
    targets: &[u32],
    targets_dev: &mut CudaSlice<i32>,
    out: &mut CudaViewMut<f32>,
) -> Result<()> {
    let n = targets.len();
    ensure(vocab > 0 && logits.len() == n * vocab, KERNEL, || format!("{} logits for {n} rows of {vocab}", logits.len()))?;
    ensure(out.len() == n && targets_dev.len() >= n, KERNEL, || format!("{n} rows, {} outputs, {} target slots", out.len(), targets_dev.len()))?;
    if let Some((i, t)) = targets.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        return Err(GpuError::BadArgument { kernel: KERNEL, what: format!("target {t} of row {i} is outside the vocabulary ({vocab})") });
    }
    if n == 0 {
        return Ok(());
    }
    as_i32(KERNEL, "rows", n)?;
    let ids: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    gpu.stream.memcpy_htod(&ids, &mut targets_dev.slice_mut(0..n)).map_err(GpuError::driver("uploading scored targets"))?;
    let vocab_i = as_i32(KERNEL, "vocab", vocab)?;
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.target_logprobs_f32);
    launch.arg(logits).arg(&*targets_dev).arg(out).arg(&vocab_i);
    // SAFETY: logits hold n rows of vocab; targets_dev's first n entries are below vocab (checked
    // and uploaded above); out holds n floats.
    gpu.launched(KERNEL, unsafe { launch.launch(launch_config(n)) }.map(|_| ()))
}
