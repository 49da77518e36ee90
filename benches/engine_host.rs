//! The host's share of a serving step: the scheduler, the engine, the batch check and the CUDA
//! backend's step layout (`step_layout` + the metadata check its upload does), timed with a
//! backend that runs no model. On a GPU this work runs while the GPU waits (a step's host work
//! and its kernels are serial today), so it is the most overlapping the two could win back.
//!
//! `cargo bench --bench engine_host [-- BATCH...]` (default 1 64 256), Nemo's shapes, 1000 in /
//! 1000 out (100 out at batch 1), KV cache of 320k tokens (an H100's `--kv-tokens max`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use nemo_engine::bench::serving::{throughput, ServingOptions};
use nemo_engine::engine::{check_batch, CacheShape, EngineError, SampleSpec, StepEntry};
use nemo_engine::gpu::model::{step_layout, SeqChunk, BLOCK_SIZE};
use nemo_engine::model::ModelConfig;
use nemo_engine::scheduler::no_model::NoModelBackend;
use nemo_engine::scheduler::Admission;

#[derive(Default)]
struct Stats {
    steps: usize,
    busy_s: f64,
}

/// Everything `CudaBatchBackend::step_sampled` does on the host before its driver calls.
fn cuda_host_work(config: &ModelConfig, shape: CacheShape, batch: &[StepEntry<'_>], specs: &[SampleSpec]) -> Result<(), EngineError> {
    check_batch(config, shape, batch)?;
    let ids: Vec<Vec<i32>> = batch.iter().map(|e| e.tokens.iter().map(|&t| t as i32).collect()).collect();
    let chunks: Vec<SeqChunk> = batch
        .iter()
        .zip(&ids)
        .map(|(e, ids)| SeqChunk { ids, ctx_len: e.ctx_len, block_table: e.block_table, want_logits: e.want_logits })
        .collect();
    let layout = step_layout(&chunks, BLOCK_SIZE, config.max_context).map_err(EngineError::BadStepOutput)?;
    layout.meta.validate(shape.num_blocks).map_err(EngineError::BadStepOutput)?;
    assert_eq!(layout.logit_rows.len(), specs.len());
    Ok(())
}

fn main() {
    let batches: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let batches = if batches.is_empty() { vec![1, 64, 256] } else { batches };
    let config = ModelConfig::nemo_12b();
    println!("host work per serving step, Nemo 12B shapes, KV cache 320k tokens, no model run");
    println!("batch  in/out      steps   host us/step   of which backend   us/token");
    for batch in batches {
        let output_len = if batch == 1 { 100 } else { 1000 };
        let shape = CacheShape { block_size: BLOCK_SIZE, num_blocks: 320_000 / BLOCK_SIZE, max_step_tokens: 4096 };
        let stats = Arc::new(Mutex::new(Stats::default()));
        let (hook_config, hook_stats) = (config.clone(), stats.clone());
        let hook = move |batch: &[StepEntry<'_>], specs: &[SampleSpec]| {
            let t0 = Instant::now();
            cuda_host_work(&hook_config, shape, batch, specs)?;
            let mut stats = hook_stats.lock().unwrap();
            stats.steps += 1;
            stats.busy_s += t0.elapsed().as_secs_f64();
            Ok(())
        };
        let mut backend = NoModelBackend::new(config.clone(), shape, 1000);
        backend.on_step = Some(Box::new(hook));
        let opts = ServingOptions {
            requests: batch,
            input_len: 1000,
            output_len,
            max_running: batch,
            max_step_tokens: shape.max_step_tokens,
            shared_prefix: 0,
            prefix_caching: true,
            admission: Admission::Reserve,
            request_rate: None,
        };
        let report = throughput(backend, &opts).expect("the host-only run");
        let stats = stats.lock().unwrap();
        let steps = stats.steps as f64;
        println!(
            "{batch:>5}  {:>5}/{:<5} {:>6} {:>14.1} {:>18.1} {:>10.2}",
            opts.input_len,
            output_len,
            stats.steps,
            report.seconds * 1e6 / steps,
            stats.busy_s * 1e6 / steps,
            report.seconds * 1e6 / report.output_tokens as f64
        );
    }
}
