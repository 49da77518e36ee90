//! Context, stream and the typed kernel handles, created once at start-up.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use cudarc::nvrtc::Ptx;

use super::error::{GpuError, Result};
use super::kernels::decode_table::{DecodeInstance, DecodeKernels};
use super::kernels::prefill_table::{FlashPrefill, PrefillKernels};
use super::{probe, ptx, GpuInfo};

/// Declares `Kernels`, one field per `extern "C"` kernel, grouped by the .cu module defining it;
/// the decode and flash prefill attention kernels, one per shape and dtype, sit in tables loaded by
/// name (`DecodeKernels`, `PrefillKernels`).
macro_rules! kernel_table {
    ($($module:literal => [$($name:ident),* $(,)?]),* $(,)?) => {
        /// A handle for every kernel in `kernels/*.cu`, loaded once at start-up.
        pub struct Kernels {
            $($(pub $name: CudaFunction,)*)*
            /// The decode attention kernels, one per (kernel, cache dtype, head_dim, G).
            pub decode: DecodeKernels,
            /// The flash prefill attention kernels, one per (kernel, cache dtype, head_dim).
            pub prefill: PrefillKernels,
        }

        impl Kernels {
            /// (module, kernels) as declared here; `declared` adds the decode table.
            const FIELDS: &'static [(&'static str, &'static [&'static str])] =
                &[$(($module, &[$(stringify!($name)),*])),*];

            fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
                $(
                    let module = load_module(ctx, $module)?;
                    $(
                        let $name = module
                            .load_function(stringify!($name))
                            .map_err(GpuError::driver(concat!("loading ", stringify!($name))))?;
                    )*
                )*
                let decode = DecodeKernels::load(ctx, load_module)?;
                let prefill = PrefillKernels::load(ctx, load_module)?;
                Ok(Kernels { $($($name,)*)* decode, prefill })
            }
        }
    };
}

kernel_table! {
    "attention_prefill_wgmma" => [
        attention_prefill_wgmma_bf16_hd128, attention_prefill_wgmma_bf16_hd64,
        attention_prefill_wgmma_overlap_bf16_hd128, attention_prefill_wgmma_overlap_bf16_hd64,
        attention_prefill_wgmma_pingpong_bf16_hd128, attention_prefill_wgmma_pingpong_bf16_hd64,
    ],
    "embedding" => [embedding_gather_bf16],
    "gemm" => [gemm_bf16, gemm_split_reduce_bf16],
    "gemm_wgmma" => [gemm_wgmma_bf16],
    "gemv" => [gemv_bf16, gemv_multi_bf16],
    "random" => [fill_uniform_bf16],
    "rmsnorm" => [rmsnorm_bf16, fused_add_rmsnorm_bf16],
    "rope" => [rope_write_kv_bf16, rope_write_kv_e4m3, rope_cos_sin_table_f32],
    "sampling" => [sample_tokens_f32, apply_logit_edits_f32, apply_token_mask_f32, target_logprobs_f32],
}

impl Kernels {
    /// Every kernel entry the engine loads, by module; a test checks it against the PTX entries.
    pub fn declared() -> Vec<(&'static str, Vec<String>)> {
        let mut out: Vec<(&'static str, Vec<String>)> =
            Self::FIELDS.iter().map(|(m, names)| (*m, names.iter().map(|n| n.to_string()).collect())).collect();
        let decode = DecodeInstance::all().map(|i| (i.kernel.names().module, i.entry().expect("a declared instance")));
        let prefill = FlashPrefill::instances().map(|(k, e4m3, hd)| (k.names().module, k.entry(e4m3, hd).expect("a declared instance")));
        for (module, entry) in decode.chain(prefill) {
            match out.iter_mut().find(|(m, _)| *m == module) {
                Some((_, names)) => names.push(entry),
                None => out.push((module, vec![entry])),
            }
        }
        out
    }
}

fn load_module(ctx: &Arc<CudaContext>, name: &str) -> Result<Arc<CudaModule>> {
    let src = ptx::module(name).ok_or_else(|| GpuError::MissingModule(name.into()))?;
    ctx.load_module(Ptx::from_src(src))
        .map_err(GpuError::driver(format!("loading PTX module `{name}`")))
}

/// One GPU: device 0, its default stream and every kernel.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: Kernels,
    pub info: GpuInfo,
    /// `NEMO_CUDA_SYNC=1`: synchronise and check after every launch, so an asynchronous fault
    /// is reported against the kernel that caused it.
    sync_each_launch: bool,
    /// Decode steps may be captured and replayed as CUDA graphs (the stream is capturable).
    pub cuda_graphs: bool,
    /// GEMVs launch as programmatic dependents of the kernel before them (`GpuOptions::pdl`).
    pub pdl: bool,
}

