//! Host <-> device copies with typed errors.

use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr};

use super::error::{GpuError, Result};
use super::Gpu;

pub fn upload<T: DeviceRepr>(gpu: &Gpu, host: &[T]) -> Result<CudaSlice<T>> {
    gpu.stream.clone_htod(host).map_err(GpuError::driver("copying to the device"))
}

/// Copies a device buffer back (synchronises the stream).
pub fn download<T: DeviceRepr + Default + Clone>(gpu: &Gpu, dev: &impl DevicePtr<T>) -> Result<Vec<T>> {
    let host = gpu.stream.clone_dtoh(dev).map_err(GpuError::driver("copying from the device"))?;
    gpu.synchronize("copying from the device")?;
    Ok(host)
}
