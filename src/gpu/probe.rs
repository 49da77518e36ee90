//! Detects a usable GPU without letting cudarc panic: cudarc's dynamic loader panics when
//! libcuda is absent, so the library is looked for first.

use cudarc::driver::{result, CudaContext};

use super::GpuError;

#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    pub multiprocessors: usize,
    pub device_count: i32,
}

/// Whether device 0 can be used, and what it is. Never panics.
pub fn probe() -> Result<GpuInfo, GpuError> {
    // SAFETY: only tries to dlopen libcuda; no driver call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::Unavailable("libcuda (the NVIDIA driver) was not found".into()));
    }
    result::init().map_err(|e| GpuError::Unavailable(format!("cuInit failed: {e}")))?;
    let device_count = CudaContext::device_count()
        .map_err(|e| GpuError::Unavailable(format!("cannot count devices: {e}")))?;
    if device_count < 1 {
        return Err(GpuError::Unavailable("the driver reports no CUDA device".into()));
    }
    let ctx = CudaContext::new(0).map_err(|e| GpuError::Unavailable(format!("device 0: {e}")))?;
    let info = GpuInfo {
        name: ctx.name().unwrap_or_else(|_| "unknown".into()),
        compute_capability: ctx.compute_capability().unwrap_or((0, 0)),
        total_memory: ctx.total_mem().unwrap_or(0),
        multiprocessors: ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(1) as usize,
        device_count,
    };
    // The kernels are compiled for sm_90a only.
    if info.compute_capability != (9, 0) {
        return Err(GpuError::Unavailable(format!(
            "{} has compute capability {}.{}; the kernels are built for sm_90a (H100/H200)",
            info.name, info.compute_capability.0, info.compute_capability.1
        )));
    }
    Ok(info)
}