/// How to open the GPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuOptions {
    /// Replay decode steps as CUDA graphs (one per batch size, captured on first use).
    pub cuda_graphs: bool,
    /// Launch the GEMVs as programmatic dependents (kernels/grid_dependency.cuh): each starts
    /// prefetching its weights while the kernel before it finishes.
    pub pdl: bool,
}

impl GpuOptions {
    /// `NEMO_CUDA_GRAPHS=1` turns graphs on, `NEMO_PDL=1` dependent launches (both off by
    /// default until a GPU run has checked them: docs/hopper.md).
    pub fn from_env() -> GpuOptions {
        let on = |name| std::env::var(name).is_ok_and(|v| v == "1");
        GpuOptions { cuda_graphs: on("NEMO_CUDA_GRAPHS"), pdl: on("NEMO_PDL") }
    }
}

impl Gpu {
    /// Probes for a GPU (never panics without one), creates the context and loads every module.
    /// `NEMO_CUDA_GRAPHS=1` asks for decode steps replayed as CUDA graphs (`GpuOptions`).
    pub fn new() -> Result<Gpu> {
        Gpu::open(GpuOptions::from_env())
    }

    pub fn open(opts: GpuOptions) -> Result<Gpu> {
        let info = probe()?;
        let ctx = CudaContext::new(0).map_err(GpuError::driver("creating the context"))?;
        // One stream, ordered launches, raw pointers inside kernel parameter structs:
        // cudarc's per-buffer event tracking would only add overhead.
        // SAFETY: no other stream exists yet, so no buffer can be shared across streams.
        unsafe { ctx.disable_event_tracking() };
        let sync_each_launch = std::env::var("NEMO_CUDA_SYNC").is_ok_and(|v| v == "1");
        // Synchronising inside a stream capture is an error, so the debug switch wins (and says so).
        let cuda_graphs = opts.cuda_graphs && !sync_each_launch;
        if opts.cuda_graphs && sync_each_launch {
            eprintln!("nemo: NEMO_CUDA_SYNC=1: CUDA graphs are off (a capture cannot synchronise after each launch)");
        }
        // The legacy default stream cannot be captured, and it synchronises with every other
        // stream: graphs and dependent launches get a stream of our own.
        let stream = if cuda_graphs || opts.pdl {
            ctx.new_stream().map_err(GpuError::driver("creating a stream"))?
        } else {
            ctx.default_stream()
        };
        let kernels = Kernels::load(&ctx)?;
        super::kernels::gemm::configure(&kernels)?;
        super::kernels::gemm_wgmma::configure(&kernels)?;
        super::kernels::attention::configure(&kernels)?;
        super::kernels::attention_wgmma::configure(&kernels)?;
        super::kernels::sampling::configure(&kernels)?;
        Ok(Gpu { ctx, stream, kernels, info, sync_each_launch, cuda_graphs, pdl: opts.pdl })
    }

    /// Turns a launch result into a typed error naming the kernel; with `NEMO_CUDA_SYNC=1` also
    /// waits for the kernel and reports any fault it raised.
    pub(crate) fn launched(&self, kernel: &'static str, r: std::result::Result<(), DriverError>) -> Result<()> {
        r.map_err(GpuError::driver(format!("launching {kernel}")))?;
        if self.sync_each_launch {
            self.synchronize(kernel)?;
        }
        Ok(())
    }

    pub fn synchronize(&self, context: &str) -> Result<()> {
        self.stream.synchronize().map_err(GpuError::driver(format!("after {context}")))
    }
}
