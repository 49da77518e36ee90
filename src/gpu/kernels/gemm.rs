//! `gemm_bf16` (kernels/gemm.cu): out = A . W^T on tensor cores, with plain, residual-add and
//! SwiGLU epilogues. For prefill-sized M; `gemv` serves M <= 8.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use half::bf16;

use super::check::{address, allow_dynamic_smem, as_i32, ensure, vector_buffer};
use crate::gpu::error::Result;
use crate::gpu::{Gpu, Kernels};

pub(crate) const KERNEL: &str = "gemm_bf16";
const BM: usize = 128;
const BN: usize = 128;
const BK: usize = 64;
const STAGES: usize = 3;
/// Dynamic shared memory: STAGES x (A tile + W tile) in bf16.
const SMEM_BYTES: usize = STAGES * (BM + BN) * BK * 2;

/// What happens to each accumulator of `A . W^T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// out[m, n] = acc
    Store,
    /// out[m, n] += acc (the residual stream, updated in place)
    AddInPlace,
    /// out[m, j] = silu(gate) * up, W being the fused gate/up weight in 8-row interleaved groups
    /// (see kernels/gemm.cu); out has N / 2 columns
    SwiGlu,
}

impl Epilogue {
    pub fn code(self) -> i32 {
        match self {
            Epilogue::Store => 0,
            Epilogue::AddInPlace => 1,
            Epilogue::SwiGlu => 2,
        }
    }

    /// The kernels' code for storing f32 (the LM head's logits).
    pub const F32_CODE: i32 = 3;

    /// Columns of the output for an N-wide weight.
    pub fn out_cols(self, n: usize) -> usize {
        if self == Epilogue::SwiGlu { n / 2 } else { n }
    }
}

/// M x N x K of `A[M, K] . W[N, K]^T`.
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// Mirror of `GemmParams` (kernels/gemm.cu) and `GemvParams` (kernels/gemv.cu) (public so that
/// the emulator tests, tests/gpu/emulated, can launch the kernels with host pointers).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LinearParams {
    pub a: u64,
    pub w: u64,
    pub out: u64,
    pub residual: u64,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub lda: i32,
    pub ldo: i32,
    pub epilogue: i32,
    /// M-tiles per group of the GEMM's block order (kernels/tile_order.cuh); gemv ignores it.
    pub tile_group: i32,
    /// Split-K ranges (>= 1; > 1 only with the f32 epilogue into a partials workspace, see
    /// `gemm_split_k`); gemv ignores it.
    pub k_splits: i32,
}
const _: () = assert!(std::mem::size_of::<LinearParams>() == 64);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for LinearParams {}

/// Checks buffers against the shape and builds the kernel parameters (contiguous rows).
/// `epilogue` None: f32 output (`T` = f32).
pub(crate) fn linear_params<T>(
    gpu: &Gpu,
    kernel: &'static str,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<T>,
    shape: GemmShape,
    epilogue: Option<Epilogue>,
) -> Result<LinearParams> {
    let GemmShape { m, n, k } = shape;
    let n_align = if epilogue == Some(Epilogue::SwiGlu) { 16 } else { 8 };
    ensure(n > 0 && n % n_align == 0, kernel, || format!("N = {n} is not a positive multiple of {n_align}"))?;
    ensure(k > 0 && k % 8 == 0, kernel, || format!("K = {k} is not a positive multiple of 8"))?;
    vector_buffer(&gpu.stream, kernel, "A", a, m * k)?;
    vector_buffer(&gpu.stream, kernel, "W", w, n * k)?;
    let out_cols = epilogue.map_or(n, |e| e.out_cols(n));
    vector_buffer(&gpu.stream, kernel, "out", out, m * out_cols)?;
    let out_addr = address(&gpu.stream, out);
    Ok(LinearParams {
        a: address(&gpu.stream, a),
        w: address(&gpu.stream, w),
        out: out_addr,
        residual: if epilogue == Some(Epilogue::AddInPlace) { out_addr } else { 0 },
        m: as_i32(kernel, "M", m)?,
        n: as_i32(kernel, "N", n)?,
        k: as_i32(kernel, "K", k)?,
        lda: k as i32,
        ldo: out_cols as i32,
        epilogue: epilogue.map_or(Epilogue::F32_CODE, Epilogue::code),
        tile_group: TILE_GROUP,
        k_splits: 1,
    })
}

/// M-tiles per group of the block order: 16 x 128 rows of A stay in L2 while the group's N-tiles
/// go by (kernels/tile_order.cuh says why).
pub const TILE_GROUP: i32 = 16;

/// Raises the kernel's dynamic shared-memory limit (once, at start-up).
pub(crate) fn configure(kernels: &Kernels) -> Result<()> {
    allow_dynamic_smem(&kernels.gemm_bf16, KERNEL, SMEM_BYTES)
}

