//! Attention over the paged KV cache (kernels/attention_prefill.cu, kernels/attention_decode.cu):
//! `attention_prefill` (flash-style, causal, for prompt chunks) and `attention_decode` (split-K
//! flash-decoding, one new token per sequence).

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use half::bf16;

pub use super::decode_table::DecodeKernel;
pub use super::prefill_table::{FlashPrefill, PrefillKernel};
use super::attention_wgmma::attention_prefill_wgmma;
use super::decode_table::DecodeInstance;
use super::check::{address, allow_dynamic_smem, as_i32, ensure, vector_buffer};
use super::rope::RopeTable;
use crate::model::RopeLayout;
use crate::gpu::launch::arg;
use crate::gpu::error::{GpuError, Result};
use crate::gpu::{upload, upload_rows, Gpu, Kernels};

/// Mirror of `AttentionParams` in kernels/attention_common.cuh (public so that the emulator
/// tests, tests/gpu/emulated, can launch the kernels with host pointers).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub out: u64,
    pub cu_seqlens_q: u64,
    pub ctx_lens: u64,
    pub block_tables: u64,
    pub partial_o: u64,
    pub partial_ml: u64,
    pub split_counters: u64,
    pub q_stride: i32,
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub max_blocks: i32,
    pub block_size: i32,
    pub n_seqs: i32,
    pub n_splits: i32,
    pub scale_log2: f32,
    /// FP8 caches only (the `attention_decode_e4m3` kernels): `[n_slots, n_kv_heads]` f32 scales.
    pub k_scales: u64,
    pub v_scales: u64,
}
const _: () = assert!(std::mem::size_of::<AttentionParams>() == 128);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for AttentionParams {}

/// Mirror of `DecodeRope` in kernels/attention_common.cuh: both decode kernels' second parameter.
/// All zero: q and the cache already hold the new tokens, rotated (rope_write_kv ran); else the
/// kernel rotates them itself (`attention_decode_rope`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeRope {
    pub cos_sin: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub max_positions: i32,
    pub rotate_half: i32,
    /// FP8 caches only: where the new rows' scales go.
    pub k_scales: u64,
    pub v_scales: u64,
}
const _: () = assert!(std::mem::size_of::<DecodeRope>() == 48);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for DecodeRope {}

/// Raises the prefill and tensor-core decode kernels' dynamic shared-memory limits (once, at
/// start-up).
pub(crate) fn configure(kernels: &Kernels) -> Result<()> {
    for ((kernel, e4m3, hd), f) in kernels.prefill.iter() {
        let bytes = (kernel.spec().smem_bytes)(*hd, *e4m3);
        if bytes > 0 {
            allow_dynamic_smem(f, kernel.names().module, bytes)?;
        }
    }
    for (instance, f) in kernels.decode.iter() {
        let bytes = instance.kernel.smem_bytes(instance.head_dim, instance.e4m3);
        if bytes > 0 {
            allow_dynamic_smem(f, instance.kernel.names().module, bytes)?;
        }
    }
    Ok(())
}

/// Head counts and the q layout shared by both kernels.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// 64 or 128.
    pub head_dim: usize,
    /// Elements between consecutive tokens' q rows (q may sit inside a fused qkv buffer).
    pub q_stride: usize,
}

/// Which tokens of which sequences attend to what, on the host. Sequence s has q_len_s =
/// cu_seqlens_q[s+1] - cu_seqlens_q[s] new tokens, the last of its ctx_lens[s] tokens; its
/// positions map to cache slots through its row of `block_tables`.
#[derive(Clone, Debug, Default)]
pub struct AttentionMeta {
    pub cu_seqlens_q: Vec<i32>,
    pub ctx_lens: Vec<i32>,
    /// `[n_seqs, max_blocks]` block ids (unused entries may hold anything in range).
    pub block_tables: Vec<i32>,
    pub max_blocks: usize,
    pub block_size: usize,
}

/// `AttentionMeta` checked against the cache and copied to the device; only `upload` makes one,
/// so the kernels never see an unchecked block id or length.
pub struct DeviceAttentionMeta {
    cu_seqlens_q: CudaSlice<i32>,
    ctx_lens: CudaSlice<i32>,
    block_tables: CudaSlice<i32>,
    pub n_seqs: usize,
    pub n_tokens: usize,
    pub max_q_len: usize,
    pub max_ctx: usize,
    max_blocks: usize,
    block_size: usize,
    n_cache_blocks: usize,
}

