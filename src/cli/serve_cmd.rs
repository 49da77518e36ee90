//! `nemo serve`: the OpenAI-compatible server (`nemo_engine::server`, docs/server.md) over the
//! model `--model` names. The model's tokenizer, chat template, end-of-turn ids and sampling
//! recommendation come from the same loading as `nemo chat`; the engine (CPU reference or CUDA
//! batch backend) is built on the server's engine thread.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use nemo_engine::engine::{BatchBackend, CpuBatchBackend, CpuBatchOptions, CudaBatchBackend, KvCacheDtype};
use nemo_engine::gpu::model::{CudaModel, GpuWeights, KvSize};
use nemo_engine::gpu::Gpu;
use nemo_engine::model::{ModelConfig, ModelWeights};
use nemo_engine::scheduler::{Engine, EngineOptions};
use nemo_engine::server::{self, LoopContext, SamplingDefaults, ServedModel, ServerConfig};
use nemo_engine::structured::Grammars;
use nemo_engine::tokenizer::{ChatRequest, Tokenizer};

use super::args::ServeArgs;
use super::chat_format::ChatFormat;
use super::defaults::{Recommended, FALLBACK_TEMPERATURE};
use super::device::{self, capture_decode_graphs, cuda_options, Device};
use super::loaded::Model;
use super::text::Text;

/// The CPU reference keeps K/V in f32: by default the cache gets at most this much memory.
const CPU_KV_BUDGET_BYTES: usize = 4 << 30;
const BLOCK_SIZE: usize = 16;
/// Longest prefill chunk the CUDA backend is built for.
const CUDA_MAX_CHUNK: usize = 4096;

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    if args.max_batch == 0 || args.max_step_tokens == 0 {
        bail!("--max-batch and --max-step-tokens must be at least 1");
    }
    if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
        bail!("--shutdown-timeout must be a number of seconds >= 0");
    }
    if args.api_key.as_deref() == Some("") {
        bail!("--api-key must not be empty");
    }
    let mut model = Model::open(args.model.as_deref())?;
    let device = device::select(args.device)?;
    let weights = model.load_weights()?;
    model.stop.announce();
    let served = served_model(&mut model, args, weights.config.vocab_size)?;
    eprintln!(
        "nemo: chat template: {}; sampling defaults: {}",
        served.chat.as_ref().map_or("none (only /v1/completions)", ChatFormat::describe),
        describe_defaults(&served.defaults)
    );
    let config = ServerConfig {
        host: args.host.clone(),
        port: args.port,
        api_key: args.api_key.clone(),
        max_body_bytes: args.max_body_bytes,
        max_connections: args.max_connections as usize,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        handle_signals: true,
        ..ServerConfig::default()
    };
    let engine_opts = EngineOptions {
        max_running: args.max_batch,
        max_step_tokens: args.max_step_tokens,
        prefix_caching: !args.no_prefix_caching,
        admission: args.admission.policy(),
    };
    let kv_tokens = args.kv_tokens;
    let kv_dtype = args.kv_cache_dtype;
    let cpu_kv = match device {
        Device::Cpu => device::cpu_kv_tokens(kv_tokens)?,
        Device::Cuda(_) => None,
    };
    let max_waiting = args.max_waiting as usize;
    let name = served.name.clone();
    let build = move |ctx: LoopContext| match device {
        Device::Cpu => {
            let opts = cpu_options(&weights.config, cpu_kv, engine_opts.max_step_tokens);
            let device = format!("CPU (f32 reference; KV cache values {})", super::bench_cmd::cpu_kv_label(kv_dtype));
            announce_cache(&device, opts.num_blocks * BLOCK_SIZE, cpu_kv_bytes(&weights.config));
            run_engine(ctx, CpuBatchBackend::new(&weights, opts).with_kv_cache_dtype(kv_dtype), engine_opts, max_waiting)
        }
        Device::Cuda(info) => match cuda_backend(&weights, kv_tokens, kv_dtype, engine_opts.max_running) {
            Ok(backend) => {
                let bytes = kv_dtype.gpu_bytes_per_token(&weights.config);
                let device = format!("{} ({} KV cache)", info.name, kv_dtype.gpu_label());
                announce_cache(&device, backend.num_blocks() * backend.block_size(), bytes);
                drop(weights); // on the GPU now
                run_engine(ctx, backend, engine_opts, max_waiting)
            }
            Err(e) => ctx.fail(format!("{e:#}")),
        },
    };
    let running = server::start(config, Arc::new(served), build)?;
    eprintln!(
        "nemo: serving `{name}` on http://{} (OpenAI API under /v1; {} sequences at once, {} tokens per step); \
         SIGTERM or Ctrl-C to stop",
        running.addr, running.engine.max_running, running.engine.max_step_tokens
    );
    running.wait()?;
    eprintln!("nemo: server stopped");
    Ok(())
}

fn run_engine<B: BatchBackend>(ctx: LoopContext, backend: B, opts: EngineOptions, max_waiting: usize) {
    match Engine::new(backend, opts) {
        Ok(engine) => ctx.run(engine.with_max_waiting(max_waiting)),
        Err(e) => ctx.fail(e.to_string()),
    }
}

fn cpu_kv_bytes(c: &ModelConfig) -> usize {
    2 * c.n_layers * c.kv_dim() * std::mem::size_of::<f32>()
}

