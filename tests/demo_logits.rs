//! The engine's CPU path (`CpuBackend`, what `--device cpu` runs) on the demo model against
//! transformers' f32 forward on the same bf16-rounded weights (tests/fixtures/smollm2/logits.json,
//! made by scripts/fixtures/smollm2_gguf.py and cross-checked there by llama.cpp): the 37-token
//! ChatML prompt for "What is the capital of France?", run three ways (whole prompt; one token
//! at a time, which checks every position; two chunks), plus the first greedy tokens.
//!
//! Needs the demo model (scripts/setup.sh) and fails without it.

use std::path::PathBuf;

use nemo_engine::engine::{Backend, CpuBackend};
use nemo_engine::gguf::{load_llama, GgufFile, DEMO_MODEL_PATH};
use nemo_engine::model::ModelWeights;
use serde::Deserialize;

/// f32 sums in another order than PyTorch's, over logits of about 25. Measured (2 cores,
/// x86-64): mean 9e-6, max 3.6e-5 over all positions.
const TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Fixture {
    prompt_ids: Vec<u32>,
    argmax: Vec<u32>,
    max_logit: Vec<f64>,
    logsumexp: Vec<f64>,
    probe_ids: Vec<usize>,
    probe_logits: Vec<Vec<f64>>,
    last_top_ids: Vec<usize>,
    last_top_logits: Vec<f64>,
    greedy_ids: Vec<u32>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> Fixture {
    let path = root().join("tests/fixtures/smollm2/logits.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn weights() -> ModelWeights {
    let path = root().join(DEMO_MODEL_PATH);
    assert!(path.exists(), "{} is missing: run scripts/setup.sh", path.display());
    load_llama(&GgufFile::open(&path).unwrap()).unwrap()
}

/// Errors of one position's logits against the fixture, appended to `errors`.
fn compare(pos: usize, logits: &[f32], fx: &Fixture, errors: &mut Vec<f64>) {
    let argmax = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b });
    assert_eq!(argmax as u32, fx.argmax[pos], "argmax at position {pos}");
    let max = logits[argmax] as f64;
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    errors.push((max - fx.max_logit[pos]).abs());
    errors.push((lse - fx.logsumexp[pos]).abs());
    for (&id, &want) in fx.probe_ids.iter().zip(&fx.probe_logits[pos]) {
        errors.push((logits[id] as f64 - want).abs());
    }
}

fn summary(what: &str, errors: &[f64]) -> f64 {
    let max = errors.iter().cloned().fold(0.0, f64::max);
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    eprintln!("{what}: {} values, mean abs error {mean:.2e}, max {max:.2e}", errors.len());
    assert!(max < TOLERANCE, "{what}: max abs error {max:.2e} over {TOLERANCE:e}");
    max
}

#[test]
fn cpu_backend_logits_match_transformers_at_every_position() {
    let fx = fixture();
    let w = weights();
    let ids = &fx.prompt_ids;
    let last = ids.len() - 1;

    // Whole prompt in one prefill: the last position, with its top 20.
    let mut backend = CpuBackend::new(&w);
    let logits = backend.forward(ids).unwrap();
    let mut errors = Vec::new();
    compare(last, &logits, &fx, &mut errors);
    for (&id, &want) in fx.last_top_ids.iter().zip(&fx.last_top_logits) {
        errors.push((logits[id] as f64 - want).abs());
    }
    summary("prefill, last position", &errors);

    // One token at a time: every position through the decode path.
    backend.reset();
    let mut errors = Vec::new();
    for (pos, &id) in ids.iter().enumerate() {
        let logits = backend.forward(&[id]).unwrap();
        compare(pos, &logits, &fx, &mut errors);
    }
    summary("token by token, all 37 positions", &errors);

    // Two chunks: the second prefill attends to the cached first.
    backend.reset();
    let mut errors = Vec::new();
    let split = 20;
    let first = backend.forward(&ids[..split]).unwrap();
    compare(split - 1, &first, &fx, &mut errors);
    let second = backend.forward(&ids[split..]).unwrap();
    compare(last, &second, &fx, &mut errors);
    summary("two chunks", &errors);
}

#[test]
fn cpu_backend_greedy_tokens_match_transformers() {
    // transformers' 32 greedy tokens, generated past <|im_end|> (no EOS stop), so the
    // comparison covers the answer and what the model writes after it.
    let fx = fixture();
    let w = weights();
    let mut backend = CpuBackend::new(&w);
    let mut logits = backend.forward(&fx.prompt_ids).unwrap();
    let mut got = Vec::new();
    for _ in 0..fx.greedy_ids.len() {
        let t = (0..logits.len()).fold(0, |b, i| if logits[i] > logits[b] { i } else { b }) as u32;
        got.push(t);
        logits = backend.forward(&[t]).unwrap();
    }
    assert_eq!(got, fx.greedy_ids);
}
