//! The forward pass: per chunk of tokens, embedding -> per layer [RMSNorm, fused QKV GEMM, RoPE +
//! KV write, attention, O GEMM + residual, RMSNorm, gate/up GEMM + SwiGLU, down GEMM + residual]
//! -> final norm -> LM head (f32 logits of the last token).

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use half::bf16;

use super::kv_cache::{KvLayer, KvLayerMut};
use super::{GpuKvCache, GpuWeights, KvSize, BLOCK_SIZE};
use crate::engine::KvCacheDtype;
use crate::gpu::kernels::attention_e4m3::{attention_decode_e4m3, attention_decode_rope_e4m3, attention_prefill_e4m3};
use crate::gpu::error::{GpuError, Result};
use super::graphs::{graph_batch, ladder_up_to, DecodeGraphs, GraphReport};
use super::profile::{mark, Breakdown, StepProfiler};
use super::step_layout::{step_layout, StepLayout};
use super::kernel_choice::{check_kv_dtype_kernels, decode_kernel_from_env, prefill_kernel_from_env, rope_in_decode_from_env, GemmKernel, PrefillKernel};
use crate::gpu::kernels::attention::{
    attention_decode_rope, attention_decode_with, attention_prefill, decode_splits, AttentionShape, DecodeKernel,
    DecodeWorkspace, DeviceAttentionMeta,
};
use crate::gpu::kernels::embedding::embedding_gather;
use crate::gpu::kernels::gemm::{gemm, gemm_f32, gemm_split_k_with, split_k_workspace_len, Epilogue, GemmShape, SplitGemm};
use crate::gpu::kernels::gemm_wgmma::{gemm_wgmma, gemm_wgmma_f32};
use crate::gpu::kernels::gemv::{gemv_f32, gemv_normed, RowNorm, MAX_M};
use crate::gpu::kernels::rmsnorm::rmsnorm;
use crate::gpu::kernels::rope::{rope_cos_sin_table, rope_write_kv, rope_write_kv_e4m3, RopeShape, RopeTable};
use crate::gpu::kernels::sampling::{sample_tokens, EditBatch, LogitEdits, SampleParams, Sampled};
use crate::gpu::kernels::token_mask::{MaskBatch, TokenMasks};
use crate::gpu::kernels::target_logprobs::target_logprobs;
use crate::gpu::{download, Gpu};
use crate::engine::SampleSpec;
use crate::sampling::{sample_at, LogitEdit, SamplingError};

/// Activation buffers for up to `max_chunk` tokens per forward call.
struct Scratch {
    hidden: CudaSlice<bf16>, // [T, dim]: the residual stream
    normed: CudaSlice<bf16>, // [T, dim]
    qkv: CudaSlice<bf16>,    // [T, q_dim + 2 kv_dim]
    attn: CudaSlice<bf16>,   // [T, q_dim]
    ffn: CudaSlice<bf16>,    // [T, ffn_dim]
    rows: CudaSlice<bf16>,   // [max_seqs, dim]: the rows whose logits are wanted
    logits: CudaSlice<f32>,  // [max_seqs, vocab]
    targets: CudaSlice<i32>, // [max_seqs]: the tokens whose logprobs `score_chunk` wants
    scores: CudaSlice<f32>,  // [max_seqs]: their logprobs
    sample_params: CudaSlice<SampleParams>, // [max_seqs]
    sampled: CudaSlice<i32>, // [max_seqs]
    ids: CudaSlice<i32>,     // [T]
    logit_rows: CudaSlice<i32>, // [max_seqs]: rows of `hidden` whose logits are wanted
    positions: CudaSlice<i32>,
    slots: CudaSlice<i32>,
    split_k: CudaSlice<f32>, // split-K partials (GemmKernel::*SplitK), split_k_workspace_len floats
}

/// One sequence's part of a batched step (see `engine::StepEntry`).
#[derive(Clone, Copy)]
pub struct SeqChunk<'a> {
    pub ids: &'a [i32],
    pub ctx_len: usize,
    pub block_table: &'a [u32],
    pub want_logits: bool,
}

