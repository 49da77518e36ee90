//! `gemm_wgmma_bf16` (kernels/gemm_wgmma.cu): out = A . W^T on Hopper's wgmma, fed by TMA, with
//! the epilogues of `gemm` (same shapes, same results up to summation order). The tensor maps
//! that TMA reads through are built here, per call, from the buffers' addresses and shapes.

use cudarc::driver::sys::{
    self, CUresult, CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapInterleave,
    CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use half::bf16;

use super::check::{allow_dynamic_smem, as_i32, ensure};
use super::gemm::{linear_params, split_k_over, Epilogue, GemmShape, LinearParams};
use crate::gpu::error::{GpuError, Result};
use crate::gpu::{Gpu, Kernels};

pub(crate) const KERNEL: &str = "gemm_wgmma_bf16";
const BM: usize = 128;
const BN: usize = 256;
const BK: usize = 64;
const STAGES: usize = 4;
const THREADS: u32 = 384;
/// Mirrors SMEM_BYTES in the kernel: alignment slack, the stages, the barriers.
const SMEM_BYTES: usize = 1024 + STAGES * (BM + BN) * BK * 2 + 2 * STAGES * 8;

/// A `CUtensorMap`'s 128 bytes with the kernel's `TensorMap` alignment (64; cudarc's type for
/// CUDA 13 is 128-aligned, which would change the parameter struct's layout).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct TensorMap(pub [u64; 16]);

/// Mirror of `WgmmaGemmParams` (kernels/gemm_wgmma.cu) (public so that the emulator tests,
/// tests/gpu/emulated, can launch the kernel with host pointers and their own tensor maps).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct WgmmaParams {
    pub a_map: TensorMap,
    pub w_map: TensorMap,
    pub out: u64,
    pub residual: u64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub ldo: i32,
    pub epilogue: i32,
    pub tile_group: i32,
    pub k_splits: i32,
}

impl WgmmaParams {
    /// The GEMM's parameters with A's and W's tensor maps (see `tensor_map_spec`).
    pub fn new(p: &LinearParams, a_map: TensorMap, w_map: TensorMap) -> WgmmaParams {
        WgmmaParams {
            a_map,
            w_map,
            out: p.out,
            residual: p.residual,
            m: p.m,
            n: p.n,
            k: p.k,
            ldo: p.ldo,
            epilogue: p.epilogue,
            tile_group: p.tile_group,
            k_splits: p.k_splits,
        }
    }
}

/// What TMA is told about a 2-D row-major bf16 tensor [rows, cols]: dimensions innermost first,
/// the row stride, a box of 64 columns (128 bytes, the swizzle width) by `box_rows` rows, and
/// the 128-byte swizzle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMapSpec {
    pub addr: u64,
    pub dims: [u64; 2],
    pub row_stride_bytes: u64,
    pub box_dims: [u32; 2],
    pub swizzle_bytes: u32,
}

/// The map of a [rows, cols] tensor read in boxes of `box_rows` rows (`BOX_ROWS`: A's, W's).
pub fn tensor_map_spec(addr: u64, rows: usize, cols: usize, box_rows: usize) -> TensorMapSpec {
    TensorMapSpec {
        addr,
        dims: [cols as u64, rows as u64],
        row_stride_bytes: (cols * 2) as u64,
        box_dims: [BK as u32, box_rows as u32],
        swizzle_bytes: 128,
    }
}

/// The box heights of A's and W's maps: the kernel's BM and BN.
pub const BOX_ROWS: (usize, usize) = (BM, BN);
const _: () = assert!(std::mem::size_of::<WgmmaParams>() == 320);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for WgmmaParams {}

/// A 2-D row-major bf16 tensor [rows, cols] at `addr` as TMA sees it (`tensor_map_spec`),
/// encoded by the driver; reads past the tensor return zeros.
fn tensor_map(addr: u64, rows: usize, cols: usize, box_rows: usize) -> Result<TensorMap> {
    encode_tensor_map(tensor_map_spec(addr, rows, cols, box_rows), KERNEL)
}

/// `spec` encoded by the driver (the context must be bound to this thread).
pub(crate) fn encode_tensor_map(spec: TensorMapSpec, kernel: &'static str) -> Result<TensorMap> {
    let (rows, cols) = (spec.dims[1], spec.dims[0]);
    let addr = spec.addr;
    let dims = spec.dims;
    let strides: [u64; 1] = [spec.row_stride_bytes]; // bytes between rows; the innermost is implied
    let boxes = spec.box_dims;
    let element_strides: [u32; 2] = [1, 1];
    let mut map = sys::CUtensorMap { opaque: [0; 16] };
    // SAFETY: every pointer is to a live local array of the rank's length; `map` is the
    // 128-aligned output the call requires; the global address is a device allocation of
    // rows * cols bf16 (checked by the caller).
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            &mut map,
            CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            addr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    if r != CUresult::CUDA_SUCCESS {
        return Err(GpuError::BadArgument { kernel, what: format!("cuTensorMapEncodeTiled({rows} x {cols}) failed: {r:?}") });
    }
    Ok(TensorMap(map.opaque))
}