impl AttentionMeta {
    /// Checks every length and block id against a cache of `n_cache_blocks` blocks.
    pub fn validate(&self, n_cache_blocks: usize) -> std::result::Result<(), String> {
        let n_seqs = self.ctx_lens.len();
        if n_seqs == 0 || self.cu_seqlens_q.len() != n_seqs + 1 || self.cu_seqlens_q[0] != 0 {
            return Err(format!("cu_seqlens_q must have n_seqs + 1 = {} entries starting at 0", n_seqs + 1));
        }
        if self.block_size == 0 || self.max_blocks == 0 || self.block_tables.len() != n_seqs * self.max_blocks {
            return Err("block_tables must be [n_seqs, max_blocks] with a positive block size".into());
        }
        for s in 0..n_seqs {
            let q_len = self.cu_seqlens_q[s + 1] - self.cu_seqlens_q[s];
            let ctx = self.ctx_lens[s];
            if q_len < 1 || q_len > ctx {
                return Err(format!("sequence {s}: {q_len} new tokens for a context of {ctx}"));
            }
            let blocks_used = (ctx as usize).div_ceil(self.block_size);
            if blocks_used > self.max_blocks {
                return Err(format!("sequence {s}: context {ctx} needs {blocks_used} blocks > {}", self.max_blocks));
            }
            let row = &self.block_tables[s * self.max_blocks..s * self.max_blocks + blocks_used];
            if let Some(b) = row.iter().find(|&&b| b < 0 || b as usize >= n_cache_blocks) {
                return Err(format!("sequence {s}: block id {b} outside the cache's {n_cache_blocks} blocks"));
            }
        }
        Ok(())
    }

    pub fn upload(&self, gpu: &Gpu, n_cache_blocks: usize) -> Result<DeviceAttentionMeta> {
        self.validate(n_cache_blocks).map_err(|what| GpuError::BadArgument { kernel: "attention", what })?;
        let n_seqs = self.ctx_lens.len();
        let q_lens = self.cu_seqlens_q.windows(2).map(|w| (w[1] - w[0]) as usize);
        Ok(DeviceAttentionMeta {
            cu_seqlens_q: upload(gpu, &self.cu_seqlens_q)?,
            ctx_lens: upload(gpu, &self.ctx_lens)?,
            block_tables: upload(gpu, &self.block_tables)?,
            n_seqs,
            n_tokens: self.cu_seqlens_q[n_seqs] as usize,
            max_q_len: q_lens.max().unwrap_or(0),
            max_ctx: self.ctx_lens.iter().copied().max().unwrap_or(0) as usize,
            max_blocks: self.max_blocks,
            block_size: self.block_size,
            n_cache_blocks,
        })
    }
}

impl DeviceAttentionMeta {
    /// Entries per block-table row.
    pub fn max_blocks(&self) -> usize {
        self.max_blocks
    }

    /// KV slots per cache block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the cache the metadata was checked against.
    pub fn n_cache_blocks(&self) -> usize {
        self.n_cache_blocks
    }

    /// Device buffers for up to `max_seqs` sequences with block-table rows of `max_blocks`,
    /// refilled in place each step (`refill`): the addresses a captured CUDA graph holds stay valid.
    pub fn persistent(gpu: &Gpu, max_seqs: usize, max_blocks: usize, block_size: usize, n_cache_blocks: usize) -> Result<Self> {
        let alloc = |n: usize| gpu.stream.alloc_zeros::<i32>(n.max(1)).map_err(GpuError::driver("allocating attention metadata"));
        Ok(DeviceAttentionMeta {
            cu_seqlens_q: alloc(max_seqs + 1)?,
            ctx_lens: alloc(max_seqs)?,
            block_tables: alloc(max_seqs * max_blocks)?,
            n_seqs: 0,
            n_tokens: 0,
            max_q_len: 0,
            max_ctx: 0,
            max_blocks,
            block_size,
            n_cache_blocks,
        })
    }