pub struct CudaModel {
    pub gpu: Gpu,
    /// The GEMM used for every linear layer with M > 8 (and the LM head over > 8 rows).
    pub gemm: GemmKernel,
    /// The attention kernel of decode steps.
    pub decode: DecodeKernel,
    /// The attention kernel of prefill and mixed steps.
    pub prefill: PrefillKernel,
    /// Decode steps rotate their new tokens inside the decode attention kernel
    /// (`attention_decode_rope`) instead of in rope_write_kv (`NEMO_DECODE_ROPE`).
    pub rope_in_decode: bool,
    pub weights: GpuWeights,
    pub kv: GpuKvCache,
    rope: RopeTable,
    scratch: Scratch,
    decode_workspace: DecodeWorkspace,
    max_decode_splits: usize,
    /// Most tokens one step takes (longer prompts are prefilled in chunks).
    pub max_chunk: usize,
    /// Most sequences one step takes.
    pub max_seqs: usize,
    /// Decode-step CUDA graphs, when the GPU was opened with them (`GpuOptions`).
    graphs: Option<DecodeGraphs>,
    /// Set for the one step `profile_step` runs.
    profiler: Option<StepProfiler>,
    /// Logit bias and penalties of the last sampled step (raw values kept for logprobs).
    logit_edits: LogitEdits,
    token_masks: TokenMasks,
    /// The step `launch_sampled` queued and `sample_launched` has yet to draw from.
    launched: Option<LaunchedStep>,
}

/// What a launched step left in `scratch.logits`: `rows` rows (graph padding included), the
/// first of them those of the entries whose `want_logits` is set in `wants`.
struct LaunchedStep {
    wants: Vec<bool>,
    rows: usize,
}

/// The RMSNorm before a linear layer: its weight and eps, and where the rows normalised by the
/// norm's own kernel go when the product cannot take the norm in (M > 8).
struct Norm<'a, 'b> {
    weight: &'a CudaSlice<bf16>,
    eps: f32,
    scratch: &'a mut CudaViewMut<'b, bf16>,
}

/// `A . W^T`, of `rmsnorm(A)` when `norm` is given: on the bandwidth path for M <= 8 (the norm
/// inside the GEMV: A read once, no launch of its own), on tensor cores above (the norm first;
/// `split_k`: the workspace of the split-K kernels).
#[allow(clippy::too_many_arguments)]
fn linear(
    gpu: &Gpu,
    kernel: GemmKernel,
    a: &CudaView<bf16>,
    norm: Option<Norm<'_, '_>>,
    w: &CudaSlice<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epi: Epilogue,
    split_k: &mut CudaSlice<f32>,
) -> Result<()> {
    if shape.m <= MAX_M {
        let weight = norm.as_ref().map(|n| n.weight.as_view());
        let row_norm = norm.as_ref().zip(weight.as_ref()).map(|(n, weight)| RowNorm { weight, eps: n.eps });
        return gemv_normed(gpu, row_norm, a, &w.as_view(), out, shape, epi);
    }
    let normed;
    let a = match norm {
        Some(n) => {
            rmsnorm(gpu, a, &n.weight.as_view(), n.scratch, shape.k, n.eps)?;
            normed = n.scratch.as_view();
            &normed
        }
        None => a,
    };
    match kernel {
        GemmKernel::MmaSync => gemm(gpu, a, &w.as_view(), out, shape, epi),
        GemmKernel::Wgmma => gemm_wgmma(gpu, a, &w.as_view(), out, shape, epi),
        GemmKernel::MmaSplitK => gemm_split_k_with(gpu, SplitGemm::Mma, a, &w.as_view(), out, shape, epi, split_k),
        GemmKernel::WgmmaSplitK => gemm_split_k_with(gpu, SplitGemm::Wgmma, a, &w.as_view(), out, shape, epi, split_k),
    }
}

/// Graph executables go before the modules whose kernels they launch (fields drop in declaration
/// order, and `gpu`, which holds the modules, comes first).
impl Drop for CudaModel {
    fn drop(&mut self) {
        self.graphs.take();
    }
}

impl CudaModel {
    /// Allocates scratch for steps of up to `max_chunk` tokens from up to `max_seqs` sequences,
    /// then the bf16 KV cache `kv` asks for (a token count, or all the memory left).
    pub fn new(gpu: Gpu, weights: GpuWeights, kv: impl Into<KvSize>, max_chunk: usize, max_seqs: usize) -> Result<CudaModel> {
        Self::with_kv_dtype(gpu, weights, kv, KvCacheDtype::Auto, max_chunk, max_seqs)
    }

