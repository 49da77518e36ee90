//! The CPU reference against transformers' fp32 forward (tests/fixtures/tiny-s0): logits at
//! every recorded position of every prompt (1 to 4096 tokens), greedy runs with their logprobs,
//! and per-layer activations, for the Mistral layout, the sharded HF layout, and an HF
//! single-file checkpoint merged from the shards here.

mod common;

use std::path::Path;
use std::time::Instant;

use common::max_abs_diff;
use common::reference::*;
use nemo_engine::cpu::{forward_rows, forward_traced, Activation, CpuSession, KvCache};
use nemo_engine::model::{load, Layout, LoadedModel};
use safetensors::SafeTensors;

/// The acceptance bound; the measured errors (printed) are ~1e-5.
const LOGIT_TOLERANCE: f32 = 1e-3;
/// Below this top-1/top-2 margin, f32 rounding may legitimately flip the greedy choice.
const MARGIN: f32 = 1e-3;

/// The shards of the HF fixture merged into one `model.safetensors` (same bytes per tensor).
fn hf_single_file(dir: &Path) {
    let hf = fixture_dir().join("hf");
    let shards: Vec<Vec<u8>> = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    .iter()
    .map(|s| std::fs::read(hf.join(s)).unwrap())
    .collect();
    let parsed: Vec<SafeTensors> = shards
        .iter()
        .map(|b| SafeTensors::deserialize(b).unwrap())
        .collect();
    let views: Vec<_> = parsed.iter().flat_map(|st| st.tensors()).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    std::fs::copy(hf.join("config.json"), dir.join("config.json")).unwrap();
}

fn check_logits(model: &LoadedModel) {
    let reference = Reference::load();
    let tensors = reference_tensors();
    let w = &model.weights;
    let vocab = w.config.vocab_size;
    let mut worst = 0f32;
    for p in &reference.prompts {
        let start = Instant::now();
        let mut cache = KvCache::new(&w.config);
        let ours = forward_rows(w, &p.tokens, &mut cache, &p.logit_positions).unwrap();
        let (shape, theirs) = &tensors[&format!("logits.{}", p.name)];
        assert_eq!(shape, &vec![p.logit_positions.len(), vocab]);
        let err = max_abs_diff(&ours, theirs);
        eprintln!(
            "{:?} {}: {} tokens, {} positions, max abs logit error {err:.3e} ({:.2?})",
            model.checkpoint.layout,
            p.name,
            p.tokens.len(),
            p.logit_positions.len(),
            start.elapsed()
        );
        assert!(err <= LOGIT_TOLERANCE, "{}: max abs error {err}", p.name);
        worst = worst.max(err);
    }
    eprintln!(
        "{:?}: worst max abs logit error {worst:.3e}",
        model.checkpoint.layout
    );
}

#[test]
fn hf_sharded_logits_match_transformers() {
    let model = load(&fixture_dir().join("hf")).unwrap();
    assert_eq!(model.checkpoint.layout, Layout::HfSharded);
    check_logits(&model);
}

#[test]
fn mistral_logits_match_transformers() {
    let model = load(&fixture_dir().join("mistral")).unwrap();
    assert_eq!(model.checkpoint.layout, Layout::Mistral);
    check_logits(&model);
}

#[test]
fn hf_single_file_logits_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    hf_single_file(dir.path());
    let model = load(dir.path()).unwrap();
    assert_eq!(model.checkpoint.layout, Layout::HfSingle);
    check_logits(&model);
}

/// Teacher-forced on transformers' greedy tokens (so one near-tie cannot derail the rest): our
/// argmax equals theirs wherever their top-2 margin exceeds 1e-3, and the top-5 logprobs agree.
/// Prefill in chunks, then one token at a time, exercising the incremental path.
#[test]
fn greedy_runs_match_transformers_in_both_layouts() {
    let reference = Reference::load();
    for layout_dir in ["mistral", "hf"] {
        let model = load(&fixture_dir().join(layout_dir)).unwrap();
        let mut worst_logprob = 0f64;
        for g in &reference.greedy {
            let prompt = &reference.prompt(&g.prompt).tokens;
            let mut session = CpuSession::new(&model.weights);
            let mut logits = session.prefill(prompt, 50).unwrap();
            for (i, step) in g.logprobs.iter().enumerate() {
                if g.margins[i] > MARGIN {
                    assert_eq!(
                        argmax(&logits),
                        g.tokens[i],
                        "{layout_dir} {} step {i}",
                        g.prompt
                    );
                }
                let ours = log_softmax(&logits);
                assert_eq!(step.token, g.tokens[i]);
                for t in std::iter::once((step.token, step.logprob))
                    .chain(step.top.iter().map(|t| (t.token, t.logprob)))
                {
                    let err = (ours[t.0 as usize] - t.1 as f64).abs();
                    worst_logprob = worst_logprob.max(err);
                    assert!(
                        err <= LOGIT_TOLERANCE as f64,
                        "{layout_dir} {} step {i} token {}: {err}",
                        g.prompt,
                        t.0
                    );
                }
                logits = session.step(g.tokens[i]).unwrap();
            }
        }
        eprintln!(
            "{layout_dir}: greedy tokens equal, worst top-5 logprob error {worst_logprob:.3e}"
        );
    }
}

