//! `sample_tokens_f32` (kernels/sampling.cu): greedy or seeded sampling of one token per
//! sequence on the GPU, by the CPU sampler's rule (src/sampling); `apply_logit_edits_f32`:
//! logit bias and penalties before it (src/sampling/penalties.rs).

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};

use super::check::{allow_dynamic_smem, as_i32, ensure};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::{download, Gpu, Kernels};
use crate::sampling::{rng, LogitEdit, SamplingParams};

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

const EDITS_KERNEL: &str = "apply_logit_edits_f32";

// SAFETY: `LogitEdit` is `#[repr(C)]` plain old data (u32 and three f32, size asserted against
// kernels/sampling.cu's mirror); all-zero bits are a valid value.
unsafe impl DeviceRepr for LogitEdit {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for LogitEdit {}

/// One step's edits, flattened and checked on the host: within a row every token is below the
/// vocabulary and appears once (so no two threads of the kernel write one logit).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EditBatch {
    pub edits: Vec<LogitEdit>,
    /// The logits row of each edit.
    pub rows: Vec<i32>,
    /// Row `r`'s edits are `starts[r]..starts[r + 1]`.
    pub starts: Vec<usize>,
}

impl EditBatch {
    /// `per_row[r]`: row r's edits, tokens strictly ascending (as `PenaltyState` keeps them).
    pub fn new(per_row: &[&[LogitEdit]], vocab: usize) -> Result<Self> {
        let mut batch = EditBatch { starts: vec![0], ..Default::default() };
        for (r, edits) in per_row.iter().enumerate() {
            for (i, e) in edits.iter().enumerate() {
                ensure((e.token as usize) < vocab, EDITS_KERNEL, || format!("row {r}: token {} outside the vocabulary of {vocab}", e.token))?;
                ensure(i == 0 || edits[i - 1].token < e.token, EDITS_KERNEL, || {
                    format!("row {r}: tokens not strictly ascending at edit {i} (token {})", e.token)
                })?;
            }
            batch.edits.extend_from_slice(edits);
            batch.rows.extend(std::iter::repeat_n(as_i32(EDITS_KERNEL, "row", r)?, edits.len()));
            batch.starts.push(batch.edits.len());
        }
        Ok(batch)
    }

    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }
}

/// The device side of `apply_logit_edits`: buffers grown to the largest step seen, and the last
/// step's batch, whose saved raw logits restore a row for its logprobs.
#[derive(Default)]
pub struct LogitEdits {
    edits: Option<CudaSlice<LogitEdit>>,
    rows: Option<CudaSlice<i32>>,
    saved: Option<CudaSlice<f32>>,
    last: EditBatch,
}

impl LogitEdits {
    /// Edits `logits` (`[n_rows, vocab]`) in place by `batch`, keeping the raw values.
    pub fn apply(&mut self, gpu: &Gpu, logits: &mut CudaViewMut<f32>, vocab: usize, batch: EditBatch) -> Result<()> {
        let n_rows = batch.starts.len() - 1;
        ensure(vocab > 0 && logits.len() == n_rows * vocab, EDITS_KERNEL, || format!("{} logits for {n_rows} rows of {vocab}", logits.len()))?;
        self.last = batch;
        let n = self.last.edits.len();
        if n == 0 {
            return Ok(());
        }
        let fits = |len: Option<usize>| len.is_some_and(|len| len >= n);
        let (edits_len, rows_len, saved_len) =
            (self.edits.as_ref().map(|b| b.len()), self.rows.as_ref().map(|b| b.len()), self.saved.as_ref().map(|b| b.len()));
        if !(fits(edits_len) && fits(rows_len) && fits(saved_len)) {
            // All three or none: a failed allocation leaves the old buffers, never a mix.
            let cap = n.next_power_of_two();
            let alloc = || GpuError::driver("allocating logit edits");
            let edits = gpu.stream.alloc_zeros::<LogitEdit>(cap).map_err(alloc())?;
            let rows = gpu.stream.alloc_zeros::<i32>(cap).map_err(alloc())?;
            let saved = gpu.stream.alloc_zeros::<f32>(cap).map_err(alloc())?;
            (self.edits, self.rows, self.saved) = (Some(edits), Some(rows), Some(saved));
        }
        let (Some(edits), Some(rows), Some(saved)) = (self.edits.as_mut(), self.rows.as_mut(), self.saved.as_mut()) else {
            unreachable!("allocated above")
        };
        let upload = GpuError::driver("uploading logit edits");
        gpu.stream.memcpy_htod(&self.last.edits, &mut edits.slice_mut(0..n)).map_err(upload)?;
        gpu.stream.memcpy_htod(&self.last.rows, &mut rows.slice_mut(0..n)).map_err(GpuError::driver("uploading logit edits"))?;
        let (n_i, vocab_i) = (as_i32(EDITS_KERNEL, "n_edits", n)?, as_i32(EDITS_KERNEL, "vocab", vocab)?);
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut launch = gpu.stream.launch_builder(&gpu.kernels.apply_logit_edits_f32);
        // The buffers hold at least n; the kernel touches the first n.
        launch.arg(logits).arg(&*edits).arg(&*rows).arg(saved).arg(&n_i).arg(&vocab_i);
        // SAFETY: logits hold n_rows rows of vocab; every edit's token is below vocab and its
        // row below n_rows (checked by EditBatch::new and above); edits, rows and saved hold n.
        gpu.launched(EDITS_KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
    }

    /// The logits buffer was rewritten: no edits to undo.
    pub fn forget(&mut self) {
        self.last = EditBatch::default();
    }

    /// Puts back, in `row_logits` (row `row` of the logits since the last `apply`), the raw
    /// logits its edits replaced; nothing for a row without edits.
    pub fn restore_row(&self, gpu: &Gpu, row: usize, row_logits: &mut [f32]) -> Result<()> {
        let range = match self.last.starts.get(row..row + 2) {
            Some(s) if s[0] < s[1] => s[0]..s[1],
            _ => return Ok(()),
        };
        let saved = download(gpu, &self.saved.as_ref().expect("edits were applied").slice(range.clone()))?;
        for (e, raw) in self.last.edits[range].iter().zip(saved) {
            let at = row_logits.get_mut(e.token as usize);
            *at.ok_or_else(|| GpuError::BadArgument { kernel: EDITS_KERNEL, what: format!("a row of fewer than {} logits", e.token + 1) })? = raw;
        }
        Ok(())
    }
}
