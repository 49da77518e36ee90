//! `attention_prefill_wgmma` with its three schedules (kernels/attention_prefill_wgmma.cu):
//! causal GQA prefill on Hopper's wgmma, K/V tiles loaded by TMA from the paged cache; same
//! arguments and results as `attention_prefill`. The overlap variant issues S of tile t with PV
//! of tile t-1 (FlashAttention-3's intra-warpgroup pipelining); the ping-pong one adds FA3's
//! alternation of the two consumer warpgroups. The K and V cache tensor maps are built here, per
//! call.

use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use half::bf16;

use super::attention::{params, AttentionParams, AttentionShape, DeviceAttentionMeta};
use super::check::{address, allow_dynamic_smem, ensure};
use super::gemm_wgmma::{encode_tensor_map, tensor_map_spec, TensorMap, TensorMapSpec};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::{Gpu, Kernels};

/// How the kernel's consumers order their work (kernels/attention_prefill_wgmma.cu's `Schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaSchedule {
    /// S, wait, softmax, P V, wait per tile.
    InOrder,
    /// S(t) issued with P V(t-1); the softmax beside P V.
    Overlap,
    /// Overlap, the two consumer warpgroups taking turns to issue.
    PingPong,
}

impl WgmmaSchedule {
    /// Its name in the kernel lab and for `NEMO_PREFILL_ATTENTION`.
    pub fn name(self) -> &'static str {
        match self {
            WgmmaSchedule::InOrder => "wgmma",
            WgmmaSchedule::Overlap => "wgmma-overlap",
            WgmmaSchedule::PingPong => "wgmma-pingpong",
        }
    }

    fn kernel(self) -> &'static str {
        match self {
            WgmmaSchedule::InOrder => "attention_prefill_wgmma_bf16",
            WgmmaSchedule::Overlap => "attention_prefill_wgmma_overlap_bf16",
            WgmmaSchedule::PingPong => "attention_prefill_wgmma_pingpong_bf16",
        }
    }
}

const KERNEL: &str = "attention_prefill_wgmma_bf16";
/// Registers per thread the overlapping kernels' setmaxnreg hand-off assumes (see `launch`).
const OVERLAP_REGISTERS: i32 = 168;
/// Query rows per block (2 consumer warpgroups x 64) and keys per K/V tile.
const ROWS: usize = 128;
const KT: usize = 128;
const STAGES: usize = 2;
/// The kernel loads one KV-cache block per TMA box: the cache's block size must be this.
pub const BLOCK_KEYS: usize = 16;

/// Mirror of `PrefillWgmmaParams` (kernels/attention_prefill_wgmma.cu) (public so that the
/// emulator tests can launch the kernel with host pointers and their own tensor maps).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct PrefillWgmmaParams {
    pub k_map: TensorMap,
    pub v_map: TensorMap,
    pub attn: AttentionParams,
}
const _: () = assert!(std::mem::size_of::<PrefillWgmmaParams>() == 384);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for PrefillWgmmaParams {}

/// One layer's K (or V) cache as TMA reads it: [n_slots, n_kv_heads * head_dim] bf16 in boxes of
/// one cache block (16 slots) by 64 dims.
pub fn cache_map_spec(addr: u64, n_slots: usize, n_kv_heads: usize, head_dim: usize) -> TensorMapSpec {
    tensor_map_spec(addr, n_slots, n_kv_heads * head_dim, BLOCK_KEYS)
}

/// Dynamic shared memory: alignment slack, Q (128 rows), 2 stages of K and V tiles, full and
/// empty barriers for K and for V per stage.
fn smem_bytes(head_dim: usize) -> usize {
    1024 + ROWS * head_dim * 2 + STAGES * 2 * KT * head_dim * 2 + 4 * STAGES * 8
}

/// Raises the kernels' dynamic shared-memory limits (once, at start-up).
pub(crate) fn configure(kernels: &Kernels) -> Result<()> {
    allow_dynamic_smem(&kernels.attention_prefill_wgmma_bf16_hd128, KERNEL, smem_bytes(128))?;
    allow_dynamic_smem(&kernels.attention_prefill_wgmma_bf16_hd64, KERNEL, smem_bytes(64))?;
    let overlap = WgmmaSchedule::Overlap.kernel();
    allow_dynamic_smem(&kernels.attention_prefill_wgmma_overlap_bf16_hd128, overlap, smem_bytes(128))?;
    allow_dynamic_smem(&kernels.attention_prefill_wgmma_overlap_bf16_hd64, overlap, smem_bytes(64))?;
    let pingpong = WgmmaSchedule::PingPong.kernel();
    allow_dynamic_smem(&kernels.attention_prefill_wgmma_pingpong_bf16_hd128, pingpong, smem_bytes(128))?;
    allow_dynamic_smem(&kernels.attention_prefill_wgmma_pingpong_bf16_hd64, pingpong, smem_bytes(64))
}