    /// Checks `meta` as `AttentionMeta::upload` does and copies it into these buffers; its rows
    /// may be narrower than this metadata's `max_blocks` (the row stride the kernels, and a
    /// captured graph, use) and its sequences must fit the allocation. Only the rows' entries are
    /// copied (one strided copy), so a step pays for the blocks its sequences hold, not for rows
    /// as wide as the cache. The entries past them keep what they held: the kernels never read
    /// them (they read `ceil(ctx_len / block_size)` entries of a row, all checked).
    pub fn refill(&mut self, gpu: &Gpu, meta: &AttentionMeta) -> Result<()> {
        let bad = |what: String| GpuError::BadArgument { kernel: "attention", what };
        meta.validate(self.n_cache_blocks).map_err(bad)?;
        let n_seqs = meta.ctx_lens.len();
        if meta.max_blocks > self.max_blocks || meta.block_size != self.block_size || n_seqs > self.ctx_lens.len() {
            return Err(bad(format!(
                "{n_seqs} sequences with rows of {} blocks do not fit metadata for {} sequences with rows of {}",
                meta.max_blocks,
                self.ctx_lens.len(),
                self.max_blocks
            )));
        }
        let copy = |what| GpuError::driver(format!("uploading {what}"));
        gpu.stream.memcpy_htod(&meta.cu_seqlens_q, &mut self.cu_seqlens_q.slice_mut(0..n_seqs + 1)).map_err(copy("cu_seqlens_q"))?;
        gpu.stream.memcpy_htod(&meta.ctx_lens, &mut self.ctx_lens.slice_mut(0..n_seqs)).map_err(copy("ctx_lens"))?;
        upload_rows(gpu, &meta.block_tables, meta.max_blocks, self.max_blocks, &mut self.block_tables)?;
        self.n_seqs = n_seqs;
        self.n_tokens = meta.cu_seqlens_q[n_seqs] as usize;
        self.max_q_len = meta.cu_seqlens_q.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
        self.max_ctx = meta.ctx_lens.iter().copied().max().unwrap_or(0) as usize;
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn params<C: DeviceRepr>(
    gpu: &Gpu,
    kernel: &'static str,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    k_cache: &CudaView<C>,
    v_cache: &CudaView<C>,
    out: &mut CudaViewMut<bf16>,
) -> Result<AttentionParams> {
    let AttentionShape { n_heads, n_kv_heads, head_dim, q_stride } = shape;
    ensure(head_dim == 64 || head_dim == 128, kernel, || format!("head_dim {head_dim} is not 64 or 128"))?;
    ensure(n_kv_heads > 0 && n_heads % n_kv_heads == 0, kernel, || {
        format!("{n_heads} query heads are not a multiple of {n_kv_heads} KV heads")
    })?;
    ensure(q_stride >= n_heads * head_dim && q_stride % 8 == 0, kernel, || format!("q_stride {q_stride}"))?;
    let n_slots = meta.n_cache_blocks * meta.block_size;
    vector_buffer(&gpu.stream, kernel, "k_cache", k_cache, n_slots * n_kv_heads * head_dim)?;
    vector_buffer(&gpu.stream, kernel, "v_cache", v_cache, n_slots * n_kv_heads * head_dim)?;
    vector_buffer(&gpu.stream, kernel, "out", out, meta.n_tokens * n_heads * head_dim)?;
    // q's last row need only reach its last head.
    let q_len = (meta.n_tokens - 1) * q_stride + n_heads * head_dim;
    ensure(q.len() >= q_len, kernel, || format!("q holds {} elements, needs {q_len}", q.len()))?;
    ensure(address(&gpu.stream, q) % 16 == 0, kernel, || "q is not 16-byte aligned".into())?;
    Ok(AttentionParams {
        q: address(&gpu.stream, q),
        k_cache: address(&gpu.stream, k_cache),
        v_cache: address(&gpu.stream, v_cache),
        out: address(&gpu.stream, out),
        cu_seqlens_q: address(&gpu.stream, &meta.cu_seqlens_q),
        ctx_lens: address(&gpu.stream, &meta.ctx_lens),
        block_tables: address(&gpu.stream, &meta.block_tables),
        partial_o: 0,
        partial_ml: 0,
        split_counters: 0,
        q_stride: as_i32(kernel, "q_stride", q_stride)?,
        n_heads: as_i32(kernel, "n_heads", n_heads)?,
        n_kv_heads: as_i32(kernel, "n_kv_heads", n_kv_heads)?,
        max_blocks: as_i32(kernel, "max_blocks", meta.max_blocks)?,
        block_size: as_i32(kernel, "block_size", meta.block_size)?,
        n_seqs: as_i32(kernel, "n_seqs", meta.n_seqs)?,
        n_splits: 1,
        scale_log2: scale_log2(head_dim),
        k_scales: 0,
        v_scales: 0,
    })
}

/// The softmax scale 1/sqrt(head_dim) times log2(e): the kernels work in the exp2 domain.
pub fn scale_log2(head_dim: usize) -> f32 {
    (1.0 / (head_dim as f64).sqrt() * std::f64::consts::LOG2_E) as f32
}

/// A flash prefill kernel's launch: one block per (rows / G positions x G heads, KV head,
/// sequence); `e4m3`: over an FP8 cache.
pub fn prefill_config(kernel: FlashPrefill, shape: AttentionShape, max_q_len: usize, n_seqs: usize, e4m3: bool) -> LaunchConfig {
    let spec = kernel.spec();
    let group = shape.n_heads / shape.n_kv_heads;
    LaunchConfig {
        grid_dim: (max_q_len.div_ceil(spec.rows / group) as u32, shape.n_kv_heads as u32, n_seqs as u32),
        block_dim: (spec.threads, 1, 1),
        shared_mem_bytes: (spec.smem_bytes)(shape.head_dim, e4m3) as u32,
    }
}

/// `attention_decode`'s launch: one block per (split, KV head, sequence); `e4m3`: over an FP8
/// cache.
pub fn decode_config(kernel: DecodeKernel, shape: AttentionShape, n_splits: usize, n_seqs: usize, e4m3: bool) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n_splits as u32, shape.n_kv_heads as u32, n_seqs as u32),
        block_dim: (kernel.spec().threads, 1, 1),
        shared_mem_bytes: kernel.smem_bytes(shape.head_dim, e4m3) as u32,
    }
}