/// The residual stream after the embedding and after each layer, and the final norm, for p7:
/// when logits drift, this says where.
#[test]
fn per_layer_activations_match_transformers() {
    let reference = Reference::load();
    let tensors = reference_tensors();
    let p7 = reference.prompt("p7");
    for layout_dir in ["mistral", "hf"] {
        let model = load(&fixture_dir().join(layout_dir)).unwrap();
        let w = &model.weights;
        let mut seen = Vec::new();
        forward_traced(
            w,
            &p7.tokens,
            &mut KvCache::new(&w.config),
            &[6],
            &mut |act, values| {
                let key = match act {
                    Activation::Embedding => "embed".to_string(),
                    Activation::Layer(i) => format!("layer{i}"),
                    Activation::FinalNorm => "norm".to_string(),
                };
                let (shape, theirs) = &tensors[&format!("hidden.p7.{key}")];
                assert_eq!(shape, &vec![7, w.config.dim]);
                let err = max_abs_diff(values, theirs);
                let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
                eprintln!(
                    "{layout_dir} hidden.p7.{key}: max abs error {err:.3e} (max |x| {scale:.3e})"
                );
                assert!(err <= 1e-4 * scale.max(1.0), "{layout_dir} {key}: {err}");
                seen.push(key);
            },
        )
        .unwrap();
        assert_eq!(seen, ["embed", "layer0", "layer1", "norm"]);
    }
}

/// The 4096-token prompt prefilled in uneven chunks then finished one token at a time gives the
/// same logits as one pass, at the recorded positions.
#[test]
fn incremental_decoding_of_the_long_prompt_equals_the_full_pass() {
    let reference = Reference::load();
    let tensors = reference_tensors();
    let p = reference.prompt("p4096");
    let model = load(&fixture_dir().join("hf")).unwrap();
    let w = &model.weights;
    let vocab = w.config.vocab_size;
    let (_, theirs) = &tensors["logits.p4096"];
    let decode_from = 4096 - 40;
    let mut session = CpuSession::new(w);
    let mut checked = 0;
    let mut offset = 0;
    for chunk in [1usize, 999, 2048, 1008] {
        let part = &p.tokens[offset..offset + chunk];
        let rows: Vec<usize> = p
            .logit_positions
            .iter()
            .filter(|&&q| q >= offset && q < offset + chunk)
            .map(|q| q - offset)
            .collect();
        if !rows.is_empty() {
            let ours = forward_rows(w, part, &mut session.cache, &rows).unwrap();
            for (k, &r) in rows.iter().enumerate() {
                let idx = p
                    .logit_positions
                    .iter()
                    .position(|&q| q == offset + r)
                    .unwrap();
                let err = max_abs_diff(
                    &ours[k * vocab..(k + 1) * vocab],
                    &theirs[idx * vocab..(idx + 1) * vocab],
                );
                assert!(err <= LOGIT_TOLERANCE, "position {}: {err}", offset + r);
                checked += 1;
            }
        } else {
            session.prefill(part, chunk).unwrap();
        }
        offset += chunk;
    }
    assert_eq!(offset, decode_from);
    for pos in decode_from..4096 {
        let logits = session.step(p.tokens[pos]).unwrap();
        if let Some(idx) = p.logit_positions.iter().position(|&q| q == pos) {
            let err = max_abs_diff(&logits, &theirs[idx * vocab..(idx + 1) * vocab]);
            assert!(err <= LOGIT_TOLERANCE, "position {pos}: {err}");
            checked += 1;
        }
    }
    assert_eq!(checked, p.logit_positions.len());
}