/// out = epilogue(A . W^T). A: `[M, K]`, W: `[N, K]`, out: `[M, N]` (`[M, N/2]` for SwiGLU).
/// K must be a multiple of 8, N of 8 (16 for SwiGLU).
pub fn gemm(
    gpu: &Gpu,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epilogue: Epilogue,
) -> Result<()> {
    launch(gpu, linear_params(gpu, KERNEL, a, w, out, shape, Some(epilogue))?, shape)
}

/// The launch of `gemm` with the blocks taking tiles N fastest, one row of M-tiles at a time
/// (the order before tile_order.cuh): the kernel lab's `mma-n-major`, to measure the order's
/// effect in the same run.
pub(crate) fn launch_n_major(gpu: &Gpu, params: LinearParams, shape: GemmShape) -> Result<()> {
    launch(gpu, LinearParams { tile_group: 1, ..params }, shape)
}

/// out = A . W^T stored as f32 (the LM head's logits). Shapes as for `gemm`.
pub fn gemm_f32(gpu: &Gpu, a: &CudaView<bf16>, w: &CudaView<bf16>, out: &mut CudaViewMut<f32>, shape: GemmShape) -> Result<()> {
    launch(gpu, linear_params(gpu, KERNEL, a, w, out, shape, None)?, shape)
}

/// `gemm`'s launch: one block per output tile; the kernel orders them (kernels/tile_order.cuh).
pub fn launch_config(shape: GemmShape) -> Result<LaunchConfig> {
    split_launch_config(shape, 1)
}

/// The launch with `k_splits` blocks per output tile (grid y), each over its range of K.
pub fn split_launch_config(shape: GemmShape, k_splits: usize) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (as_i32(KERNEL, "output tiles", shape.m.div_ceil(BM) * shape.n.div_ceil(BN))? as u32, k_splits as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: SMEM_BYTES as u32,
    })
}

/// Split-K ranges for a GEMM on `sms` multiprocessors: 1 when the output tiles fill the GPU;
/// else enough to give every SM about two blocks, each range at least 4 k-tiles (256 of K), at
/// most 8. Decode batches (M <= 256) of Nemo's o and down projections have 40-80 tiles.
pub fn split_k(shape: GemmShape, sms: usize) -> usize {
    split_k_over(shape.m.div_ceil(BM) * shape.n.div_ceil(BN), shape.k, sms)
}

/// `split_k` for any kernel with 64-wide k-steps whose output has `tiles` tiles (gemm_wgmma's
/// are 128 x 256). Splits x tiles stays under 3 x sms, so splits x M x N stays within
/// `split_k_workspace_len` for tiles of up to 128 x 256.
pub(crate) fn split_k_over(tiles: usize, k: usize, sms: usize) -> usize {
    if tiles >= sms {
        return 1;
    }
    let k_tiles = k.div_ceil(BK);
    (2 * sms).div_ceil(tiles).min(k_tiles / 4).clamp(1, 8)
}

/// Mirror of `SplitReduceParams` in kernels/gemm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SplitReduceParams {
    pub partial: u64,
    pub out: u64,
    pub residual: u64,
    pub m: i32,
    pub n: i32,
    pub k_splits: i32,
    pub ldo: i32,
    pub epilogue: i32,
}
const _: () = assert!(std::mem::size_of::<SplitReduceParams>() == 48);
// SAFETY: plain old data with the C struct's layout (size asserted on both sides).
unsafe impl DeviceRepr for SplitReduceParams {}

