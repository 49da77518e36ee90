//! `apply_token_mask_f32` (kernels/sampling.cu): a grammar's token masks (src/structured) set
//! the forbidden logits of their rows to -inf on the device, before the logit edits and the
//! sampler, as `sampling::apply_token_mask` does on the host.

use cudarc::driver::{CudaSlice, CudaViewMut, LaunchConfig, PushKernelArg};

use super::check::{as_i32, ensure};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::Gpu;
use crate::sampling::mask_words;

const KERNEL: &str = "apply_token_mask_f32";

/// One step's masks, flattened and checked on the host: `masks` holds `rows.len()` masks of
/// `mask_words(vocab)` words, the one for logits row `rows[i]` at `i`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MaskBatch {
    pub masks: Vec<u32>,
    pub rows: Vec<i32>,
}

impl MaskBatch {
    /// `per_row[r]`: row r's mask, or None for an unconstrained row.
    pub fn new(per_row: &[Option<&[u32]>], vocab: usize) -> Result<Self> {
        let words = mask_words(vocab);
        let mut batch = MaskBatch::default();
        for (r, mask) in per_row.iter().enumerate() {
            let Some(mask) = mask else { continue };
            ensure(mask.len() == words, KERNEL, || format!("row {r}'s mask has {} words, {vocab} logits need {words}", mask.len()))?;
            batch.masks.extend_from_slice(mask);
            batch.rows.push(as_i32(KERNEL, "row", r)?);
        }
        Ok(batch)
    }
}

/// Launch shape: one thread per logit, one grid row per mask.
pub fn launch_config(vocab: usize, n_masked: usize) -> Result<LaunchConfig> {
    ensure(n_masked <= 65_535, KERNEL, || format!("{n_masked} masked rows in one step (at most 65535)"))?;
    Ok(LaunchConfig { grid_dim: (vocab.div_ceil(256) as u32, n_masked as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })
}

/// The device buffers, grown to the largest step seen.
#[derive(Default)]
pub struct TokenMasks {
    masks: Option<CudaSlice<u32>>,
    rows: Option<CudaSlice<i32>>,
}

impl TokenMasks {
    /// Masks `logits` (`[n_rows, vocab]`) in place by `batch` (rows below `n_rows`).
    pub fn apply(&mut self, gpu: &Gpu, logits: &mut CudaViewMut<f32>, n_rows: usize, vocab: usize, batch: &MaskBatch) -> Result<()> {
        ensure(vocab > 0 && logits.len() == n_rows * vocab, KERNEL, || format!("{} logits for {n_rows} rows of {vocab}", logits.len()))?;
        ensure(batch.rows.iter().all(|&r| (r as usize) < n_rows), KERNEL, || format!("a masked row past the {n_rows} rows"))?;
        let (n, words) = (batch.rows.len(), mask_words(vocab));
        ensure(batch.masks.len() == n * words, KERNEL, || format!("{} mask words for {n} rows of {words}", batch.masks.len()))?;
        if n == 0 {
            return Ok(());
        }
        let cfg = launch_config(vocab, n)?;
        let fits = |len: Option<usize>, need: usize| len.is_some_and(|len| len >= need);
        if !(fits(self.masks.as_ref().map(|b| b.len()), n * words) && fits(self.rows.as_ref().map(|b| b.len()), n)) {
            // Both or neither: a failed allocation leaves the old pair.
            let alloc = || GpuError::driver("allocating token masks");
            let masks = gpu.stream.alloc_zeros::<u32>(n.next_power_of_two() * words).map_err(alloc())?;
            let rows = gpu.stream.alloc_zeros::<i32>(n.next_power_of_two()).map_err(alloc())?;
            (self.masks, self.rows) = (Some(masks), Some(rows));
        }
        let (Some(masks), Some(rows)) = (self.masks.as_mut(), self.rows.as_mut()) else { unreachable!("allocated above") };
        gpu.stream.memcpy_htod(&batch.masks, &mut masks.slice_mut(0..n * words)).map_err(GpuError::driver("uploading token masks"))?;
        gpu.stream.memcpy_htod(&batch.rows, &mut rows.slice_mut(0..n)).map_err(GpuError::driver("uploading token masks"))?;
        let (vocab_i, words_i) = (as_i32(KERNEL, "vocab", vocab)?, as_i32(KERNEL, "words", words)?);
        let mut launch = gpu.stream.launch_builder(&gpu.kernels.apply_token_mask_f32);
        launch.arg(logits).arg(&*masks).arg(&*rows).arg(&vocab_i).arg(&words_i);
        // SAFETY: logits hold n_rows rows of vocab; masks hold n masks of words (the kernel reads
        // word t / 32 < words of each); rows hold n rows below n_rows (checked above).
        gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
    }
}
