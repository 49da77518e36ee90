//! Decode steps as CUDA graphs: one graph per batch size, captured the first time a decode step
//! of that size runs and replayed after. A captured graph holds every kernel's parameters, so
//! everything that changes between steps lives in device buffers refilled before the replay:
//! token ids, positions, KV slots, the rows whose logits are wanted (scratch) and the attention
//! metadata (`meta`, block-table rows as wide as the whole cache, of which each step copies only
//! the entries its sequences hold). The split count of decode attention is fixed per batch size
//! (the kernel skips empty splits), so one graph serves every context length.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
use std::sync::Arc;

use cudarc::driver::{CudaGraph, CudaStream};

use crate::gpu::error::{GpuError, Result};
use crate::gpu::kernels::attention::DeviceAttentionMeta;

/// The batch sizes graphs are captured for: a decode step of another size is padded up to the
/// next one (vLLM's approach), so a server whose batch wanders over 1..256 captures at most 15
/// graphs, not 256. Past the ladder, multiples of 64.
const LADDER: &[usize] = &[1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256];

/// The rungs of the ladder a model serving up to `max_seqs` sequences at once replays: the graphs
/// captured at start-up (`CudaModel::capture_decode_graphs`).
pub fn ladder_up_to(max_seqs: usize) -> Vec<usize> {
    LADDER.iter().copied().chain((5..).map(|k| 64 * k)).take_while(|&b| b <= max_seqs).collect()
}

/// The batch size a decode step of `batch` sequences replays: the next rung of the ladder, or
/// `batch` itself where padding would pass `max_seqs`.
pub fn graph_batch(batch: usize, max_seqs: usize) -> usize {
    let rung = LADDER.iter().copied().find(|&s| s >= batch).unwrap_or(batch.div_ceil(64) * 64);
    if rung <= max_seqs { rung } else { batch }
}

pub(super) struct DecodeGraphs {
    /// Refilled before each replay; its addresses are baked into the graphs.
    pub meta: DeviceAttentionMeta,
    by_batch: HashMap<usize, CudaGraph>,
    /// Batch sizes whose capture failed: their steps run without a graph (said once).
    uncapturable: HashSet<usize>,
    captures: usize,
    capture_ms: f64,
}

/// How many graphs were captured and the time it took, for start-up and benchmark reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct GraphReport {
    pub captured: usize,
    pub capture_ms: f64,
}

impl DecodeGraphs {
    pub fn new(meta: DeviceAttentionMeta) -> DecodeGraphs {
        DecodeGraphs { meta, by_batch: HashMap::new(), uncapturable: HashSet::new(), captures: 0, capture_ms: 0.0 }
    }

    pub fn report(&self) -> GraphReport {
        GraphReport { captured: self.captures, capture_ms: self.capture_ms }
    }

    /// Replays the graph for `batch`, capturing it first with `record` (which launches the
    /// step's kernels, reading `self.meta`) when there is none yet. Ok(false): this batch size
    /// has no graph (its capture failed, now or before; the stream is out of capture mode) and
    /// nothing ran: the caller runs the step without one.
    pub fn replay(
        &mut self,
        stream: &Arc<CudaStream>,
        batch: usize,
        record: impl FnOnce(&DeviceAttentionMeta) -> Result<()>,
    ) -> Result<bool> {
        if self.uncapturable.contains(&batch) {
            return Ok(false);
        }
        if !self.by_batch.contains_key(&batch) {
            let t0 = Instant::now();
            match capture(stream, || record(&self.meta)) {
                Ok(graph) => {
                    self.by_batch.insert(batch, graph);
                    self.captures += 1;
                    self.capture_ms += t0.elapsed().as_secs_f64() * 1e3;
                }
                Err(e) => {
                    eprintln!("nemo: warning: decode steps of batch {batch} cannot be captured as a CUDA graph ({e}); they run without one");
                    self.uncapturable.insert(batch);
                    return Ok(false);
                }
            }
        }
        self.by_batch[&batch].launch().map_err(GpuError::driver("launching the decode graph"))?;
        Ok(true)
    }
}

/// Records `record`'s launches on `stream` into a graph. Whatever fails, the stream leaves
/// capture mode (`end_capture` can return early on an error stored in the context, so it is
/// asked again while the stream still captures).
fn capture(stream: &Arc<CudaStream>, record: impl FnOnce() -> Result<()>) -> Result<CudaGraph> {
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(GpuError::driver("beginning a CUDA graph capture"))?;
    let recorded = record();
    let mut ended = stream.end_capture(CUgraphInstantiate_flags(0));
    for _ in 0..2 {
        match stream.capture_status() {
            Ok(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE) => break,
            _ => ended = stream.end_capture(CUgraphInstantiate_flags(0)),
        }
    }
    recorded?;
    ended
        .map_err(GpuError::driver("instantiating the decode graph"))?
        .ok_or_else(|| GpuError::BadArgument { kernel: "cuda graph", what: "the capture recorded nothing".into() })
}

#[cfg(test)]
mod tests {
    use super::{graph_batch, ladder_up_to, LADDER};

    #[test]
    fn batches_pad_up_the_ladder_within_the_limit() {
        let padded: Vec<usize> = [1, 2, 3, 5, 17, 33, 100, 200, 256, 257, 300].iter().map(|&b| graph_batch(b, 512)).collect();
        assert_eq!(padded, [1, 2, 4, 8, 24, 48, 128, 224, 256, 320, 320]);
        assert_eq!(graph_batch(3, 3), 3, "never past max_seqs");
        assert_eq!(graph_batch(97, 100), 97);
        let rungs: std::collections::BTreeSet<usize> = (1..=256).map(|b| graph_batch(b, 256)).collect();
        assert_eq!(rungs.len(), 15, "at most 15 graphs for batches 1..256");
        // Start-up captures exactly the rungs steps pad to (batches past the last rung that
        // fits run at their own size and are captured when they come).
        for max_seqs in [1, 3, 8, 100, 256, 300, 512] {
            let padded: std::collections::BTreeSet<usize> =
                (1..=max_seqs).map(|b| graph_batch(b, max_seqs)).filter(|&b| LADDER.contains(&b) || b % 64 == 0).collect();
            assert_eq!(ladder_up_to(max_seqs), padded.into_iter().collect::<Vec<_>>(), "max_seqs {max_seqs}");
        }
        assert_eq!(ladder_up_to(300), [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]);
        assert_eq!(ladder_up_to(512).last(), Some(&512));
    }
}