    /// `new` with the KV cache stored as `kv_dtype` says (`--kv-cache-dtype`). An FP8 cache
    /// refuses, by name, the kernel choices that have no FP8 variant yet (the wgmma prefill
    /// kernels): no silent fallback.
    pub fn with_kv_dtype(
        gpu: Gpu,
        weights: GpuWeights,
        kv: impl Into<KvSize>,
        kv_dtype: KvCacheDtype,
        max_chunk: usize,
        max_seqs: usize,
    ) -> Result<CudaModel> {
        let gemm = GemmKernel::from_env()?;
        let decode = decode_kernel_from_env(kv_dtype)?;
        let prefill = prefill_kernel_from_env(kv_dtype)?;
        let rope_in_decode = rope_in_decode_from_env()?;
        check_kv_dtype_kernels(kv_dtype, prefill, decode)?;
        let max_seqs = max_seqs.clamp(1, max_chunk);
        let c = weights.config.clone();
        let t = max_chunk;
        let alloc = |n: usize| gpu.stream.alloc_zeros::<bf16>(n).map_err(GpuError::driver("allocating activations"));
        let alloc_i32 = |n: usize| gpu.stream.alloc_zeros::<i32>(n).map_err(GpuError::driver("allocating activations"));
        let scratch = Scratch {
            hidden: alloc(t * c.dim)?,
            normed: alloc(t * c.dim)?,
            qkv: alloc(t * (c.q_dim() + 2 * c.kv_dim()))?,
            attn: alloc(t * c.q_dim())?,
            ffn: alloc(t * c.ffn_dim)?,
            rows: alloc(max_seqs * c.dim)?,
            logits: gpu.stream.alloc_zeros::<f32>(max_seqs * c.vocab_size).map_err(GpuError::driver("allocating logits"))?,
            targets: alloc_i32(max_seqs)?,
            scores: gpu.stream.alloc_zeros::<f32>(max_seqs).map_err(GpuError::driver("allocating scores"))?,
            sample_params: gpu
                .stream
                .alloc_zeros::<SampleParams>(max_seqs)
                .map_err(GpuError::driver("allocating sampling parameters"))?,
            sampled: alloc_i32(max_seqs)?,
            ids: alloc_i32(t)?,
            logit_rows: alloc_i32(max_seqs)?,
            positions: alloc_i32(t)?,
            slots: alloc_i32(t)?,
            split_k: gpu
                .stream
                .alloc_zeros::<f32>(split_k_workspace_len(gpu.info.multiprocessors))
                .map_err(GpuError::driver("allocating the split-K workspace"))?,
        };
        let max_decode_splits = 2 * gpu.info.multiprocessors;
        let decode_workspace = DecodeWorkspace::new(&gpu, max_seqs, c.n_heads, max_decode_splits, c.head_dim)?;
        // Last of the large allocations, so that filling the free memory leaves the rest theirs.
        let kv = GpuKvCache::new(&gpu, &c, kv.into(), kv_dtype)?;
        let rope = rope_cos_sin_table(&gpu, kv.n_slots.min(c.max_context), c.head_dim, c.rope_theta)?;
        let graphs = if gpu.cuda_graphs {
            // Rows as wide as one sequence's whole capacity, for up to max_seqs sequences.
            let rows = rope.max_positions.div_ceil(BLOCK_SIZE);
            Some(DecodeGraphs::new(DeviceAttentionMeta::persistent(&gpu, max_seqs, rows, BLOCK_SIZE, kv.n_blocks())?))
        } else {
            None
        };
        Ok(CudaModel {
            gpu, gemm, decode, prefill, rope_in_decode, graphs, weights, kv, rope, scratch, decode_workspace, max_decode_splits, max_chunk, max_seqs,
            profiler: None,
            logit_edits: LogitEdits::default(),
            token_masks: TokenMasks::default(),
            launched: None,
        })
    }