/// Causal attention of every new token over its sequence's cached keys (its prefix and the new
/// tokens, already written by `rope_write_kv`), on `kernel`: a flash kernel of
/// `FLASH_PREFILL_KERNELS` or a wgmma schedule (`attention_prefill_wgmma`). q: `[n_tokens,
/// q_stride]`; k_cache, v_cache: `[n_slots, n_kv_heads, head_dim]`; out: `[n_tokens, n_heads *
/// head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    gpu: &Gpu,
    kernel: PrefillKernel,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    k_cache: &CudaView<bf16>,
    v_cache: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    match kernel {
        PrefillKernel::Flash(flash) => {
            let p = params(gpu, flash.names().label(false), shape, meta, q, k_cache, v_cache, out)?;
            launch_prefill(gpu, flash, shape, meta, p, false)
        }
        PrefillKernel::Wgmma(schedule) => attention_prefill_wgmma(gpu, schedule, shape, meta, q, k_cache, v_cache, out),
    }
}

/// Launches a flash prefill kernel with a checked parameter block (`params` or `e4m3_params`).
pub(crate) fn launch_prefill(gpu: &Gpu, kernel: FlashPrefill, shape: AttentionShape, meta: &DeviceAttentionMeta, p: AttentionParams, e4m3: bool) -> Result<()> {
    let name = kernel.names().label(e4m3);
    let (group, rows) = (shape.n_heads / shape.n_kv_heads, kernel.spec().rows);
    ensure(group <= rows, name, || format!("{group} query heads per KV head > {rows} rows a block"))?;
    let func = (gpu.kernels.prefill).get(kernel, e4m3, shape.head_dim).ok_or_else(|| {
        let what = match kernel.names().entry_prefix(e4m3) {
            None => format!("prefill kernel `{}` has no FP8 e4m3 entries", kernel.names().name),
            Some(_) => format!("no kernel for head_dim {}", shape.head_dim),
        };
        GpuError::BadArgument { kernel: name, what }
    })?;
    let cfg = prefill_config(kernel, shape, meta.max_q_len, meta.n_seqs, e4m3);
    let mut launch = gpu.stream.launch_builder(func);
    launch.arg(&p);
    // SAFETY: the metadata was validated against the cache by `AttentionMeta::upload` (every
    // block id in range, q_len <= ctx, ctx within the block table); q, the caches (bf16, or codes
    // and scales of n_slots x n_kv_heads floats: `e4m3_params`) and out have the lengths checked
    // by the caller's `params`; the shared-memory limit was raised in `configure`. An ordinary
    // launch: the flash kernels have no grid-dependency wait.
    gpu.launched(name, unsafe { launch.launch(cfg) }.map(|_| ()))
}

