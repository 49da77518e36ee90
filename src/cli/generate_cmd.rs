//! `nemo generate`: check the arguments, pick the device, load the model, run the loop, print.

use std::io;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};

use nemo_engine::engine::{Backend, CudaBackend};
use nemo_engine::generate::{generate, GenerateRequest, Generation};
use nemo_engine::model;
use nemo_engine::sampling::{SamplingParams, StopCriteria};

use super::args::{GenerateArgs, ModelSource, Preset};
use super::output::{write_json, Streamer};
use super::text::Text;
use super::{device, eos};

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    // Everything that needs no model is refused before the (possibly long) load.
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        seed: args.seed,
    };
    params.validate().context("invalid sampling parameters")?;
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let device = device::select(args.device)?;
    if let Some(preset) = args.source.preset {
        return run_dummy(args, preset, &device, params);
    }
    let model_dir = source_dir(&args.source)?;

    let start = Instant::now();
    let loaded = model::load(model_dir)
        .with_context(|| format!("loading the model in {}", model_dir.display()))?;
    let text = Text::load(
        loaded.checkpoint.tokenizer.as_deref(),
        loaded.weights.config.vocab_size,
    )?;
    eprintln!(
        "nemo: loaded {}: {} in {:.2} s",
        model_dir.display(),
        loaded.checkpoint.layout,
        start.elapsed().as_secs_f64()
    );
    for warning in &loaded.warnings {
        eprintln!("nemo: warning: {warning}");
    }
    let vocab_size = loaded.weights.config.vocab_size;

    let prompt = match (&args.prompt.prompt, &args.prompt.prompt_tokens) {
        (_, Some(ids)) => ids.0.clone(),
        (Some(prompt), None) => Text::encode_prompt(text.as_ref(), prompt)?,
        (None, None) => unreachable!("clap requires one prompt form"),
    };
    if let Some(&id) = args
        .stop_tokens
        .iter()
        .find(|&&id| id as usize >= vocab_size)
    {
        bail!("--stop-token {id} is outside the vocabulary (size {vocab_size})");
    }
    let eos_ids = if args.ignore_eos {
        Vec::new()
    } else {
        eos_ids(&loaded, text.as_ref())?
    };
    let stop = StopCriteria::new(args.max_tokens, eos_ids, args.stop_tokens.clone())?;
    let request = GenerateRequest {
        prompt,
        params,
        stop,
        logprobs: args.logprobs,
    };

    let mut backend = device::open(&device, &loaded.weights, args.source.kv_tokens)?;
    let generation = run_loop(backend.as_mut(), &request, text.as_ref(), args.json)?;

    if args.json {
        let decoded = text
            .as_ref()
            .map(|t| t.decode(&generation.tokens))
            .transpose()?;
        write_json(&mut io::stdout().lock(), &generation, decoded)
            .context("writing the JSON output")?;
    }
    Ok(())
}

/// The checkpoint directory, or the error saying what to pass.
pub fn source_dir(source: &ModelSource) -> anyhow::Result<&Path> {
    if source.dummy_weights {
        bail!("--dummy-weights goes with --preset NAME (random weights of a built-in shape)");
    }
    source.model.as_deref().context("--model DIR (or --preset NAME --dummy-weights) is required")
}

/// Runs the loop, streaming to stdout unless `json`, and reports timing on stderr.
fn run_loop(backend: &mut dyn Backend, request: &GenerateRequest, text: Option<&Text>, json: bool) -> anyhow::Result<Generation> {
    let generation = if json {
        generate(backend, request, &mut |_| Ok(()))?
    } else {
        let mut streamer = Streamer::new(text);
        let generation = generate(backend, request, &mut |t| streamer.push(t.token))?;
        streamer.finish().context("writing the output")?;
        generation
    };
    report_timing(&generation, backend.device());
    Ok(generation)
}

/// `--preset NAME --dummy-weights`: random weights of a built-in shape on the GPU; prompts are
/// token ids (a preset has no tokenizer) and only --stop-token ids stop early.
fn run_dummy(args: &GenerateArgs, preset: Preset, device: &device::Device, params: SamplingParams) -> anyhow::Result<()> {
    let device::Device::Cuda(info) = device else {
        bail!("--dummy-weights runs on the GPU only (--device cuda or auto with a GPU)");
    };
    let Some(prompt) = &args.prompt.prompt_tokens else {
        bail!("a preset has no tokenizer: give the prompt as --prompt-tokens");
    };
    let config = preset.config();
    if let Some(&id) = prompt.0.iter().chain(&args.stop_tokens).find(|&&id| id as usize >= config.vocab_size) {
        bail!("token {id} is outside the vocabulary (size {})", config.vocab_size);
    }
    let opts = device::cuda_options(&config, args.source.kv_tokens);
    let mut backend = CudaBackend::dummy(&config, args.seed, opts).with_context(|| format!("opening the CUDA backend on {}", info.name))?;
    eprintln!(
        "nemo: {preset:?} with dummy weights ({:.1} GB filled in {:.2} s) on {}",
        backend.model.weights.bytes as f64 / 1e9,
        backend.model.weights.load_seconds,
        info.name
    );
    let request = GenerateRequest {
        prompt: prompt.0.clone(),
        params,
        stop: StopCriteria::new(args.max_tokens, Vec::new(), args.stop_tokens.clone())?,
        logprobs: args.logprobs,
    };
    let generation = run_loop(&mut backend, &request, None, args.json)?;
    if args.json {
        write_json(&mut io::stdout().lock(), &generation, None).context("writing the JSON output")?;
    }
    Ok(())
}

/// EOS from the tokenizer, else from an HF checkpoint's config files; said on stderr either way.
fn eos_ids(loaded: &model::LoadedModel, text: Option<&Text>) -> anyhow::Result<Vec<u32>> {
    if let Some(text) = text {
        let ids = text.eos_ids();
        if !ids.is_empty() {
            eprintln!("nemo: EOS {ids:?} (from the tokenizer)");
            return Ok(ids);
        }
    }
    match eos::from_hf_config(&loaded.checkpoint)? {
        Some((ids, file)) => {
            eprintln!("nemo: EOS {ids:?} (from {file}); --ignore-eos to generate past it");
            Ok(ids)
        }
        None => {
            eprintln!("nemo: notice: EOS unknown (no tokenizer, no eos_token_id in the config): generation ends at --stop-token ids or --max-tokens");
            Ok(Vec::new())
        }
    }
}

fn report_timing(g: &Generation, device: &str) {
    let t = &g.timing;
    eprintln!(
        "nemo: {device}: prefill {} tokens in {:.3} s ({:.1} tokens/s); decode {} tokens in {:.3} s ({:.1} tokens/s); finish_reason {}",
        g.prompt_tokens.len(),
        t.prefill.as_secs_f64(),
        t.prefill_tokens_per_s(g.prompt_tokens.len()),
        t.decode_steps,
        t.decode.as_secs_f64(),
        t.decode_tokens_per_s(),
        g.finish_reason.as_str(),
    );
}