    /// The kernel choices this model runs with (`kernel_choice.rs`, `GpuOptions`), for every
    /// benchmark's header: "GEMM MmaSync | prefill attention mma-flash | decode attention split-k | ...".
    pub fn settings(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "GEMM {:?} | prefill attention {:?} | decode attention {:?} | CUDA graphs {} | PDL {} | KV cache {} tokens {} ({:.1} GB)",
            self.gemm,
            self.prefill,
            self.decode,
            on(self.graphs.is_some()),
            on(self.gpu.pdl),
            self.kv.n_slots,
            self.kv.dtype.gpu_label(),
            self.kv.bytes() as f64 / 1e9
        )
    }

    /// Captures the decode graph of every rung of the batch ladder up to `max_seqs`
    /// (`ladder_up_to`), so that a server's batch size can wander without a capture in the middle
    /// of serving (vLLM captures at start-up too). Each rung runs one step of padding rows (they
    /// touch only the reserved last KV block), which captures and replays its graph. None when
    /// graphs are off; else what `graph_report` says after.
    pub fn capture_decode_graphs(&mut self) -> Result<Option<GraphReport>> {
        if self.graphs.is_none() {
            return Ok(None);
        }
        let reserved = [self.padding_block()];
        let pad = SeqChunk { ids: &[0], ctx_len: 1, block_table: &reserved, want_logits: true };
        // A decode step of `batch` sequences is `batch` tokens, within the chunk limit too.
        for batch in ladder_up_to(self.max_seqs.min(self.max_chunk)) {
            self.run(&vec![pad; batch])?;
        }
        self.gpu.synchronize("capturing the decode graphs")?;
        Ok(self.graph_report())
    }

    /// Runs `seqs` as one eager step (never a graph replay) with an event after each kernel,
    /// and returns the step's device time per kernel. The logits land where `forward_batch`
    /// leaves them; nothing is copied back.
    pub fn profile_step(&mut self, seqs: &[SeqChunk<'_>]) -> Result<Breakdown> {
        let marks_per_layer = 7; // qkv, rope_write_kv, attention, o, gate_up, down (+1 spare)
        let capacity = self.weights.layers.len() * marks_per_layer + 4;
        self.profiler = Some(StepProfiler::start(&self.gpu, capacity)?);
        let ran = self.run(seqs);
        let profiler = self.profiler.take().expect("set above");
        ran?;
        Ok(Breakdown::of(&profiler.finish(&self.gpu)?))
    }

    /// The CUDA graphs captured so far (None when graphs are off).
    pub fn graph_report(&self) -> Option<GraphReport> {
        self.graphs.as_ref().map(DecodeGraphs::report)
    }

    /// KV blocks a scheduler may hand out: all but the last, which graph mode keeps for the
    /// padding rows of decode steps (`graph_batch`).
    pub fn usable_blocks(&self) -> usize {
        self.kv.n_blocks() - self.graphs.is_some() as usize
    }

    /// The KV block graph mode keeps for padding rows: the cache's last (`usable_blocks`).
    fn padding_block(&self) -> u32 {
        (self.kv.n_blocks() as u32).saturating_sub(1)
    }

    /// Tokens the KV cache (and the RoPE table) can hold for one sequence.
    pub fn capacity(&self) -> usize {
        self.rope.max_positions
    }

    /// Runs one sequence's chunk `ids` (already checked against the vocabulary), the sequence
    /// owning blocks 0, 1, 2, ... so that slot == position; its first `held` tokens are cached.
    /// With `want_logits`, returns the last token's f32 logits.
    pub fn forward_chunk(&mut self, ids: &[i32], held: usize, want_logits: bool) -> Result<Option<Vec<f32>>> {
        let ctx = held + ids.len();
        let table: Vec<u32> = (0..ctx.div_ceil(BLOCK_SIZE) as u32).collect();
        let seq = SeqChunk { ids, ctx_len: ctx, block_table: &table, want_logits };
        Ok(self.forward_batch(&[seq])?.pop().flatten())
    }

    /// The log-probability of `targets[i]` following token `ids[i]`, for every token of a chunk
    /// that follows the sequence's first `held` tokens (blocks 0, 1, 2, ... as `forward_chunk`):
    /// the layers run once, then the final norm, the LM head and `target_logprobs_f32` over
    /// groups of at most `max_seqs` rows, so one float per token comes back, not a `[vocab]`
    /// row. NaN where a row's logits were not finite.
    pub fn score_chunk(&mut self, ids: &[i32], held: usize, targets: &[u32]) -> Result<Vec<f32>> {
        let n = ids.len();
        if targets.len() != n {
            return Err(GpuError::BadArgument { kernel: "score", what: format!("{} targets for {n} tokens", targets.len()) });
        }
        let ctx = held + n;
        let table: Vec<u32> = (0..ctx.div_ceil(BLOCK_SIZE) as u32).collect();
        self.run(&[SeqChunk { ids, ctx_len: ctx, block_table: &table, want_logits: false }])?; // the layers only
        let vocab = self.weights.config.vocab_size;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(self.max_seqs) {
            let g = (n - start).min(self.max_seqs);
            let rows: Vec<i32> = (start as i32..(start + g) as i32).collect();
            self.gpu.stream.memcpy_htod(&rows, &mut self.scratch.logit_rows.slice_mut(0..g)).map_err(GpuError::driver("uploading scored rows"))?;
            self.launch_head(n, g)?;
            let s = &mut self.scratch;
            target_logprobs(&self.gpu, &s.logits.slice(0..g * vocab), vocab, &targets[start..start + g], &mut s.targets, &mut s.scores.slice_mut(0..g))?;
            out.extend(download(&self.gpu, &s.scores.slice(0..g))?);
        }
        Ok(out)
    }

    /// Runs a batch: each entry's new tokens after its cached prefix, over the paged KV cache.
    /// Returns, per entry, the f32 logits of its last token when it wants them.
    pub fn forward_batch(&mut self, seqs: &[SeqChunk<'_>]) -> Result<Vec<Option<Vec<f32>>>> {
        self.run(seqs)?;
        // Padding rows of a graph step come after these and are not copied.
        let rows = seqs.iter().filter(|s| s.want_logits).count();
        let vocab = self.weights.config.vocab_size;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; seqs.len()];
        if rows == 0 {
            return Ok(out);
        }
        let host = download(&self.gpu, &self.scratch.logits.slice(0..rows * vocab))?;
        let mut rows = host.chunks_exact(vocab);
        for (slot, seq) in out.iter_mut().zip(seqs) {
            if seq.want_logits {
                *slot = Some(rows.next().expect("one row per wanting entry").to_vec());
            }
        }
        Ok(out)
    }

    /// As `forward_batch`, then draws each wanting entry's next token on the device by its
    /// `specs` (one per wanting entry, in order; their logit edits applied first), copying back
    /// ids instead of logits: [`Self::launch_sampled`] then [`Self::sample_launched`].
    pub fn forward_batch_sampled(
        &mut self,
        seqs: &[SeqChunk<'_>],
        specs: &[SampleSpec<'_>],
    ) -> std::result::Result<Vec<Option<std::result::Result<u32, SamplingError>>>, crate::engine::EngineError> {
        self.launch_sampled(seqs)?;
        self.sample_launched(seqs, specs)
    }

    /// Queues the step's kernels and returns without waiting for them (the host's uploads come
    /// first), so the host can work while the device runs them; [`Self::sample_launched`] draws.
    pub fn launch_sampled(&mut self, seqs: &[SeqChunk<'_>]) -> Result<()> {
        let rows = self.run(seqs)?;
        self.launched = Some(LaunchedStep { wants: seqs.iter().map(|s| s.want_logits).collect(), rows });
        Ok(())
    }

    /// Draws the launched step's tokens: each wanting entry's by its `specs` (one per wanting
    /// entry, in order), grammar mask first, then logit edits, then the sampler. A row the
    /// kernel leaves to the host (too many candidates) or reports bad is sampled on the host
    /// from its edited logits, so each row's result or error is that of `engine::draw`. The
    /// logits stay on the device until the next step ([`Self::logits_row`] gives them raw).
    /// `seqs` must want the rows the launched step computed.
    pub fn sample_launched(
        &mut self,
        seqs: &[SeqChunk<'_>],
        specs: &[SampleSpec<'_>],
    ) -> std::result::Result<Vec<Option<std::result::Result<u32, SamplingError>>>, crate::engine::EngineError> {
        let bad = |what: String| GpuError::BadArgument { kernel: "forward", what };
        let params = specs;
        let Some(LaunchedStep { wants, rows }) = self.launched.take() else {
            return Err(bad("asked to sample a step that was never launched".into()).into());
        };
        if !seqs.iter().map(|s| s.want_logits).eq(wants.iter().copied()) {
            return Err(bad("the batch to sample is not the batch launched".into()).into());
        }
        let wanting = wants.iter().filter(|&&w| w).count();
        if params.len() != wanting {
            return Err(bad(format!("{} sampling parameters for {wanting} rows", params.len())).into());
        }
        // A graph step may add padding rows after the wanted ones: they draw greedily, unread.
        let vocab = self.weights.config.vocab_size;
        let mut out = vec![None; seqs.len()];
        if rows == 0 {
            return Ok(out);
        }
        let padding = SampleParams::new(&crate::sampling::SamplingParams::greedy(), 0);
        let dev_params: Vec<SampleParams> =
            params.iter().map(|p| SampleParams::new(&p.params, p.step)).chain(std::iter::repeat_n(padding, rows - wanting)).collect();
        let gpu = &self.gpu;
        let s = &mut self.scratch;
        gpu.stream
            .memcpy_htod(&dev_params, &mut s.sample_params.slice_mut(0..rows))
            .map_err(GpuError::driver("uploading sampling parameters"))?;
        // Grammar masks first: the edits, the sampler and the logprobs all see the masked rows.
        let masks: Vec<Option<&[u32]>> = params.iter().map(|p| p.mask).collect();
        self.token_masks.apply(gpu, &mut s.logits.slice_mut(0..rows * vocab), rows, vocab, &MaskBatch::new(&masks, vocab)?)?;
        let edits: Vec<&[LogitEdit]> = params.iter().map(|p| p.edits).chain(std::iter::repeat_n(&[][..], rows - wanting)).collect();
        self.logit_edits.apply(gpu, &mut s.logits.slice_mut(0..rows * vocab), vocab, EditBatch::new(&edits, vocab)?)?;
        sample_tokens(gpu, &s.logits.slice(0..rows * vocab), vocab, &s.sample_params.slice(0..rows), &mut s.sampled.slice_mut(0..rows))?;
        let raw = download(gpu, &s.sampled.slice(0..rows))?;
        let mut row = 0;
        for (slot, seq) in out.iter_mut().zip(seqs) {
            if !seq.want_logits {
                continue;
            }
            *slot = Some(match Sampled::from_raw(raw[row]) {
                Sampled::Token(t) => Ok(t),
                Sampled::BadLogits | Sampled::HostFallback => {
                    // Already edited on the device.
                    let logits = download(gpu, &s.logits.slice(row * vocab..(row + 1) * vocab))?;
                    sample_at(&params[row].params, &logits, params[row].step)
                }
            });
            row += 1;
        }
        Ok(out)
    }

    /// Row `row` (counting the entries that wanted logits) of the last step's logits, as the
    /// model computed them (before any logit bias or penalty; after a grammar's mask).
    pub fn logits_row(&self, row: usize) -> Result<Vec<f32>> {
        let vocab = self.weights.config.vocab_size;
        let mut logits = download(&self.gpu, &self.scratch.logits.slice(row * vocab..(row + 1) * vocab))?;
        self.logit_edits.restore_row(&self.gpu, row, &mut logits)?;
        Ok(logits)
    }

    /// The layers and the LM head for `seqs`; the wanted rows' logits are left in
    /// `scratch.logits`, and their count is returned. A decode-only step replays the CUDA graph
    /// of its batch size when graphs are on (`Gpu::cuda_graphs`).
    fn run(&mut self, seqs: &[SeqChunk<'_>]) -> Result<usize> {
        // The logits about to be written carry no edits until a sampled step applies some, and
        // a step launched before is not sampled any more.
        self.logit_edits.forget();
        self.launched = None;
        let c = self.weights.config.clone();
        let bad = |what: String| GpuError::BadArgument { kernel: "forward", what };
        let n: usize = seqs.iter().map(|s| s.ids.len()).sum();
        if seqs.is_empty() || n > self.max_chunk || seqs.len() > self.max_seqs {
            return Err(bad(format!(
                "{} sequences / {n} tokens per step (at most {} / {})",
                seqs.len(),
                self.max_seqs,
                self.max_chunk
            )));
        }
        // A graph bakes in the number of logit rows, so only steps where every sequence decodes
        // one token and wants its logits replay one (a 1-token prompt chunk that wants none
        // runs eagerly).
        let graph_step =
            self.graphs.is_some() && self.profiler.is_none() && seqs.iter().all(|s| s.ids.len() == 1 && s.want_logits);
        // A graph step is padded up to its rung of the batch ladder with one-token rows that
        // write and read only the reserved last block; their logits rows come last.
        let reserved = [self.padding_block()];
        let padded: Vec<SeqChunk>;
        let seqs = match graph_batch(seqs.len(), self.max_seqs) {
            target if graph_step && target > seqs.len() => {
                let pad = SeqChunk { ids: &[0], ctx_len: 1, block_table: &reserved, want_logits: true };
                padded = seqs.iter().copied().chain(std::iter::repeat_n(pad, target - seqs.len())).collect();
                &padded[..]
            }
            _ => seqs,
        };
        let n = if graph_step { seqs.len() } else { n }; // one token per row, padding included
        // Host-side layout of the step; every length is checked here and every block id by
        // AttentionMeta::upload / refill. A graph step's refill copies the rows into rows as
        // wide as the cache (the graph's stride).
        let StepLayout { meta, ids, positions, slots, logit_rows } = step_layout(seqs, BLOCK_SIZE, self.capacity()).map_err(bad)?;
        let r = logit_rows.len();
        {
            let (gpu, s) = (&self.gpu, &mut self.scratch);
            let copy = |what| GpuError::driver(format!("uploading {what}"));
            gpu.stream.memcpy_htod(&ids, &mut s.ids.slice_mut(0..n)).map_err(copy("token ids"))?;
            gpu.stream.memcpy_htod(&positions, &mut s.positions.slice_mut(0..n)).map_err(copy("positions"))?;
            gpu.stream.memcpy_htod(&slots, &mut s.slots.slice_mut(0..n)).map_err(copy("slots"))?;
            if r > 0 {
                gpu.stream.memcpy_htod(&logit_rows, &mut s.logit_rows.slice_mut(0..r)).map_err(copy("logit rows"))?;
            }
        }
        if graph_step {
            let mut graphs = self.graphs.take().expect("graph_step implies graphs");
            // One split count per batch size, for any context (empty splits are skipped).
            let splits =
                decode_splits(self.gpu.info.multiprocessors, seqs.len(), c.n_kv_heads, self.capacity()).min(self.max_decode_splits);
            let stream = self.gpu.stream.clone();
            let done = graphs
                .meta
                .refill(&self.gpu, &meta)
                .and_then(|_| graphs.replay(&stream, seqs.len(), |meta| self.launch_step(meta, n, r, splits)))
                // No graph for this batch size: the refilled metadata serves an eager step too.
                .and_then(|replayed| if replayed { Ok(()) } else { self.launch_step(&graphs.meta, n, r, splits) });
            self.graphs = Some(graphs);
            done?;
        } else {
            let meta = meta.upload(&self.gpu, self.kv.n_blocks())?;
            let splits = decode_splits(self.gpu.info.multiprocessors, seqs.len(), c.n_kv_heads, meta.max_ctx).min(self.max_decode_splits);
            self.launch_step(&meta, n, r, splits)?;
        }
        Ok(r)
    }

    /// Launches a step's kernels (inputs already uploaded to scratch): embedding, the layers,
    /// and for the `r` rows listed in `scratch.logit_rows` the final norm and LM head. No host
    /// copy or allocation happens here, so a decode step can be captured as a CUDA graph.
    fn launch_step(&mut self, meta: &DeviceAttentionMeta, n: usize, r: usize, splits: usize) -> Result<()> {
        let c = &self.weights.config;
        let gpu = &self.gpu;
        let s = &mut self.scratch;
        let (dim, qkv_w) = (c.dim, c.q_dim() + 2 * c.kv_dim());
        let w = &self.weights;
        let profiler = &mut self.profiler;
        embedding_gather(gpu, &s.ids.slice(0..n), &w.embedding.as_view(), &mut s.hidden.slice_mut(0..n * dim), c.vocab_size, dim)?;
        mark(profiler, gpu, "embedding")?;
        let attn_shape = AttentionShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim, q_stride: qkv_w };
        let rope_shape = RopeShape { n_heads: c.n_heads, n_kv_heads: c.n_kv_heads, head_dim: c.head_dim, layout: w.rope_layout };
        let all_decode = meta.max_q_len == 1;
        let rope_in_decode = self.rope_in_decode;
        for (l, layer) in w.layers.iter().enumerate() {
            let shape = GemmShape { m: n, n: qkv_w, k: dim };
            let norm = Norm { weight: &layer.attn_norm, eps: c.norm_eps, scratch: &mut s.normed.slice_mut(0..n * dim) };
            let (x, mut qkv) = (s.hidden.slice(0..n * dim), s.qkv.slice_mut(0..n * qkv_w));
            linear(gpu, self.gemm, &x, Some(norm), &layer.wqkv, &mut qkv, shape, Epilogue::Store, &mut s.split_k)?;
            mark(profiler, gpu, "norm + qkv")?;
            let mut attn = s.attn.slice_mut(0..n * c.q_dim());
            if all_decode && rope_in_decode {
                // RoPE and the cache write of the new tokens happen inside the attention kernel.
                let qkv = s.qkv.slice(0..n * qkv_w);
                let ws = &mut self.decode_workspace;
                match self.kv.layer_mut(l) {
                    KvLayerMut::Bf16 { mut k, mut v } => attention_decode_rope(
                        gpu, self.decode, attn_shape, &self.rope, w.rope_layout, meta, &qkv, &mut k, &mut v, ws, splits, &mut attn,
                    )?,
                    mut fp8 => {
                        let cache = fp8.e4m3().expect("not bf16");
                        attention_decode_rope_e4m3(gpu, self.decode, attn_shape, &self.rope, w.rope_layout, meta, &qkv, cache, ws, splits, &mut attn)?
                    }
                }
            } else {
                {
                    let (mut qkv, positions, slots) = (s.qkv.slice_mut(0..n * qkv_w), s.positions.slice(0..n), s.slots.slice(0..n));
                    match self.kv.layer_mut(l) {
                        KvLayerMut::Bf16 { mut k, mut v } => {
                            rope_write_kv(gpu, rope_shape, &self.rope, &mut qkv, &positions, &slots, &mut k, &mut v)?
                        }
                        mut fp8 => {
                            let cache = fp8.e4m3().expect("not bf16");
                            rope_write_kv_e4m3(gpu, rope_shape, &self.rope, &mut qkv, &positions, &slots, cache)?
                        }
                    }
                }
                mark(profiler, gpu, "rope_write_kv")?;
                let q = s.qkv.slice(0..n * qkv_w);
                match (self.kv.layer(l), all_decode) {
                    (KvLayer::Bf16 { k, v }, true) => {
                        let ws = &mut self.decode_workspace;
                        attention_decode_with(gpu, self.decode, attn_shape, meta, &q, &k, &v, ws, splits, &mut attn)?;
                    }
                    (KvLayer::Bf16 { k, v }, false) => attention_prefill(gpu, self.prefill, attn_shape, meta, &q, &k, &v, &mut attn)?,
                    // (`with_kv_dtype` refused the kernels without an FP8 variant.)
                    (fp8, true) => {
                        let ws = &mut self.decode_workspace;
                        attention_decode_e4m3(gpu, self.decode, attn_shape, meta, &q, fp8.e4m3().expect("not bf16"), ws, splits, &mut attn)?;
                    }
                    (fp8, false) => match self.prefill {
                        PrefillKernel::Flash(kernel) => attention_prefill_e4m3(gpu, kernel, attn_shape, meta, &q, fp8.e4m3().expect("not bf16"), &mut attn)?,
                        PrefillKernel::Wgmma(_) => check_kv_dtype_kernels(self.kv.dtype, self.prefill, self.decode)?,
                    },
                }
            }
            mark(profiler, gpu, if all_decode { "attention (decode)" } else { "attention (prefill)" })?;
            let shape = GemmShape { m: n, n: dim, k: c.q_dim() };
            linear(gpu, self.gemm, &s.attn.slice(0..n * c.q_dim()), None, &layer.wo, &mut s.hidden.slice_mut(0..n * dim), shape, Epilogue::AddInPlace, &mut s.split_k)?;
            mark(profiler, gpu, "o + residual")?;
            let shape = GemmShape { m: n, n: 2 * c.ffn_dim, k: dim };
            let norm = Norm { weight: &layer.ffn_norm, eps: c.norm_eps, scratch: &mut s.normed.slice_mut(0..n * dim) };
            let (x, mut ffn) = (s.hidden.slice(0..n * dim), s.ffn.slice_mut(0..n * c.ffn_dim));
            linear(gpu, self.gemm, &x, Some(norm), &layer.w_gate_up, &mut ffn, shape, Epilogue::SwiGlu, &mut s.split_k)?;
            mark(profiler, gpu, "norm + gate_up + swiglu")?;
            let shape = GemmShape { m: n, n: dim, k: c.ffn_dim };
            linear(gpu, self.gemm, &s.ffn.slice(0..n * c.ffn_dim), None, &layer.w_down, &mut s.hidden.slice_mut(0..n * dim), shape, Epilogue::AddInPlace, &mut s.split_k)?;
            mark(profiler, gpu, "down + residual")?;
        }
        self.launch_head(n, r)
    }

    /// The final norm and the LM head for the `r` rows of the `n`-row residual stream listed in
    /// `scratch.logit_rows`, into `scratch.logits`.
    fn launch_head(&mut self, n: usize, r: usize) -> Result<()> {
        if r == 0 {
            return Ok(());
        }
        let c = &self.weights.config;
        let (gpu, s, w, profiler) = (&self.gpu, &mut self.scratch, &self.weights, &mut self.profiler);
        let dim = c.dim;
        // The wanted rows: every row in a decode step (logit_rows, increasing, is then 0..n), else
        // gathered (the embedding kernel is a row gather). Then the final norm and the LM head.
        let rows = if r == n {
            s.hidden.slice(0..n * dim)
        } else {
            embedding_gather(gpu, &s.logit_rows.slice(0..r), &s.hidden.slice(0..n * dim), &mut s.rows.slice_mut(0..r * dim), n, dim)?;
            s.rows.slice(0..r * dim)
        };
        let shape = GemmShape { m: r, n: c.vocab_size, k: dim };
        let mut logits = s.logits.slice_mut(0..r * c.vocab_size);
        if r <= MAX_M {
            let norm = RowNorm { weight: &w.final_norm.as_view(), eps: c.norm_eps };
            gemv_f32(gpu, Some(norm), &rows, &w.lm_head().as_view(), &mut logits, shape)?;
        } else {
            rmsnorm(gpu, &rows, &w.final_norm.as_view(), &mut s.normed.slice_mut(0..r * dim), dim, c.norm_eps)?;
            if matches!(self.gemm, GemmKernel::Wgmma | GemmKernel::WgmmaSplitK) {
                gemm_wgmma_f32(gpu, &s.normed.slice(0..r * dim), &w.lm_head().as_view(), &mut logits, shape)?;
            } else {
                gemm_f32(gpu, &s.normed.slice(0..r * dim), &w.lm_head().as_view(), &mut logits, shape)?;
            }
        }
        mark(profiler, gpu, "final norm + lm_head")
    }
}
