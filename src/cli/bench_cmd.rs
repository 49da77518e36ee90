//! `nemo bench`: end-to-end GPU numbers (see `nemo_engine::bench`) for a checkpoint or a preset
//! with dummy weights; a table on stdout, or one JSON object with `--json`.

use anyhow::{bail, Context};

use nemo_engine::bench::{self, BenchOptions};
use nemo_engine::engine::CudaBackend;
use nemo_engine::gpu;

use super::args::BenchArgs;
use super::device::cuda_options;
use super::generate_cmd::check_source;
use super::loaded::Model;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let info = gpu::probe().context("nemo bench measures the GPU")?;
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let mut backend = match args.source.preset {
        Some(preset) => {
            let config = preset.config();
            CudaBackend::dummy(&config, 0, cuda_options(&config, args.source.kv_tokens))
        }
        None => {
            check_source(&args.source)?;
            let weights = Model::open(args.source.model.as_deref())?.load_weights()?;
            CudaBackend::from_weights(&weights, cuda_options(&weights.config, args.source.kv_tokens))
        }
    }
    .with_context(|| format!("opening the CUDA backend on {}", info.name))?;
    let opts = BenchOptions { prefill_lengths: args.prefill.clone(), decode_contexts: args.contexts.clone(), decode_steps: args.steps };
    let report = bench::run(&mut backend, &opts).context("benchmark")?;
    if args.json {
        println!("{}", serde_json::to_string(&report).context("serialising the report")?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
