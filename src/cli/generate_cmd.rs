//! `nemo generate`: check the arguments, open the model, build the prompt (plain text, ids, or
//! with --chat one user message of the model's template), run the loop, print.

use std::io;

use anyhow::{bail, Context};

use nemo_engine::engine::{Backend, CudaBackend};
use nemo_engine::generate::{generate, GenerateRequest, Generation};
use nemo_engine::sampling::{Penalties, SamplingParams, StopCriteria};
use nemo_engine::structured::{Constraint, Grammar, Grammars};
use nemo_engine::tokenizer::{parse_tool_calls, ChatMessage, ChatRequest, Tool};

use super::args::{GenerateArgs, ModelSource, Preset};
use super::loaded::Model;
use super::output::{write_json, OutputText, Streamer};
use super::text::Text;
use super::device;

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    // Everything that needs no model is refused before the (possibly long) load.
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let tools = args.tools.as_deref().map(read_tools).transpose()?;
    let penalties = args.sampling.penalties().map_err(anyhow::Error::msg)?;
    let constraint = args.constraint.constraint().map_err(anyhow::Error::msg)?;
    if let Some(preset) = args.source.preset {
        if constraint.is_some() {
            bail!("a preset has no tokenizer, which a structured-output constraint needs");
        }
        let params = checked(super::defaults::Recommended::default().apply(&args.sampling))?;
        let device = device::select(args.device)?;
        return run_dummy(args, preset, &device, params, penalties);
    }
    check_source(&args.source)?;
    let model = Model::open(args.source.model.as_deref())?;
    let params = checked(model.recommended.apply(&args.sampling))?;

    let prompt = match (&args.prompt.prompt, &args.prompt.prompt_tokens) {
        (_, Some(ids)) => ids.0.clone(),
        (Some(prompt), None) if args.chat => chat_prompt(&model, args, prompt, tools)?,
        (Some(prompt), None) => Text::encode_prompt(model.text.as_ref(), prompt)?,
        (None, None) => unreachable!("clap requires one prompt form"),
    };
    let device = device::select(args.device)?;
    let weights = model.load_weights()?;
    let vocab_size = weights.config.vocab_size;
    if let Some(&id) = args.stop_tokens.iter().find(|&&id| id as usize >= vocab_size) {
        bail!("--stop-token {id} is outside the vocabulary (size {vocab_size})");
    }
    let eos_ids = if args.ignore_eos {
        Vec::new()
    } else {
        model.stop.announce();
        model.stop.ids.clone()
    };
    let stop = StopCriteria::new(args.max_tokens, eos_ids, args.stop_tokens.clone())?;
    let grammar = constraint.map(|c| compile(model.text.as_ref(), &c, vocab_size, &model.stop.ids)).transpose()?;
    let request = GenerateRequest { prompt, params, penalties, stop, logprobs: args.logprobs, grammar };

    let mut backend = device::open(&device, &weights, &args.source)?;
    let with_tools = args.tools.is_some();
    let text = model.text.as_ref();
    let generation = run_loop(backend.as_mut(), &request, text, with_tools, args.json)?;

    if args.json {
        let output = match text {
            None => OutputText::None,
            Some(t) if with_tools => OutputText::WithTools(
                parse_tool_calls(t.tokenizer(), &generation.tokens).context("parsing tool calls")?,
            ),
            Some(t) => OutputText::Plain(t.decode(&generation.tokens)?),
        };
        write_json(&mut io::stdout().lock(), &generation, output).context("writing the JSON output")?;
    }
    Ok(())
}

/// A constraint's grammar over the model's tokenizer (which it needs) and vocabulary.
/// A complete grammar allows the model's stop ids (`ends`).
pub fn compile(text: Option<&Text>, constraint: &Constraint, vocab: usize, ends: &[u32]) -> anyhow::Result<Grammar> {
    let text = text.context("a structured-output constraint needs the model's tokenizer (tekken.json or tokenizer.json)")?;
    let grammars = Grammars::new(text.shared_tokenizer(), vocab, ends)?;
    Ok(grammars.compile(constraint)?)
}

fn checked(params: SamplingParams) -> anyhow::Result<SamplingParams> {
    params.validate().context("invalid sampling parameters")?;
    Ok(params)
}