/// `gemm_split_reduce_bf16`'s launch: a grid-stride loop over M x output columns.
pub fn split_reduce_config(m: usize, out_cols: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: ((m * out_cols).div_ceil(256).clamp(1, 1024) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// Floats of a split-K workspace that serves every shape on `sms` multiprocessors: split-K runs
/// only with fewer output tiles than SMs (M x N < sms x 128 x 128) and at most 8 splits.
pub fn split_k_workspace_len(sms: usize) -> usize {
    8 * sms * BM * BN
}

/// The tensor-core GEMM a split-K run splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitGemm {
    /// `gemm` (kernels/gemm.cu), 128 x 128 tiles.
    Mma,
    /// `gemm_wgmma` (kernels/gemm_wgmma.cu), 128 x 256 tiles.
    Wgmma,
}

impl SplitGemm {
    /// Split-K ranges for `shape` on `sms` multiprocessors over this kernel's tiles.
    pub fn splits(self, shape: GemmShape, sms: usize) -> usize {
        match self {
            SplitGemm::Mma => split_k(shape, sms),
            SplitGemm::Wgmma => super::gemm_wgmma::split_k(shape, sms),
        }
    }
}

/// `kernel` with K split `kernel.splits` ways when the output tiles alone would leave SMs idle
/// (decode batches): the blocks write f32 partials to a workspace and `gemm_split_reduce_bf16`
/// sums them through the epilogue. Same arguments and results as `gemm` (up to summation order).
/// The kernel lab's variant: the workspace is allocated per call (stream-ordered, no memset).
pub fn gemm_split_k(
    gpu: &Gpu,
    kernel: SplitGemm,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epilogue: Epilogue,
) -> Result<()> {
    let floats = kernel.splits(shape, gpu.info.multiprocessors) * shape.m * shape.n;
    // SAFETY: uninitialised floats; the split GEMM writes every element of every plane (blocks
    // with an empty range of K write zeros) before the reduce reads them.
    let mut workspace = unsafe { gpu.stream.alloc::<f32>(floats.max(1)) }
        .map_err(crate::gpu::error::GpuError::driver("allocating the split-K workspace"))?;
    gemm_split_k_with(gpu, kernel, a, w, out, shape, epilogue, &mut workspace)
}

/// `gemm_split_k` with the caller's workspace (at least `split_k_workspace_len` floats serves
/// every shape): allocation-free, so it can run inside a captured CUDA graph.
#[allow(clippy::too_many_arguments)]
pub fn gemm_split_k_with(
    gpu: &Gpu,
    kernel: SplitGemm,
    a: &CudaView<bf16>,
    w: &CudaView<bf16>,
    out: &mut CudaViewMut<bf16>,
    shape: GemmShape,
    epilogue: Epilogue,
    workspace: &mut CudaSlice<f32>,
) -> Result<()> {
    let splits = kernel.splits(shape, gpu.info.multiprocessors);
    let name = if kernel == SplitGemm::Mma { KERNEL } else { super::gemm_wgmma::KERNEL };
    let p = linear_params(gpu, name, a, w, out, shape, Some(epilogue))?;
    // The kernel itself, over `splits` ranges of K (grid y).
    let launch_gemm = |params: LinearParams, splits: usize| match kernel {
        SplitGemm::Wgmma => super::gemm_wgmma::launch(gpu, params, shape, splits),
        SplitGemm::Mma if splits == 1 => launch(gpu, params, shape),
        SplitGemm::Mma => {
            let mut launch = gpu.stream.launch_builder(&gpu.kernels.gemm_bf16);
            launch.arg(&params);
            // SAFETY: as for `gemm`, with the f32 output being the workspace of at least splits x
            // M x N floats (checked below; block y writes plane y).
            gpu.launched(KERNEL, unsafe { launch.launch(split_launch_config(shape, splits)?) }.map(|_| ()))
        }
    };
    if splits == 1 || shape.m == 0 {
        return launch_gemm(p, 1);
    }
    ensure(workspace.len() >= splits * shape.m * shape.n, name, || {
        format!("the split-K workspace holds {} floats, needs {splits} x {} x {}", workspace.len(), shape.m, shape.n)
    })?;
    let partials = LinearParams {
        out: address(&gpu.stream, workspace),
        residual: 0,
        ldo: shape.n as i32,
        epilogue: Epilogue::F32_CODE,
        k_splits: splits as i32,
        ..p
    };
    launch_gemm(partials, splits)?;
    let reduce = SplitReduceParams {
        partial: address(&gpu.stream, workspace),
        out: p.out,
        residual: p.residual,
        m: p.m,
        n: p.n,
        k_splits: splits as i32,
        ldo: p.ldo,
        epilogue: p.epilogue,
    };
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.gemm_split_reduce_bf16);
    launch.arg(&reduce);
    // SAFETY: reads the splits x M x N partials written above; writes M x out_cols outputs of
    // `out` (checked by linear_params), reading the residual at the same offsets.
    gpu.launched("gemm_split_reduce_bf16", unsafe { launch.launch(split_reduce_config(shape.m, epilogue.out_cols(shape.n))) }.map(|_| ()))
}

fn launch(gpu: &Gpu, params: LinearParams, shape: GemmShape) -> Result<()> {
    if shape.m == 0 {
        return Ok(());
    }
    let cfg = launch_config(shape)?;
    let mut launch = gpu.stream.launch_builder(&gpu.kernels.gemm_bf16);
    launch.arg(&params);
    // SAFETY: A, W and out hold M*K, N*K and M*out_cols elements, 16-byte aligned (checked by
    // linear_params); K % 8 == 0 and N % 8 (16) == 0 as the kernel's 16-byte loads and paired
    // stores need; rows past M or N and k past K are zero-filled on load and skipped on store;
    // the shared-memory limit was raised in `configure`.
    gpu.launched(KERNEL, unsafe { launch.launch(cfg) }.map(|_| ()))
}
