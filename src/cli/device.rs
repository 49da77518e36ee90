//! Choosing the backend: `--device cpu | cuda | auto`. The GPU is probed before cudarc is
//! touched (it panics without libcuda); `auto` falls back to the CPU only when there is no
//! usable GPU, and says so. A GPU that is present but cannot run the model is an error, never a
//! silent fallback.

use anyhow::Context;

use nemo_engine::engine::{Backend, CpuBackend, CudaBackend, CudaOptions};
use nemo_engine::gpu::model::CudaModel;
use nemo_engine::gpu::{self, GpuInfo};
use nemo_engine::model::{ModelConfig, ModelWeights};

use super::args::{DeviceChoice, KvSize, ModelSource};

/// What the probe decided, before the model is loaded (so `--device cuda` on a machine without
/// a GPU fails at once).
pub enum Device {
    Cpu,
    Cuda(GpuInfo),
}

pub fn select(choice: DeviceChoice) -> anyhow::Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            let info = gpu::probe().context("--device cuda")?;
            Ok(Device::Cuda(info))
        }
        DeviceChoice::Auto => match gpu::probe() {
            Ok(info) => Ok(Device::Cuda(info)),
            Err(why) => {
                eprintln!(
                    "nemo: notice: {why}; running on the CPU (the f32 reference path: fine for \
                     small models, very slow for a 12B one). --device cpu silences this."
                );
                Ok(Device::Cpu)
            }
        },
    }
}

/// The CUDA sizes for `config`, with `--kv-tokens` if given.
pub fn cuda_options(config: &ModelConfig, kv_tokens: Option<KvSize>) -> CudaOptions {
    let mut opts = CudaOptions::for_config(config);
    if let Some(kv) = kv_tokens {
        opts.kv = kv;
    }
    opts
}

/// The CUDA sizes and KV dtype a command's model source asks for.
pub fn source_cuda_options(config: &ModelConfig, source: &ModelSource) -> CudaOptions {
    CudaOptions { kv_dtype: source.kv_cache_dtype, ..cuda_options(config, source.kv_tokens) }
}

/// `--kv-tokens` for a CPU backend: a count (None: the command's default); `max` is refused,
/// as it sizes a GPU's cache.
pub fn cpu_kv_tokens(kv_tokens: Option<KvSize>) -> anyhow::Result<Option<usize>> {
    match kv_tokens {
        None => Ok(None),
        Some(KvSize::Tokens(n)) => Ok(Some(n)),
        Some(KvSize::FillFreeMemory { .. }) => {
            anyhow::bail!("--kv-tokens max sizes the KV cache to the GPU's free memory; on the CPU give a number of tokens")
        }
    }
}

pub fn open<'w>(device: &Device, weights: &'w ModelWeights, source: &ModelSource) -> anyhow::Result<Box<dyn Backend + 'w>> {
    match device {
        Device::Cpu => Ok(Box::new(CpuBackend::new(weights).with_kv_cache_dtype(source.kv_cache_dtype))),
        Device::Cuda(info) => {
            eprintln!(
                "nemo: GPU: {} (sm_{}{}, {:.1} GiB)",
                info.name,
                info.compute_capability.0,
                info.compute_capability.1,
                info.total_memory as f64 / (1u64 << 30) as f64
            );
            let backend = CudaBackend::from_weights(weights, source_cuda_options(&weights.config, source))
                .with_context(|| format!("opening the CUDA backend on {}", info.name))?;
            eprintln!(
                "nemo: weights on the GPU in {:.2} s; KV cache {} tokens {} ({:.1} GB)",
                backend.model.weights.load_seconds,
                backend.model.capacity(),
                backend.model.kv.dtype.gpu_label(),
                backend.model.kv.bytes() as f64 / 1e9
            );
            Ok(Box::new(backend))
        }
    }
}

/// With CUDA graphs on (`NEMO_CUDA_GRAPHS=1`), captures a serving model's decode graphs before
/// the first request, so a wandering batch size never pays a capture mid-stream, and says what
/// it cost. Nothing happens with graphs off.
pub fn capture_decode_graphs(model: &mut CudaModel) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    if let Some(report) = model.capture_decode_graphs().context("capturing the decode steps' CUDA graphs")? {
        eprintln!(
            "nemo: CUDA graphs: {} decode graph(s) captured in {:.1} ms ({:.2} s with their warm-up steps)",
            report.captured,
            report.capture_ms,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
