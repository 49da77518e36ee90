//! `nemo perplexity`: a text file's perplexity under the model (`nemo_engine::perplexity`),
//! window by window, with the progress on stderr and the result on stdout.

use std::io::Read;
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use nemo_engine::engine::KvCacheDtype;
use nemo_engine::perplexity::{perplexity, Windows};

use super::args::PerplexityArgs;
use super::device;
use super::generate_cmd::check_source;
use super::loaded::Model;

#[derive(Serialize)]
struct JsonOutput<'a> {
    perplexity: f64,
    std_error: f64,
    mean_nll: f64,
    tokens_scored: usize,
    windows: usize,
    context: usize,
    text_tokens: usize,
    tokens_left_out: usize,
    seconds: f64,
    device: &'a str,
    kv_cache_dtype: &'a str,
}

pub fn run(args: &PerplexityArgs) -> anyhow::Result<()> {
    if args.source.preset.is_some() {
        bail!("nemo perplexity scores a text with a trained model and its tokenizer, not --preset");
    }
    check_source(&args.source)?;
    let raw = read_text(&args.file)?;
    let model = Model::open(args.source.model.as_deref())?;
    let text = model.text.as_ref().context("scoring a text needs the model's tokenizer (tekken.json or tokenizer.json)")?;
    let tokens = text.encode(&raw, false, false)?;
    let bos = text.prompt_bos();
    let windows = Windows { context: args.context, max_windows: args.max_windows };
    let device = device::select(args.device)?;
    let weights = model.load_weights()?;
    // Refuse a text or a window that cannot work before opening the device.
    let (ranges, _) = windows.split(tokens.len(), bos.is_some(), weights.config.max_context)?;
    let mut backend = device::open(&device, &weights, &args.source)?;
    eprintln!(
        "nemo: {} tokens of text; {} windows of {} tokens{}, the last {} of each scored",
        tokens.len(),
        ranges.len(),
        args.context,
        if bos.is_some() { " (BOS first)" } else { "" },
        args.context - args.context / 2 - 1
    );
    let started = Instant::now();
    let total = ranges.len();
    let result = perplexity(backend.as_mut(), bos, &tokens, windows, &mut |w, so_far| {
        let rate = so_far.tokens_scored as f64 / started.elapsed().as_secs_f64();
        eprintln!("nemo: window {}/{total}: perplexity so far {:.4} ({rate:.0} scored tokens/s)", w.index + 1, so_far.perplexity);
    })?;
    let seconds = started.elapsed().as_secs_f64();
    // As --kv-cache-dtype names it; `auto` is bf16 on the GPU and the reference's f32 on the CPU.
    let kv = match args.source.kv_cache_dtype {
        KvCacheDtype::Auto => "auto",
        KvCacheDtype::Fp8E4m3 => "fp8",
    };
    if args.json {
        let out = JsonOutput {
            perplexity: result.perplexity,
            std_error: result.std_error,
            mean_nll: result.mean_nll,
            tokens_scored: result.tokens_scored,
            windows: result.windows,
            context: result.context,
            text_tokens: tokens.len(),
            tokens_left_out: result.tokens_left_out,
            seconds,
            device: backend.device(),
            kv_cache_dtype: kv,
        };
        println!("{}", serde_json::to_string(&out).context("serialising the result")?);
    } else {
        println!(
            "perplexity {:.4} ± {:.4} over {} tokens ({} windows of {}; {} text tokens after the last window not scored; {}, KV cache {kv}, {seconds:.1} s)",
            result.perplexity,
            result.std_error,
            result.tokens_scored,
            result.windows,
            result.context,
            result.tokens_left_out,
            backend.device()
        );
    }
    Ok(())
}

/// The file, or stdin for `-`.
fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    if path == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the text from stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
