//! `rope_write_kv_bf16` and `rope_cos_sin_table_f32` (kernels/rope.cu): RoPE on q and k for
//! both checkpoint layouts, fused with writing k and v into the paged KV cache.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use half::bf16;

use super::check::{address, as_i32, ensure, vector_buffer};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::Gpu;
use crate::model::RopeLayout;

/// Mirror of `RopeKvParams` in kernels/rope.cu (public so that the emulator tests,
/// tests/gpu/emulated, can launch the kernel with host pointers).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RopeKvParams {
    pub qkv: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub cos_sin: u64,
    pub positions: u64,
    pub slots: u64,
    pub d: RopeDims,
}
const _: () = assert!(std::mem::size_of::<RopeKvParams>() == 72);
// SAFETY: plain old data with the same layout as the C struct (size asserted on both sides).
unsafe impl DeviceRepr for RopeKvParams {}

/// Mirror of `RopeDims` in kernels/rope.cu: the scalars both RoPE writes take.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RopeDims {
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    pub max_positions: i32,
    pub n_slots: i32,
    pub rotate_half: i32,
}
const _: () = assert!(std::mem::size_of::<RopeDims>() == 24);

impl RopeDims {
    /// `shape` over a table of `max_positions` positions and a cache of `n_slots` slots.
    pub fn new(kernel: &'static str, shape: RopeShape, max_positions: usize, n_slots: usize) -> Result<RopeDims> {
        Ok(RopeDims {
            n_heads: as_i32(kernel, "n_heads", shape.n_heads)?,
            n_kv_heads: as_i32(kernel, "n_kv_heads", shape.n_kv_heads)?,
            head_dim: as_i32(kernel, "head_dim", shape.head_dim)?,
            max_positions: as_i32(kernel, "max_positions", max_positions)?,
            n_slots: as_i32(kernel, "n_slots", n_slots)?,
            rotate_half: (shape.layout == RopeLayout::RotateHalf) as i32,
        })
    }
}

/// The cos/sin table `[max_positions, head_dim / 2]` of (cos, sin) pairs as f32, built on the
/// device in double precision.
pub struct RopeTable {
    pub cos_sin: CudaSlice<f32>,
    pub max_positions: usize,
    pub head_dim: usize,
}

/// Builds the table for positions `0..max_positions`: cos_sin[p, i] = (cos, sin)(p *
/// theta^(-2i/head_dim)).
pub fn rope_cos_sin_table(gpu: &Gpu, max_positions: usize, head_dim: usize, theta: f64) -> Result<RopeTable> {
    const KERNEL: &str = "rope_cos_sin_table_f32";
    ensure(head_dim % 16 == 0 && head_dim > 0, KERNEL, || format!("head_dim {head_dim} is not a multiple of 16"))?;
    ensure(theta.is_finite() && theta > 1.0, KERNEL, || format!("rope theta {theta} must be finite and > 1"))?;
    let n = max_positions * head_dim; // two floats per pair
    let mut cos_sin = gpu.stream.alloc_zeros::<f32>(n).map_err(GpuError::driver("allocating the RoPE table"))?;
    let (max_i, hd_i) = (as_i32(KERNEL, "max_positions", max_positions)?, head_dim as i32);
    let cfg = LaunchConfig { grid_dim: (1024, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.rope_cos_sin_table_f32);
    launch.arg(&mut cos_sin).arg(&max_i).arg(&hd_i).arg(&theta);
    // SAFETY: cos_sin holds max_positions * head_dim/2 float2 pairs; the grid-stride loop stays
    // below that count.
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))?;
    Ok(RopeTable { cos_sin, max_positions, head_dim })
}

/// Shapes of one RoPE + KV-write launch.
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub layout: RopeLayout,
}

