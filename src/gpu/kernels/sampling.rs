//! `sample_tokens_f32` (kernels/sampling.cu): greedy or seeded sampling of one token per
//! sequence on the GPU, by the CPU sampler's rule (src/sampling).

use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

use super::check::{allow_dynamic_smem, as_i32, ensure};
use crate::gpu::error::Result;
use crate::gpu::{Gpu, Kernels};
use crate::sampling::{rng, SamplingParams};

const KERNEL: &str = "sample_tokens_f32";
/// Candidates sorted in shared memory (kernels/sampling.cu's CAP) x (key + weight).
const SMEM_BYTES: usize = 8192 * 16;

/// Mirror of `SampleParams` in kernels/sampling.cu: one sequence's parameters for one step.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleParams {
    /// The seeded uniform of (seed, step).
    pub u: f64,
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub top_k: i32,
}
const _: () = assert!(std::mem::size_of::<SampleParams>() == 24);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for SampleParams {}
// SAFETY: all-zero bits are a valid value of every field (0.0 and 0).
unsafe impl ValidAsZeroBits for SampleParams {}

impl SampleParams {
    /// The draw of step `step` of a run with `params` (validated by the caller).
    pub fn new(params: &SamplingParams, step: u64) -> Self {
        SampleParams {
            u: rng::uniform(params.seed, step),
            temperature: params.temperature,
            top_p: params.top_p,
            min_p: params.min_p,
            top_k: params.top_k.min(i32::MAX as usize) as i32,
        }
    }
}

/// What the kernel wrote for one sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampled {
    Token(u32),
    /// NaN or +inf logits, or none finite.
    BadLogits,
    /// More candidates than the kernel sorts: sample this one on the host.
    HostFallback,
}

impl Sampled {
    pub fn from_raw(v: i32) -> Sampled {
        match v {
            t if t >= 0 => Sampled::Token(t as u32),
            -1 => Sampled::BadLogits,
            _ => Sampled::HostFallback,
        }
    }
}

/// Raises the kernel's dynamic shared-memory limit (once, at start-up).
pub(crate) fn configure(kernels: &Kernels) -> Result<()> {
    allow_dynamic_smem(&kernels.sample_tokens_f32, "sample_tokens_f32", SMEM_BYTES)
}

/// The launch for `n` rows: one block of 512 threads per row, the candidate buffer in dynamic
/// shared memory.
pub fn launch_config(n: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig { grid_dim: (as_i32(KERNEL, "n_seqs", n)? as u32, 1, 1), block_dim: (512, 1, 1), shared_mem_bytes: SMEM_BYTES as u32 })
}

/// tokens[s] = the token drawn from logits[s] with params[s] (see `Sampled::from_raw`).
/// logits: `[n_seqs, vocab]`; params, tokens: `[n_seqs]`.
pub fn sample_tokens(
    gpu: &Gpu,
    logits: &CudaView<f32>,
    vocab: usize,
    params: &CudaView<SampleParams>,
    tokens: &mut CudaViewMut<i32>,
) -> Result<()> {
    let n = params.len();
    ensure(vocab > 0 && logits.len() == n * vocab, KERNEL, || format!("{} logits for {n} rows of {vocab}", logits.len()))?;
    ensure(tokens.len() == n, KERNEL, || format!("{} outputs for {n} sequences", tokens.len()))?;
    if n == 0 {
        return Ok(());
    }
    let vocab_i = as_i32(KERNEL, "vocab", vocab)?;
    let cfg = launch_config(n)?;
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.sample_tokens_f32);
    launch.arg(logits).arg(params).arg(tokens).arg(&vocab_i);
    // SAFETY: logits hold n rows of vocab, params and tokens n entries; the kernel's shared
    // memory (raised in `configure`) bounds its candidates and it reports overflow instead.
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
}
