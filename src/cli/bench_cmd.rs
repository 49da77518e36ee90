//! `nemo bench`: end-to-end numbers (see `nemo_engine::bench`) for a checkpoint or a preset with
//! dummy weights; a table on stdout, or one JSON object with `--json`.
//! - latency: batch 1 on the GPU (load, prefill tokens/s, decode ms/token at long contexts);
//! - throughput / sweep: the scheduler's engine over the batch backend (GPU, or the CPU reference
//!   for small models).

use anyhow::{bail, Context};
use serde_json::json;

use nemo_engine::bench::serving::{self, ServingOptions, SweepRow, ThroughputReport};
use nemo_engine::bench::{self, BenchOptions};
use nemo_engine::engine::{BatchBackend, CpuBatchBackend, CpuBatchOptions, CudaBackend, CudaBatchBackend, KvCacheDtype};
use nemo_engine::gpu::model::{CudaModel, GpuWeights};
use nemo_engine::gpu::{self, Gpu};
use nemo_engine::model::{ModelConfig, ModelWeights};

use super::args::{BenchArgs, BenchLab, BenchMode, DeviceChoice};
use super::device::{capture_decode_graphs, cpu_kv_tokens, cuda_options, source_cuda_options};
use super::generate_cmd::check_source;
use super::loaded::Model;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchLab::Kernels(lab)) = &args.lab {
        return super::lab_cmd::run(lab);
    }
    if args.steps == 0 || args.max_batch == 0 || args.requests == 0 {
        bail!("--steps, --max-batch and --requests must be at least 1");
    }
    match args.mode {
        BenchMode::Latency => latency(args),
        BenchMode::Throughput | BenchMode::Sweep => serving_modes(args),
    }
}

fn latency(args: &BenchArgs) -> anyhow::Result<()> {
    let info = gpu::probe().context("nemo bench --mode latency measures the GPU")?;
    let mut backend = match args.source.preset {
        Some(preset) => {
            let config = preset.config();
            CudaBackend::dummy(&config, 0, source_cuda_options(&config, &args.source))
        }
        None => {
            check_source(&args.source)?;
            let weights = Model::open(args.source.model.as_deref())?.load_weights()?;
            CudaBackend::from_weights(&weights, source_cuda_options(&weights.config, &args.source))
        }
    }
    .with_context(|| format!("opening the CUDA backend on {}", info.name))?;
    let opts = BenchOptions {
        prefill_lengths: args.prefill.clone(),
        decode_contexts: args.contexts.clone(),
        decode_steps: args.steps,
        breakdown_batches: args.breakdown_batches.iter().copied().filter(|&b| b > 0).collect(),
    };
    let report = bench::run(&mut backend, &opts).context("benchmark")?;
    if let Some(g) = backend.model.graph_report() {
        eprintln!("nemo: CUDA graphs (NEMO_CUDA_GRAPHS=1): {} decode graph(s) captured in {:.1} ms", g.captured, g.capture_ms);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).context("serialising the report")?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// What the serving modes measure, on whichever backend.
fn measure<B: BatchBackend>(
    args: &BenchArgs,
    make: &mut dyn FnMut() -> anyhow::Result<B>,
    weights_bytes: usize,
    config: &ModelConfig,
) -> anyhow::Result<(Vec<ThroughputReport>, Vec<SweepRow>)> {
    let (mut throughput, mut sweep) = (Vec::new(), Vec::new());
    if args.mode == BenchMode::Throughput {
        for &(input_len, output_len) in &args.io {
            let backend = make()?;
            let opts = ServingOptions {
                requests: args.requests,
                input_len,
                output_len,
                max_running: args.max_batch,
                max_step_tokens: backend.max_step_tokens(),
                shared_prefix: args.shared_prefix.min(input_len),
                prefix_caching: !args.no_prefix_caching,
                admission: args.admission.policy(),
                request_rate: args.request_rate,
            };
            throughput.push(serving::throughput(backend, &opts).map_err(anyhow::Error::msg).with_context(|| format!("throughput at {input_len}/{output_len}"))?);
        }
    } else {
        let batches: Vec<usize> = args.batches.iter().copied().filter(|&b| b <= args.max_batch).collect();
        let kv_bytes = args.source.kv_cache_dtype.gpu_bytes_per_token(config);
        sweep = serving::decode_sweep(make()?, &batches, 128, args.steps, weights_bytes, kv_bytes)
            .map_err(anyhow::Error::msg)
            .context("decode sweep")?;
    }
    Ok((throughput, sweep))
}

/// What the CPU reference's cache keeps of each value (it stores f32 either way).
pub fn cpu_kv_label(dtype: KvCacheDtype) -> &'static str {
    match dtype {
        KvCacheDtype::Auto => "f32",
        KvCacheDtype::Fp8E4m3 => "rounded through fp8 e4m3",
    }
}