/// Both RoPE writes' checks of the step's tokens; returns how many there are.
fn check_tokens(kernel: &'static str, shape: RopeShape, positions: &CudaView<i32>, slots: &CudaView<i32>) -> Result<usize> {
    ensure(shape.n_heads > 0 && shape.n_kv_heads > 0, kernel, || "no heads".into())?;
    let n_tokens = positions.len();
    ensure(slots.len() == n_tokens, kernel, || format!("{} slots for {n_tokens} positions", slots.len()))?;
    Ok(n_tokens)
}

/// Both RoPE writes' launch: one block of 256 threads per token.
fn token_grid(kernel: &'static str, n_tokens: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig { grid_dim: (as_i32(kernel, "n_tokens", n_tokens)? as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 })
}

/// For every token t: rotates q[t] in place inside `qkv`, writes rope(k[t]) to
/// `k_cache[slots[t]]` and v[t] to `v_cache[slots[t]]`.
/// qkv: `[n_tokens, (n_heads + 2 n_kv_heads) head_dim]`; k_cache, v_cache: `[n_slots, n_kv_heads,
/// head_dim]`; positions, slots: `[n_tokens]`. Positions outside the table or slots outside the
/// cache trap the launch.
#[allow(clippy::too_many_arguments)]
pub fn rope_write_kv(
    gpu: &Gpu,
    shape: RopeShape,
    table: &RopeTable,
    qkv: &mut CudaViewMut<bf16>,
    positions: &CudaView<i32>,
    slots: &CudaView<i32>,
    k_cache: &mut CudaViewMut<bf16>,
    v_cache: &mut CudaViewMut<bf16>,
) -> Result<()> {
    const KERNEL: &str = "rope_write_kv_bf16";
    let RopeShape { n_heads, n_kv_heads, head_dim, .. } = shape;
    ensure(head_dim == table.head_dim, KERNEL, || format!("head_dim {head_dim} != table's {}", table.head_dim))?;
    ensure(head_dim % 16 == 0, KERNEL, || format!("head_dim {head_dim} is not a multiple of 16"))?;
    let n_tokens = check_tokens(KERNEL, shape, positions, slots)?;
    let kv_width = n_kv_heads * head_dim;
    let n_slots = k_cache.len() / kv_width;
    vector_buffer(&gpu.stream, KERNEL, "qkv", qkv, n_tokens * (n_heads * head_dim + 2 * kv_width))?;
    vector_buffer(&gpu.stream, KERNEL, "k_cache", k_cache, n_slots * kv_width)?;
    vector_buffer(&gpu.stream, KERNEL, "v_cache", v_cache, n_slots * kv_width)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let params = RopeKvParams {
        qkv: address(&gpu.stream, qkv),
        k_cache: address(&gpu.stream, k_cache),
        v_cache: address(&gpu.stream, v_cache),
        cos_sin: address(&gpu.stream, &table.cos_sin),
        positions: address(&gpu.stream, positions),
        slots: address(&gpu.stream, slots),
        d: RopeDims::new(KERNEL, shape, table.max_positions, n_slots)?,
    };
    let cfg = token_grid(KERNEL, n_tokens)?;
    // SAFETY: qkv, k_cache and v_cache have the lengths checked above and are 16-byte aligned;
    // positions and slots hold n_tokens entries, range-checked in the kernel (trap); the table
    // covers max_positions rows of head_dim/2 pairs; the kernel waits for the one before first.
    let func = &gpu.kernels.rope_write_kv_bf16;
    gpu.launched(KERNEL, unsafe { gpu.launch_after_previous(func, cfg, &mut [crate::gpu::launch::arg(&params)]) })
}

/// Mirror of `RopeKvE4m3Params` in kernels/rope.cu (public for the emulator tests).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RopeKvE4m3Params {
    pub qkv: u64,
    pub k_codes: u64,
    pub v_codes: u64,
    pub k_scales: u64,
    pub v_scales: u64,
    pub cos_sin: u64,
    pub positions: u64,
    pub slots: u64,
    pub d: RopeDims,
}
const _: () = assert!(std::mem::size_of::<RopeKvE4m3Params>() == 88);
// SAFETY: plain old data with the same layout as the C struct (size asserted on both sides).
unsafe impl DeviceRepr for RopeKvE4m3Params {}

