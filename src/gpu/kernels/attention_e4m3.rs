//! Attention over an FP8 e4m3 KV cache (docs/fp8-kv.md): the `_e4m3` variants of the kernels in
//! kernels/attention_decode.cu and kernels/attention_prefill.cu, read through the same parameter
//! block as the bf16 ones plus the per-row scales (`AttentionParams::k_scales`, `v_scales`).

use cudarc::driver::{CudaView, CudaViewMut};
use half::bf16;

use super::attention::{
    decode_rope, launch_decode, launch_prefill, params, AttentionParams, FlashPrefill, AttentionShape, DecodeKernel, DecodeRope, DecodeWorkspace,
    DeviceAttentionMeta,
};
use super::check::{address, vector_buffer};
use super::rope::{E4m3KvViews, RopeTable};
use crate::gpu::error::Result;
use crate::gpu::Gpu;
use crate::model::RopeLayout;

/// One layer's FP8 e4m3 cache as the kernels read it: codes `[n_slots, n_kv_heads, head_dim]`
/// and scales `[n_slots, n_kv_heads]` for K and V.
#[derive(Clone, Copy)]
pub struct E4m3KvCache<'a, 'b> {
    pub k_codes: &'a CudaView<'b, u8>,
    pub v_codes: &'a CudaView<'b, u8>,
    pub k_scales: &'a CudaView<'b, f32>,
    pub v_scales: &'a CudaView<'b, f32>,
}

/// The bf16 kernels' parameter block over the FP8 cache: codes where the bf16 cache would be,
/// and the scales (lengths checked against the cache the metadata was checked against).
#[allow(clippy::too_many_arguments)]
fn e4m3_params(
    gpu: &Gpu,
    kernel: &'static str,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    cache: E4m3KvCache,
    out: &mut CudaViewMut<bf16>,
) -> Result<AttentionParams> {
    let mut p = params(gpu, kernel, shape, meta, q, cache.k_codes, cache.v_codes, out)?;
    let scales = meta.n_cache_blocks() * meta.block_size() * shape.n_kv_heads;
    vector_buffer(&gpu.stream, kernel, "k_scales", cache.k_scales, scales)?;
    vector_buffer(&gpu.stream, kernel, "v_scales", cache.v_scales, scales)?;
    p.k_scales = address(&gpu.stream, cache.k_scales);
    p.v_scales = address(&gpu.stream, cache.v_scales);
    Ok(p)
}

/// `attention_decode_with` over an FP8 e4m3 cache (written by `rope_write_kv_e4m3`) on the
/// chosen kernel: each key's score times its K scale, its probability times its V scale where it
/// meets V.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_e4m3(
    gpu: &Gpu,
    kernel: DecodeKernel,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    cache: E4m3KvCache,
    workspace: &mut DecodeWorkspace,
    n_splits: usize,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    let p = e4m3_params(gpu, kernel.names().label(true), shape, meta, q, cache, out)?;
    launch_decode(gpu, kernel, shape, meta, p, DecodeRope::default(), workspace, n_splits, true)
}

/// `attention_decode_e4m3` (either kernel) that also does `rope_write_kv_e4m3`'s work for each sequence's new
/// token, as `attention_decode_rope` does for a bf16 cache: q rotated in the kernel (qkv not
/// written), the new K (rotated) and V rows quantised into their slot's codes and scales by the
/// same row writer as `rope_write_kv_e4m3` (kernels/kv_e4m3.cuh).
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_rope_e4m3(
    gpu: &Gpu,
    kernel: DecodeKernel,
    shape: AttentionShape,
    table: &RopeTable,
    layout: RopeLayout,
    meta: &DeviceAttentionMeta,
    qkv: &CudaView<bf16>,
    cache: E4m3KvViews,
    workspace: &mut DecodeWorkspace,
    n_splits: usize,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    let name = kernel.names().label(true);
    let (kc, vc, ks, vs) = (cache.k_codes.as_view(), cache.v_codes.as_view(), cache.k_scales.as_view(), cache.v_scales.as_view());
    let views = E4m3KvCache { k_codes: &kc, v_codes: &vc, k_scales: &ks, v_scales: &vs };
    // The q rows' length check covers k and v too: q_stride is the whole row.
    let p = e4m3_params(gpu, name, shape, meta, qkv, views, out)?;
    let mut rope = decode_rope(gpu, name, shape, table, layout, meta, qkv, p.k_cache, p.v_cache)?;
    rope.k_scales = p.k_scales;
    rope.v_scales = p.v_scales;
    launch_decode(gpu, kernel, shape, meta, p, rope, workspace, n_splits, true)
}

/// `attention_prefill` on a flash kernel over an FP8 e4m3 cache (written by `rope_write_kv_e4m3`): causal
/// attention of every new token over its sequence's keys, codes converted to bf16 tiles in
/// shared memory, scores times their K scales, probabilities times their V scales. Shapes as
/// for `attention_prefill`.
pub fn attention_prefill_e4m3(
    gpu: &Gpu,
    kernel: FlashPrefill,
    shape: AttentionShape,
    meta: &DeviceAttentionMeta,
    q: &CudaView<bf16>,
    cache: E4m3KvCache,
    out: &mut CudaViewMut<bf16>,
) -> Result<()> {
    let p = e4m3_params(gpu, kernel.names().label(true), shape, meta, q, cache, out)?;
    launch_prefill(gpu, kernel, shape, meta, p, true)
}