fn serving_modes(args: &BenchArgs) -> anyhow::Result<()> {
    let (label, throughput, sweep) = match args.device {
        DeviceChoice::Cpu => {
            check_source(&args.source)?;
            if args.source.preset.is_some() {
                bail!("--dummy-weights runs on the GPU only");
            }
            let weights: ModelWeights = Model::open(args.source.model.as_deref())?.load_weights()?;
            let c = weights.config.clone();
            let tokens = cpu_kv_tokens(args.source.kv_tokens)?.unwrap_or(c.max_context.min(65_536));
            let opts = CpuBatchOptions { block_size: 16, num_blocks: tokens.div_ceil(16), max_step_tokens: 2048 };
            let bytes = weights_bytes(&weights);
            let dtype = args.source.kv_cache_dtype;
            let (t, s) = measure(args, &mut || Ok(CpuBatchBackend::new(&weights, opts).with_kv_cache_dtype(dtype)), bytes, &c)?;
            (format!("cpu | KV cache values {}", cpu_kv_label(dtype)), t, s)
        }
        _ => {
            let info = gpu::probe().context("--device cuda")?;
            let host = match args.source.preset {
                Some(_) => None,
                None => {
                    check_source(&args.source)?;
                    Some(Model::open(args.source.model.as_deref())?.load_weights()?)
                }
            };
            let config = match (args.source.preset, &host) {
                (Some(p), _) => p.config(),
                (None, Some(w)) => w.config.clone(),
                (None, None) => unreachable!(),
            };
            // Many sequences share the cache: `max` is not capped at one sequence's context.
            let kv = cuda_options(&config, args.source.kv_tokens).kv;
            let mut settings = String::new();
            let mut make = || -> anyhow::Result<CudaBatchBackend> {
                let gpu = Gpu::new()?;
                let weights = match &host {
                    Some(w) => GpuWeights::upload(&gpu, w)?,
                    None => GpuWeights::dummy(&gpu, &config, 0)?,
                };
                let mut model = CudaModel::with_kv_dtype(gpu, weights, kv, args.source.kv_cache_dtype, 4096, args.max_batch)?;
                capture_decode_graphs(&mut model)?;
                settings = model.settings();
                Ok(CudaBatchBackend { model })
            };
            let (t, s) = measure(args, &mut make, model_bytes(&config), &config)?;
            (format!("{} | kernels: {settings}", info.name), t, s)
        }
    };
    if let (Some(path), false) = (&args.plot, sweep.is_empty()) {
        let title = format!("nemo bench --mode sweep on {label} (decode after 128-token prompts, {} steps)", args.steps);
        std::fs::write(path, serving::sweep_svg(&sweep, &title)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("nemo: plot written to {}", path.display());
    }
    if args.json {
        println!("{}", json!({ "device": label, "throughput": throughput, "sweep": sweep }));
        return Ok(());
    }
    println!("device {label}");
    if !throughput.is_empty() {
        println!(
            "requests  rate/s  in/out       seconds  out tok/s  total tok/s  TTFT p50/p90/p99 ms     ITL p50/p90/p99 ms   \
             latency p50/p99 s  preempted  recomputed  cached prompt tok"
        );
        for r in &throughput {
            let rate = r.request_rate.map_or("all".to_string(), |rate| format!("{rate}"));
            println!(
                "{:>8}  {:>6}  {:>5}/{:<5} {:>8.2} {:>10.0} {:>12.0}  {:>6.0}/{:>6.0}/{:>6.0}  {:>6.1}/{:>6.1}/{:>6.1}  {:>8.2}/{:<8.2} {:>8} {:>10.1}% {:>18}",
                r.requests, rate, r.input_len, r.output_len, r.seconds, r.output_tokens_per_s, r.total_tokens_per_s,
                r.ttft_ms.p50, r.ttft_ms.p90, r.ttft_ms.p99, r.itl_ms.p50, r.itl_ms.p90, r.itl_ms.p99,
                r.latency_ms.p50 / 1e3, r.latency_ms.p99 / 1e3, r.preemptions, 100.0 * r.recomputed_fraction(), r.cached_prompt_tokens
            );
        }
    }
    if !sweep.is_empty() {
        println!("batch  ms/step   tokens/s   GB/s");
        for r in &sweep {
            println!("{:>5} {:>8.2} {:>10.0} {:>6.0}", r.batch, r.ms_per_step, r.tokens_per_s, r.achieved_gbs);
        }
    }
    Ok(())
}

/// bf16 bytes of every tensor (what a decode step reads).
fn weights_bytes(w: &ModelWeights) -> usize {
    let layers: usize = w
        .layers
        .iter()
        .map(|l| [&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down].iter().map(|t| t.numel()).sum::<usize>())
        .sum();
    2 * (layers + w.embedding.numel() + w.final_norm.numel() + w.lm_head.as_ref().map_or(0, |t| t.numel()))
}

/// The same count from the config alone.
fn model_bytes(c: &ModelConfig) -> usize {
    let layer = 2 * c.dim + (c.q_dim() + 2 * c.kv_dim()) * c.dim + c.dim * c.q_dim() + 3 * c.ffn_dim * c.dim;
    let head = if c.tied_embeddings { 0 } else { c.vocab_size * c.dim };
    2 * (c.n_layers * layer + c.vocab_size * c.dim + c.dim + head)
}