/// `--dummy-weights` belongs to `--preset`.
pub fn check_source(source: &ModelSource) -> anyhow::Result<()> {
    if source.dummy_weights {
        bail!("--dummy-weights goes with --preset NAME (random weights of a built-in shape)");
    }
    Ok(())
}

/// `--tools FILE`: a JSON list of OpenAI tool definitions.
fn read_tools(path: &std::path::Path) -> anyhow::Result<Vec<Tool>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --tools {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "--tools {}: expected a JSON list of tools ([{{\"type\": \"function\", \"function\": \
             {{\"name\": ..., \"description\": ..., \"parameters\": {{...}}}}}}, ...])",
            path.display()
        )
    })
}

/// `--chat`: [system], user(prompt), tools; rendered by the model's template.
fn chat_prompt(model: &Model, args: &GenerateArgs, prompt: &str, tools: Option<Vec<Tool>>) -> anyhow::Result<Vec<u32>> {
    let format = model.chat_format()?;
    if tools.is_some() && !format.supports_tools() {
        bail!(
            "--tools needs a model with Mistral's chat template (v3); {} uses {}, which is \
             rendered without tools",
            model.path.path().display(),
            format.describe()
        );
    }
    let text = model.text.as_ref().expect("a chat format implies a tokenizer");
    let mut messages: Vec<ChatMessage> = args.system.iter().map(ChatMessage::system).collect();
    messages.push(ChatMessage::user(prompt));
    format.encode(text, &ChatRequest { messages, tools, continue_final_message: false })
}

/// Runs the loop, streaming to stdout unless `json`, and reports timing on stderr.
fn run_loop(backend: &mut dyn Backend, request: &GenerateRequest, text: Option<&Text>, tools: bool, json: bool) -> anyhow::Result<Generation> {
    let generation = if json {
        generate(backend, request, &mut |_| Ok(()))?
    } else {
        let mut streamer = Streamer::new(text, tools);
        let generation = generate(backend, request, &mut |t| streamer.push(t.token))?;
        streamer.finish().context("writing the output")?;
        generation
    };
    report_timing(&generation, backend.device());
    Ok(generation)
}

/// `--preset NAME --dummy-weights`: random weights of a built-in shape on the GPU; prompts are
/// token ids (a preset has no tokenizer) and only --stop-token ids stop early.
fn run_dummy(args: &GenerateArgs, preset: Preset, device: &device::Device, params: SamplingParams, penalties: Penalties) -> anyhow::Result<()> {
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
    let opts = device::source_cuda_options(&config, &args.source);
    let mut backend = CudaBackend::dummy(&config, args.sampling.seed, opts).with_context(|| format!("opening the CUDA backend on {}", info.name))?;
    eprintln!(
        "nemo: {preset:?} with dummy weights ({:.1} GB filled in {:.2} s) on {}",
        backend.model.weights.bytes as f64 / 1e9,
        backend.model.weights.load_seconds,
        info.name
    );
    let request = GenerateRequest {
        prompt: prompt.0.clone(),
        params,
        penalties,
        stop: StopCriteria::new(args.max_tokens, Vec::new(), args.stop_tokens.clone())?,
        logprobs: args.logprobs,
        grammar: None,
    };
    let generation = run_loop(&mut backend, &request, None, false, args.json)?;
    if args.json {
        write_json(&mut io::stdout().lock(), &generation, OutputText::None).context("writing the JSON output")?;
    }
    Ok(())
}

pub fn report_timing(g: &Generation, device: &str) {
    let t = &g.timing;
    let prefilled = g.prompt_tokens.len() - g.reused_tokens;
    let reused = match g.reused_tokens {
        0 => String::new(),
        n => format!(" ({n} more reused from the previous turn)"),
    };
    eprintln!(
        "nemo: {device}: prefill {prefilled} tokens{reused} in {:.3} s ({:.1} tokens/s); decode {} tokens in {:.3} s ({:.1} tokens/s); finish_reason {}",
        t.prefill.as_secs_f64(),
        t.prefill_tokens_per_s(prefilled),
        t.decode_steps,
        t.decode.as_secs_f64(),
        t.decode_tokens_per_s(),
        g.finish_reason.as_str(),
    );
}
