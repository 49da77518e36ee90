//! Timing with CUDA events (device time, not host time) and the device-to-device copy ceiling
//! that bandwidth figures are judged against.

use cudarc::driver::sys::CUevent_flags;

use super::error::{GpuError, Result};
use super::Gpu;

/// Per-iteration device times of a timed region.
#[derive(Clone, Debug)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub iters: usize,
}

/// Runs `f(i)` `warmup` times, then `iters` times with an event pair around each run; `i` counts
/// from 0 so the caller can rotate input sets (keeping L2 from flattering memory-bound kernels).
pub fn time_ms(gpu: &Gpu, warmup: usize, iters: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Timing> {
    for i in 0..warmup {
        f(i)?;
    }
    let event = || gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(GpuError::driver("creating an event"));
    let mut times = Vec::with_capacity(iters);
    let events: Vec<_> = (0..=iters).map(|_| event()).collect::<Result<_>>()?;
    events[0].record(&gpu.stream).map_err(GpuError::driver("recording an event"))?;
    for i in 0..iters {
        f(warmup + i)?;
        events[i + 1].record(&gpu.stream).map_err(GpuError::driver("recording an event"))?;
    }
    gpu.synchronize("timed region")?;
    for i in 0..iters {
        times.push(events[i].elapsed_ms(&events[i + 1]).map_err(GpuError::driver("reading an event"))? as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(Timing { median_ms: times[iters / 2], min_ms: times[0], iters })
}

/// Device-to-device copy bandwidth in GB/s (bytes read + bytes written), over `bytes` per copy.
pub fn copy_bandwidth_gbs(gpu: &Gpu, bytes: usize) -> Result<f64> {
    let n = bytes / 2;
    let src = gpu.stream.alloc_zeros::<u16>(n).map_err(GpuError::driver("allocating the copy source"))?;
    let mut dst = gpu.stream.alloc_zeros::<u16>(n).map_err(GpuError::driver("allocating the copy target"))?;
    let t = time_ms(gpu, 3, 20, |_| {
        gpu.stream.memcpy_dtod(&src, &mut dst).map_err(GpuError::driver("device-to-device copy"))
    })?;
    Ok(2.0 * (n * 2) as f64 / (t.median_ms * 1e-3) / 1e9)
}