/// Per-split partial results of `attention_decode`, sized for a batch, and the split blocks'
/// arrival counts: zero when allocated, and put back to zero by each launch's last block.
pub struct DecodeWorkspace {
    partial_o: CudaSlice<f32>,
    partial_ml: CudaSlice<f32>,
    split_counters: CudaSlice<i32>,
    capacity: usize, // (sequence, head, split) triples
    max_seqs: usize,
    n_heads: usize,
}

impl DecodeWorkspace {
    pub fn new(gpu: &Gpu, max_seqs: usize, n_heads: usize, max_splits: usize, head_dim: usize) -> Result<Self> {
        let capacity = max_seqs * n_heads * max_splits;
        let alloc = |n| gpu.stream.alloc_zeros::<f32>(n).map_err(GpuError::driver("allocating the decode workspace"));
        let split_counters =
            gpu.stream.alloc_zeros::<i32>(max_seqs * n_heads).map_err(GpuError::driver("allocating the decode workspace"))?;
        Ok(DecodeWorkspace {
            partial_o: alloc(capacity * head_dim)?,
            partial_ml: alloc(capacity * 2)?,
            split_counters,
            capacity,
            max_seqs,
            n_heads,
        })
    }
}

/// Splits of the context per (sequence, KV head) block: enough blocks to fill the GPU twice over,
/// each split at least 128 keys: one round of both kernels' 4 warps (32 keys each in
/// `attention_decode`, two 64-key tiles in `attention_decode_mma`). At a 1k context and batch 1
/// that is 8 splits, 64 blocks: at 256 keys a split, 32 blocks measured 21 us a layer (820a75b).
pub fn decode_splits(gpu_sms: usize, n_seqs: usize, n_kv_heads: usize, max_ctx: usize) -> usize {
    let for_occupancy = (2 * gpu_sms).div_ceil(n_seqs * n_kv_heads);
    for_occupancy.clamp(1, max_ctx.div_ceil(128).max(1))
}

/// One new token per sequence (q_len = 1 each) over its whole context, split `n_splits` ways
/// and merged, in one launch (on CUDA cores). Shapes as for `attention_prefill`.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    gpu: &Gpu,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    k_cache: &CudaView<bf16>,
    v_cache: &CudaView<bf16>,
    workspace: &mut DecodeWorkspace,
    n_splits: usize,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    attention_decode_with(gpu, DecodeKernel::CUDA_CORES, shape, meta, q, k_cache, v_cache, workspace, n_splits, out)
}

/// `attention_decode` on the chosen kernel (the merge of the splits is the same for both).
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_with(
    gpu: &Gpu,
    kernel: DecodeKernel,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    k_cache: &CudaView<bf16>,
    v_cache: &CudaView<bf16>,
    workspace: &mut DecodeWorkspace,
    n_splits: usize,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    let p = params(gpu, kernel.names().label(false), shape, meta, q, k_cache, v_cache, out)?;
    launch_decode(gpu, kernel, shape, meta, p, DecodeRope::default(), workspace, n_splits, false)
}

/// `attention_decode_with` that also does `rope_write_kv`'s work for each sequence's new token
/// at position ctx_len - 1: `qkv` holds the step's q | k | v rows as the QKV
/// projection wrote them, unrotated (`shape.q_stride` = their width, (n_heads + 2 n_kv_heads)
/// head_dim); the kernel rotates q for itself (qkv is not written) and writes the rotated k and
/// v into the cache slot the block table gives, where `rope_write_kv` would have. So a decode
/// layer needs no RoPE launch; the result equals rope_write_kv followed by `attention_decode`.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_rope(
    gpu: &Gpu,
    kernel: DecodeKernel,
    shape: AttentionShape,
    table: &RopeTable,
    layout: RopeLayout,
    meta: &DeviceAttentionMeta,
    qkv: &CudaView<bf16>,
    k_cache: &mut CudaViewMut<bf16>,
    v_cache: &mut CudaViewMut<bf16>,
    workspace: &mut DecodeWorkspace,
    n_splits: usize,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    let name = kernel.names().label(false);
    // The q rows' length check covers k and v too: q_stride is the whole row.
    let p = params(gpu, name, shape, meta, qkv, &k_cache.as_view(), &v_cache.as_view(), out)?;
    let rope = decode_rope(gpu, name, shape, table, layout, meta, qkv, address(&gpu.stream, k_cache), address(&gpu.stream, v_cache))?;
    launch_decode(gpu, kernel, shape, meta, p, rope, workspace, n_splits, false)
}

