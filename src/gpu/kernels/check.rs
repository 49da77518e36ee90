//! Argument checks shared by the wrappers.

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaStream, DevicePtr};

use crate::gpu::error::{GpuError, Result};

pub(crate) fn ensure(ok: bool, kernel: &'static str, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(GpuError::BadArgument { kernel, what: what() })
    }
}

/// The raw device address of a buffer or view (event tracking is off: see `Gpu::new`).
pub(crate) fn address<T>(stream: &CudaStream, buf: &impl DevicePtr<T>) -> u64 {
    let (ptr, _sync) = buf.device_ptr(stream);
    ptr
}

/// `buf` holds exactly `len` elements and starts on a 16-byte boundary (the kernels use
/// 16-byte vector accesses).
pub(crate) fn vector_buffer<T>(
    stream: &CudaStream,
    kernel: &'static str,
    name: &str,
    buf: &impl DevicePtr<T>,
    len: usize,
) -> Result<()> {
    ensure(buf.len() == len, kernel, || format!("{name} holds {} elements, expected {len}", buf.len()))?;
    let addr = address(stream, buf);
    ensure(addr % 16 == 0, kernel, || format!("{name} at {addr:#x} is not 16-byte aligned"))
}

/// Converts a size to the kernels' `int`, refusing what would overflow it.
pub(crate) fn as_i32(kernel: &'static str, name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| GpuError::BadArgument { kernel, what: format!("{name} = {v} exceeds i32") })
}

/// Lets `func` use `bytes` of dynamic shared memory (above the 48 KiB default); once, at start-up.
pub(crate) fn allow_dynamic_smem(func: &CudaFunction, kernel: &'static str, bytes: usize) -> Result<()> {
    func.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
        .map_err(GpuError::driver(format!("raising {kernel}'s shared memory limit")))
}