/// One layer's FP8 e4m3 cache (docs/fp8-kv.md): codes `[n_slots, n_kv_heads, head_dim]` and one
/// scale per slot and KV head `[n_slots, n_kv_heads]`, for K and for V.
pub struct E4m3KvViews<'a, 'b> {
    pub k_codes: &'a mut CudaViewMut<'b, u8>,
    pub v_codes: &'a mut CudaViewMut<'b, u8>,
    pub k_scales: &'a mut CudaViewMut<'b, f32>,
    pub v_scales: &'a mut CudaViewMut<'b, f32>,
}

/// [`rope_write_kv`] into an FP8 e4m3 cache: q rotated in place as there; each token's K (after
/// RoPE, from f32) and V rows quantised per KV head as `cpu::fp8::quantize_row_e4m3` does.
/// head_dim must be a power of two in [16, 256].
pub fn rope_write_kv_e4m3(
    gpu: &Gpu,
    shape: RopeShape,
    table: &RopeTable,
    qkv: &mut CudaViewMut<bf16>,
    positions: &CudaView<i32>,
    slots: &CudaView<i32>,
    cache: E4m3KvViews,
) -> Result<()> {
    const KERNEL: &str = "rope_write_kv_e4m3";
    let RopeShape { n_heads, n_kv_heads, head_dim, .. } = shape;
    ensure(head_dim == table.head_dim, KERNEL, || format!("head_dim {head_dim} != table's {}", table.head_dim))?;
    ensure(head_dim.is_power_of_two() && (16..=256).contains(&head_dim), KERNEL, || {
        format!("head_dim {head_dim} is not a power of two in [16, 256]")
    })?;
    let n_tokens = check_tokens(KERNEL, shape, positions, slots)?;
    let kv_width = n_kv_heads * head_dim;
    let n_slots = cache.k_codes.len() / kv_width;
    vector_buffer(&gpu.stream, KERNEL, "qkv", qkv, n_tokens * (n_heads * head_dim + 2 * kv_width))?;
    vector_buffer(&gpu.stream, KERNEL, "k_codes", cache.k_codes, n_slots * kv_width)?;
    vector_buffer(&gpu.stream, KERNEL, "v_codes", cache.v_codes, n_slots * kv_width)?;
    vector_buffer(&gpu.stream, KERNEL, "k_scales", cache.k_scales, n_slots * n_kv_heads)?;
    vector_buffer(&gpu.stream, KERNEL, "v_scales", cache.v_scales, n_slots * n_kv_heads)?;
    if n_tokens == 0 {
        return Ok(());
    }
    let params = RopeKvE4m3Params {
        qkv: address(&gpu.stream, qkv),
        k_codes: address(&gpu.stream, cache.k_codes),
        v_codes: address(&gpu.stream, cache.v_codes),
        k_scales: address(&gpu.stream, cache.k_scales),
        v_scales: address(&gpu.stream, cache.v_scales),
        cos_sin: address(&gpu.stream, &table.cos_sin),
        positions: address(&gpu.stream, positions),
        slots: address(&gpu.stream, slots),
        d: RopeDims::new(KERNEL, shape, table.max_positions, n_slots)?,
    };
    let cfg = token_grid(KERNEL, n_tokens)?;
    // SAFETY: every buffer is 16-byte aligned with the length checked above: the code buffers
    // n_slots rows of kv_width bytes (4- and 8-byte stores at multiples of 4 and 8 in a row), the
    // scale buffers n_slots x n_kv_heads floats;
    // positions and slots hold n_tokens entries, range-checked in the kernel (trap); the table
    // covers max_positions rows; head_dim / 8 divides the block's 256 threads.
    let func = &gpu.kernels.rope_write_kv_e4m3;
    gpu.launched(KERNEL, unsafe { gpu.launch_after_previous(func, cfg, &mut [crate::gpu::launch::arg(&params)]) })
}
