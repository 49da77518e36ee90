//! Where a step's device time goes: an event recorded after each kernel (or fused group) of one
//! eager step, and the time between consecutive events summed per name. The events cost a
//! record each, so the breakdown's total runs a little above an unprofiled step; it says which
//! kernels to work on, and the plain step time says how fast the engine is.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;
use serde::Serialize;

use crate::gpu::error::{GpuError, Result};
use crate::gpu::Gpu;

/// Events created before the step, so that marking it costs one record, not an allocation.
pub(super) struct StepProfiler {
    start: CudaEvent,
    pool: Vec<CudaEvent>,
    marks: Vec<&'static str>,
}

impl StepProfiler {
    /// Records the start on the stream; `capacity` events follow (one per `mark`).
    pub fn start(gpu: &Gpu, capacity: usize) -> Result<StepProfiler> {
        let event = || gpu.ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(GpuError::driver("creating an event"));
        let pool = (0..capacity).map(|_| event()).collect::<Result<Vec<_>>>()?;
        let start = event()?;
        start.record(&gpu.stream).map_err(GpuError::driver("recording an event"))?;
        Ok(StepProfiler { start, pool, marks: Vec::with_capacity(capacity) })
    }

    /// The kernels launched since the last mark were `name`.
    pub fn mark(&mut self, gpu: &Gpu, name: &'static str) -> Result<()> {
        let event = self.pool.get(self.marks.len()).ok_or_else(|| GpuError::BadArgument {
            kernel: "step profiler",
            what: format!("more than {} marks in one step", self.pool.len()),
        })?;
        event.record(&gpu.stream).map_err(GpuError::driver("recording an event"))?;
        self.marks.push(name);
        Ok(())
    }

    /// Waits for the step and returns each mark's device time in ms, in launch order.
    pub fn finish(self, gpu: &Gpu) -> Result<Vec<(&'static str, f64)>> {
        gpu.synchronize("a profiled step")?;
        let mut prev = &self.start;
        let mut out = Vec::with_capacity(self.marks.len());
        for (name, event) in self.marks.iter().zip(&self.pool) {
            out.push((*name, prev.elapsed_ms(event).map_err(GpuError::driver("reading an event"))? as f64));
            prev = event;
        }
        Ok(out)
    }
}

/// Marks `name` when a step is being profiled; nothing otherwise.
pub(super) fn mark(profiler: &mut Option<StepProfiler>, gpu: &Gpu, name: &'static str) -> Result<()> {
    match profiler {
        Some(p) => p.mark(gpu, name),
        None => Ok(()),
    }
}

/// One step's device time per kernel name.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Breakdown {
    pub total_ms: f64,
    /// In order of first launch.
    pub rows: Vec<BreakdownRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct BreakdownRow {
    pub name: &'static str,
    pub launches: usize,
    pub ms: f64,
}

impl Breakdown {
    /// Sums `marks` (name, ms) per name.
    pub fn of(marks: &[(&'static str, f64)]) -> Breakdown {
        let mut rows: Vec<BreakdownRow> = Vec::new();
        for &(name, ms) in marks {
            match rows.iter_mut().find(|r| r.name == name) {
                Some(r) => {
                    r.launches += 1;
                    r.ms += ms;
                }
                None => rows.push(BreakdownRow { name, launches: 1, ms }),
            }
        }
        Breakdown { total_ms: marks.iter().map(|m| m.1).sum(), rows }
    }

    /// A readable table, one line per name: launches, total ms, share of the step, us a launch.
    pub fn table(&self) -> String {
        let mut s = format!("  {:<22} {:>8} {:>9} {:>7} {:>10}\n", "kernel", "launches", "ms", "share", "us/launch");
        for r in &self.rows {
            s += &format!(
                "  {:<22} {:>8} {:>9.3} {:>6.1}% {:>10.1}\n",
                r.name,
                r.launches,
                r.ms,
                100.0 * r.ms / self.total_ms.max(f64::MIN_POSITIVE),
                1e3 * r.ms / r.launches as f64
            );
        }
        s + &format!("  {:<22} {:>8} {:>9.3}\n", "step", self.rows.iter().map(|r| r.launches).sum::<usize>(), self.total_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_sum_per_name_in_launch_order() {
        let marks = [("embedding", 0.01), ("qkv", 0.5), ("attention", 0.2), ("qkv", 0.7), ("attention", 0.1), ("lm_head", 0.4)];
        let b = Breakdown::of(&marks);
        let names: Vec<_> = b.rows.iter().map(|r| (r.name, r.launches)).collect();
        assert_eq!(names, [("embedding", 1), ("qkv", 2), ("attention", 2), ("lm_head", 1)]);
        assert!((b.rows[1].ms - 1.2).abs() < 1e-12 && (b.total_ms - 1.91).abs() < 1e-12);
        let table = b.table();
        assert!(table.contains("qkv") && table.contains("62.8%") && table.contains("600.0"), "{table}");
        assert!(table.lines().last().unwrap().contains("6"), "the step line counts every launch");
    }
}