/// Registers per thread the kernel's setmaxnreg hand-off assumes: 128 x 40 (producer) +
/// 256 x 232 (consumers) = 384 x 168. With fewer, the consumers' request could never be met and
/// the kernel would hang.
const REGISTERS: i32 = 168;

/// Raises the kernel's dynamic shared-memory limit (once, at start-up).
pub(crate) fn configure(kernels: &Kernels) -> Result<()> {
    allow_dynamic_smem(&kernels.gemm_wgmma_bf16, KERNEL, SMEM_BYTES)
}

/// out = epilogue(A . W^T) on wgmma. A: `[M, K]`, W: `[N, K]`, out: `[M, N]` (`[M, N/2]` for
/// SwiGLU). K must be a multiple of 8, N of 8 (16 for SwiGLU); as `gemm`.
pub fn gemm_wgmma(
    gpu: &Gpu,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epilogue: Epilogue,
) -> Result<()> {
    launch(gpu, linear_params(gpu, KERNEL, a, w, out, shape, Some(epilogue))?, shape, 1)
}

/// out = A . W^T stored as f32 (the LM head's logits) on wgmma. Shapes as for `gemm_wgmma`.
pub fn gemm_wgmma_f32(gpu: &Gpu, a: &CudaView<bf16>, w: &CudaView<bf16>, out: &mut CudaViewMut<f32>, shape: GemmShape) -> Result<()> {
    launch(gpu, linear_params(gpu, KERNEL, a, w, out, shape, None)?, shape, 1)
}

/// Split-K ranges for `gemm_wgmma` on `sms` multiprocessors (`gemm::split_k`'s rule over its
/// 128 x 256 tiles): decode batches of Nemo's o and down projections have 20-40 of them.
pub fn split_k(shape: GemmShape, sms: usize) -> usize {
    split_k_over(shape.m.div_ceil(BM) * shape.n.div_ceil(BN), shape.k, sms)
}

/// The launch: one block per 128 x 256 output tile; the kernel orders them (kernels/tile_order.cuh).
pub fn launch_config(shape: GemmShape) -> Result<LaunchConfig> {
    split_launch_config(shape, 1)
}

/// The launch with `k_splits` blocks per output tile (grid y), each over its range of K.
pub fn split_launch_config(shape: GemmShape, k_splits: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (as_i32(KERNEL, "output tiles", shape.m.div_ceil(BM) * shape.n.div_ceil(BN))? as u32, k_splits as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: SMEM_BYTES as u32,
    })
}

/// The launch with `k_splits` blocks per tile (`gemm::gemm_split_k` runs it over K ranges).
pub(crate) fn launch(gpu: &Gpu, p: LinearParams, shape: GemmShape, k_splits: usize) -> Result<()> {
    if shape.m == 0 {
        return Ok(());
    }
    ensure(p.lda == p.k, KERNEL, || format!("A's row stride {} is not K = {}", p.lda, p.k))?;
    // Checked at launch, not at start-up: a driver that builds this opt-in kernel differently
    // must not keep the rest of the engine from starting.
    let regs = gpu.kernels.gemm_wgmma_bf16.num_regs().map_err(GpuError::driver(format!("reading {KERNEL}'s registers")))?;
    ensure(regs == REGISTERS, KERNEL, || {
        format!("the driver built it with {regs} registers per thread, not {REGISTERS}: setmaxnreg would hang")
    })?;
    // cuTensorMapEncodeTiled needs the context current on this thread (cudarc binds it for its
    // own calls only).
    gpu.ctx.bind_to_thread().map_err(GpuError::driver("binding the context"))?;
    let params = WgmmaParams::new(&p, tensor_map(p.a, shape.m, shape.k, BM)?, tensor_map(p.w, shape.n, shape.k, BN)?);
    let cfg = split_launch_config(shape, k_splits)?;
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.gemm_wgmma_bf16);
    launch.arg(&params);
    // SAFETY: A, W and out hold M*K, N*K and M*out_cols elements, 16-byte aligned (checked by
    // linear_params), and the tensor maps describe exactly A and W; K % 8 == 0 gives TMA its
    // 16-byte row stride; boxes past M, N or K are zero-filled by TMA and the epilogue stores only
    // rows < M and columns < N; the shared-memory limit was raised in `configure`. With k_splits
    // > 1, out is an f32 workspace of at least k_splits x M x N floats (checked by
    // gemm::gemm_split_k_with; block y writes plane y).
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
}