/// The launch: one block per (128 / G positions x G heads, KV head, sequence), 384 threads.
pub fn launch_config(shape: AttentionShape, max_q_len: usize, n_seqs: usize) -> LaunchConfig {
    let group = shape.n_heads / shape.n_kv_heads;
    LaunchConfig {
        grid_dim: (max_q_len.div_ceil(ROWS / group) as u32, shape.n_kv_heads as u32, n_seqs as u32),
        block_dim: (384, 1, 1),
        shared_mem_bytes: smem_bytes(shape.head_dim) as u32,
    }
}

/// The kernel a schedule and head_dim launch.
pub fn kernel_name(schedule: WgmmaSchedule, head_dim: usize) -> String {
    format!("{}_hd{head_dim}", schedule.kernel())
}

/// As `attention_prefill`, on wgmma + TMA, its consumers ordered by `schedule` (the overlapping
/// ones take 240 registers from the producer's, `setmaxnreg`). The cache's block size must be 16
/// and G <= 128.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill_wgmma(
    gpu: &Gpu,
    schedule: WgmmaSchedule,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    k_cache: &CudaView<bf16>,
    v_cache: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    let name = schedule.kernel();
    let attn = params(gpu, name, shape, meta, q, k_cache, v_cache, out)?;
    let group = shape.n_heads / shape.n_kv_heads;
    ensure(group <= ROWS, name, || format!("{group} query heads per KV head > {ROWS}"))?;
    ensure(meta.block_size() == BLOCK_KEYS, name, || {
        format!("KV-cache blocks of {} slots; the kernel loads blocks of {BLOCK_KEYS}", meta.block_size())
    })?;
    let n_slots = meta.n_cache_blocks() * BLOCK_KEYS;
    // cuTensorMapEncodeTiled needs the context current on this thread.
    gpu.ctx.bind_to_thread().map_err(GpuError::driver("binding the context"))?;
    let map = |cache: &CudaView<bf16>| {
        encode_tensor_map(cache_map_spec(address(&gpu.stream, cache), n_slots, shape.n_kv_heads, shape.head_dim), name)
    };
    let p = PrefillWgmmaParams { k_map: map(k_cache)?, v_map: map(v_cache)?, attn };
    let k = &gpu.kernels;
    let func = match (schedule, shape.head_dim == 128) {
        (WgmmaSchedule::InOrder, true) => &k.attention_prefill_wgmma_bf16_hd128,
        (WgmmaSchedule::InOrder, false) => &k.attention_prefill_wgmma_bf16_hd64,
        (WgmmaSchedule::Overlap, true) => &k.attention_prefill_wgmma_overlap_bf16_hd128,
        (WgmmaSchedule::Overlap, false) => &k.attention_prefill_wgmma_overlap_bf16_hd64,
        (WgmmaSchedule::PingPong, true) => &k.attention_prefill_wgmma_pingpong_bf16_hd128,
        (WgmmaSchedule::PingPong, false) => &k.attention_prefill_wgmma_pingpong_bf16_hd64,
    };
    if schedule != WgmmaSchedule::InOrder {
        // The setmaxnreg hand-off (128 x 24 + 256 x 240 = 384 x 168) hangs with fewer registers;
        // checked at launch so that an opt-in kernel cannot keep the engine from starting.
        let regs = func.num_regs().map_err(GpuError::driver(format!("reading {name}'s registers")))?;
        ensure(regs == OVERLAP_REGISTERS, name, || {
            format!("the driver built it with {regs} registers per thread, not {OVERLAP_REGISTERS}: setmaxnreg would hang")
        })?;
    }
    let mut launch = gpu.stream.launch_builder(func);
    launch.arg(&p);
    // SAFETY: as for `attention_prefill` (metadata validated against the cache, buffers sized by
    // `params`); the tensor maps describe exactly the caches' n_slots rows, and the kernel reads
    // only blocks named in the validated tables; the shared-memory limit was raised in `configure`.
    gpu.launched(name, unsafe { launch.launch(launch_config(shape, meta.max_q_len, meta.n_seqs)) }.map(|_| ()))
}