fn cpu_options(c: &ModelConfig, kv_tokens: Option<usize>, max_step_tokens: usize) -> CpuBatchOptions {
    let tokens = kv_tokens.unwrap_or_else(|| c.max_context.min(CPU_KV_BUDGET_BYTES / cpu_kv_bytes(c).max(1)));
    CpuBatchOptions { block_size: BLOCK_SIZE, num_blocks: tokens.div_ceil(BLOCK_SIZE).max(1), max_step_tokens }
}

fn cuda_backend(weights: &ModelWeights, kv_tokens: Option<KvSize>, kv_dtype: KvCacheDtype, max_seqs: usize) -> anyhow::Result<CudaBatchBackend> {
    let kv = cuda_options(&weights.config, kv_tokens).kv;
    let kv_text = match kv {
        KvSize::Tokens(n) => format!("{n} tokens ({:.1} GB)", (n * kv_dtype.gpu_bytes_per_token(&weights.config)) as f64 / 1e9),
        fill => fill.to_string(),
    };
    let gpu = Gpu::new().context("opening the GPU")?;
    let uploaded = GpuWeights::upload(&gpu, weights).context("uploading the weights to the GPU")?;
    let mut model = CudaModel::with_kv_dtype(gpu, uploaded, kv, kv_dtype, CUDA_MAX_CHUNK, max_seqs).with_context(|| {
        format!(
            "allocating the activations for {max_seqs} sequences and the KV cache of {kv_text} on the GPU; \
             lower --kv-tokens (or --max-batch) to need less memory"
        )
    })?;
    capture_decode_graphs(&mut model)?;
    Ok(CudaBatchBackend { model })
}

fn announce_cache(device: &str, tokens: usize, bytes_per_token: usize) {
    eprintln!(
        "nemo: engine on {device}: KV cache {tokens} tokens ({:.2} GB); --kv-tokens to change",
        (tokens * bytes_per_token) as f64 / 1e9
    );
}

/// The model as the server sees it.
struct CliModel {
    name: String,
    text: Text,
    grammars: Option<Grammars>,
    chat: Option<ChatFormat>,
    stop: Vec<u32>,
    defaults: SamplingDefaults,
}

fn served_model(model: &mut Model, args: &ServeArgs, vocab: usize) -> anyhow::Result<CliModel> {
    let Some(text) = model.text.take() else {
        bail!(
            "{} has no tokenizer (tekken.json or tokenizer.json): the server needs one to read and write text",
            model.path.path().display()
        );
    };
    let name = match &args.served_model_name {
        Some(n) if n.is_empty() => bail!("--served-model-name must not be empty"),
        Some(n) => n.clone(),
        None => default_name(model.path.path()),
    };
    let started = std::time::Instant::now();
    // A complete grammar allows the model's own stop ids (EOS, end of turn).
    let grammars = match Grammars::new(text.shared_tokenizer(), vocab, &model.stop.ids) {
        Ok(g) => {
            eprintln!("nemo: structured outputs: token trie of {} tokens built in {:.2} s", text.tokenizer().vocab_size(), started.elapsed().as_secs_f64());
            Some(g)
        }
        Err(e) => {
            eprintln!("nemo: warning: structured outputs (response_format, guided_*) are unavailable: {e}");
            None
        }
    };
    Ok(CliModel {
        name,
        grammars,
        text,
        chat: model.chat.take(),
        stop: model.stop.ids.clone(),
        defaults: defaults(&model.recommended),
    })
}

/// The file's stem (`SmolLM2-135M-Instruct.Q4_1`) or the directory's name.
fn default_name(path: &Path) -> String {
    let name = if path.is_dir() { path.file_name() } else { path.file_stem() };
    name.map(|n| n.to_string_lossy().into_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| "model".into())
}

fn defaults(rec: &Recommended) -> SamplingDefaults {
    SamplingDefaults {
        temperature: rec.temperature.unwrap_or(FALLBACK_TEMPERATURE),
        top_p: rec.top_p.unwrap_or(1.0),
        top_k: rec.top_k.unwrap_or(0),
        min_p: rec.min_p.unwrap_or(0.0),
    }
}

fn describe_defaults(d: &SamplingDefaults) -> String {
    format!("temperature {}, top_p {}, top_k {}, min_p {} (a request's own values win)", d.temperature, d.top_p, d.top_k, d.min_p)
}

impl ServedModel for CliModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn tokenizer(&self) -> &Tokenizer {
        self.text.tokenizer()
    }

    fn encode_chat(&self, request: &ChatRequest) -> Result<Vec<u32>, String> {
        let Some(chat) = &self.chat else {
            return Err(format!("the model `{}` has no chat template; use /v1/completions", self.name));
        };
        chat.encode(&self.text, request).map_err(|e| super::cause_chain(&e))
    }

    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, String> {
        Text::encode_prompt(Some(&self.text), text).map_err(|e| super::cause_chain(&e))
    }

    fn supports_tools(&self) -> bool {
        self.chat.as_ref().is_some_and(ChatFormat::supports_tools)
    }

    fn stop_token_ids(&self) -> &[u32] {
        &self.stop
    }

    fn sampling_defaults(&self) -> SamplingDefaults {
        self.defaults
    }

    fn grammars(&self) -> Option<&Grammars> {
        self.grammars.as_ref()
    }
}
