//! Host <-> device copies with typed errors.

use cudarc::driver::{sys, CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr};

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

/// Copies `host`, rows of `width` elements packed one after another, into `dev`, whose rows are
/// `pitch >= width` elements apart: one strided driver copy (`cuMemcpy2DAsync`) however many rows,
/// so a table allocated wide for a CUDA graph is refilled with only the entries in use. The rest of
/// each device row keeps what it held.
pub fn upload_rows<T: DeviceRepr>(gpu: &Gpu, host: &[T], width: usize, pitch: usize, dev: &mut CudaSlice<T>) -> Result<()> {
    let rows = if width == 0 { 0 } else { host.len() / width };
    if width > pitch || rows * width != host.len() || (rows > 0 && (rows - 1) * pitch + width > dev.len()) {
        return Err(GpuError::BadArgument {
            kernel: "upload_rows",
            what: format!("{} elements in rows of {width} do not fit {} elements at a pitch of {pitch}", host.len(), dev.len()),
        });
    }
    if rows == 0 {
        return Ok(());
    }
    if width == pitch {
        return gpu.stream.memcpy_htod(host, dev).map_err(GpuError::driver("copying rows to the device"));
    }
    let size = std::mem::size_of::<T>();
    gpu.ctx.bind_to_thread().map_err(GpuError::driver("binding the context"))?;
    let (dst, _record) = dev.device_ptr_mut(&gpu.stream);
    // SAFETY: a plain C struct of integers and pointers; all-zero is a valid value.
    let mut copy: sys::CUDA_MEMCPY2D = unsafe { std::mem::zeroed() };
    copy.srcMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_HOST;
    copy.srcHost = host.as_ptr().cast();
    copy.srcPitch = width * size;
    copy.dstMemoryType = sys::CUmemorytype::CU_MEMORYTYPE_DEVICE;
    copy.dstDevice = dst;
    copy.dstPitch = pitch * size;
    copy.WidthInBytes = width * size;
    copy.Height = rows;
    // SAFETY: the source spans rows x width elements of `host` (checked above) and the
    // destination rows x pitch elements of `dev` (last row: width); from pageable memory the call
    // returns once the source is staged, so `host` may be dropped after it.
    unsafe { sys::cuMemcpy2DAsync_v2(&copy, gpu.stream.cu_stream()) }.result().map_err(GpuError::driver("copying rows to the device"))
}