/// The `DecodeRope` of a decode kernel that rotates its own new tokens (`k_cache`, `v_cache`:
/// the caches' device addresses), after checking `qkv` and the table against the step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode_rope(
    gpu: &Gpu,
    name: &'static str,
    shape: AttentionShape,
    table: &RopeTable,
    layout: RopeLayout,
    meta: &DeviceAttentionMeta,
    qkv: &CudaView<bf16>,
    k_cache: u64,
    v_cache: u64,
) -> Result<DecodeRope> {
    let width = (shape.n_heads + 2 * shape.n_kv_heads) * shape.head_dim;
    ensure(shape.q_stride == width, name, || format!("q_stride {} is not the qkv row width {width}", shape.q_stride))?;
    ensure(table.head_dim == shape.head_dim, name, || format!("RoPE table for head_dim {}", table.head_dim))?;
    ensure(meta.max_ctx <= table.max_positions, name, || {
        format!("a context of {} passes the RoPE table's {} positions", meta.max_ctx, table.max_positions)
    })?;
    ensure(qkv.len() >= meta.n_tokens * width, name, || format!("qkv holds {} elements, needs {}", qkv.len(), meta.n_tokens * width))?;
    Ok(DecodeRope {
        cos_sin: address(&gpu.stream, &table.cos_sin),
        k_cache,
        v_cache,
        max_positions: as_i32(name, "max_positions", table.max_positions)?,
        rotate_half: (layout == RopeLayout::RotateHalf) as i32,
        k_scales: 0,
        v_scales: 0,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_decode(
    gpu: &Gpu,
    kernel: DecodeKernel,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    mut p: AttentionParams,
    rope: DecodeRope,
    workspace: &mut DecodeWorkspace,
    n_splits: usize,
    e4m3: bool,
) -> Result<()> {
    let name = kernel.names().label(e4m3);
    ensure(meta.max_q_len == 1, name, || format!("decode takes 1 new token per sequence, got up to {}", meta.max_q_len))?;
    let group = shape.n_heads / shape.n_kv_heads;
    let func = (gpu.kernels.decode)
        .get(DecodeInstance { kernel, e4m3, head_dim: shape.head_dim, group })
        .ok_or_else(|| {
            let what = match kernel.names().entry_prefix(e4m3) {
                None => format!("decode kernel `{}` has no FP8 e4m3 entries", kernel.names().name),
                Some(_) => format!("no kernel for head_dim {} with {group} query heads per KV head", shape.head_dim),
            };
            GpuError::BadArgument { kernel: name, what }
        })?;
    ensure(n_splits >= 1 && meta.n_seqs * shape.n_heads * n_splits <= workspace.capacity, name, || {
        format!("{n_splits} splits exceed the workspace")
    })?;
    ensure(meta.n_seqs <= workspace.max_seqs && shape.n_kv_heads <= workspace.n_heads, name, || {
        format!("{} sequences x {} KV heads exceed the workspace's arrival counts", meta.n_seqs, shape.n_kv_heads)
    })?;
    p.partial_o = address(&gpu.stream, &workspace.partial_o);
    p.partial_ml = address(&gpu.stream, &workspace.partial_ml);
    p.split_counters = address(&gpu.stream, &workspace.split_counters);
    p.n_splits = n_splits as i32;
    let cfg = decode_config(kernel, shape, n_splits, meta.n_seqs, e4m3);
    // SAFETY: as for `attention_prefill`, plus the workspace holding n_seqs * n_heads * n_splits
    // partials and n_seqs * n_kv_heads arrival counts, all zero between launches (checked above;
    // the last block of each count resets it); the mma kernel's shared-memory limit was raised
    // in `configure`; with RoPE, the table covering every position the kernel reads (checked by
    // the caller; the kernel traps past max_positions) and the caches writable. Both kernels
    // take (AttentionParams, DecodeRope). The kernel waits for the one before it first
    // (kernels/grid_dependency.cuh).
    gpu.launched(name, unsafe { gpu.launch_after_previous(func, cfg, &mut [arg(&p), arg(&rope)]) })
}
