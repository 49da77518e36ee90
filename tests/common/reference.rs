//! The transformers oracle fixtures in `tests/fixtures/tiny-s0/` (made by
//! scripts/fixtures/make_tiny_mistral.py; see tests/fixtures/README.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

/// Relative to the working directory first (cargo runs tests from the package root; the GPU
/// check runs the bundled test binary from a copy of the repository elsewhere).
pub fn fixture_dir() -> PathBuf {
    let relative = Path::new("tests/fixtures/tiny-s0");
    if relative.is_dir() {
        return relative.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-s0")
}

#[derive(Deserialize)]
pub struct Reference {
    pub prompts: Vec<Prompt>,
    pub greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
pub struct Prompt {
    pub name: String,
    pub tokens: Vec<u32>,
    pub logit_positions: Vec<usize>,
}

#[derive(Deserialize)]
pub struct Greedy {
    pub prompt: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<Step>,
    pub margins: Vec<f32>,
}

#[derive(Deserialize)]
pub struct Step {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<TokenLogprob>,
}

#[derive(Deserialize)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
}

impl Reference {
    pub fn load() -> Self {
        let text = std::fs::read_to_string(fixture_dir().join("reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn prompt(&self, name: &str) -> &Prompt {
        self.prompts.iter().find(|p| p.name == name).unwrap()
    }
}

/// The f32 tensors of reference.safetensors: name -> (shape, values).
pub fn reference_tensors() -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture_dir().join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// Natural-log softmax in f64.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&x| x as f64 - lse).collect()
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Runs prompt `p` through a batch backend in chunks that end at its recorded logit positions
/// (so most steps read almost all of their keys back from the cache; its blocks in reverse order,
/// so nothing depends on a table being the identity), calling `each(ours, theirs)` with the
/// logits at each position; `theirs`: transformers' logits of `p`, a row per position.
pub fn step_at_logit_positions<B: nemo_engine::engine::BatchBackend>(
    backend: &mut B,
    p: &Prompt,
    theirs: &[f32],
    block_size: usize,
    mut each: impl FnMut(&[f32], &[f32]),
) {
    let vocab = backend.config().vocab_size;
    let table: Vec<u32> = (0..p.tokens.len().div_ceil(block_size) as u32).rev().collect();
    let mut start = 0;
    for (i, &pos) in p.logit_positions.iter().enumerate() {
        let entry = nemo_engine::engine::StepEntry { tokens: &p.tokens[start..=pos], ctx_len: pos + 1, block_table: &table, want_logits: true };
        let ours = backend.step(&[entry]).unwrap().pop().unwrap().unwrap();
        each(&ours, &theirs[i * vocab..(i + 1) * vocab]);
        start = pos + 1;
    }
}
