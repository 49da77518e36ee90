//! Argument checks shared by the wrappers.

use cudarc::driver::{CudaStream, DevicePtr};

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
