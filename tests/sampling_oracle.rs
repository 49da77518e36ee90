//! The sampler against transformers (external oracles, committed fixtures; no torch needed):
//! - `tests/fixtures/sampling_filters.json`: the tokens HF's temperature/top-k/top-p/min-p
//!   warpers keep, and their probabilities (scripts/fixtures/make_sampling_filters.py);
//! - `tests/fixtures/tiny-s0`: the first greedy step of each recorded run, whose logits are the
//!   last row of the prompt's logits, with torch's log_softmax top-5
//!   (scripts/fixtures/make_tiny_mistral.py);
//! - `tests/fixtures/penalties.json`: logits after transformers' SequenceBias and
//!   RepetitionPenalty processors and vLLM's frequency and presence subtractions
//!   (scripts/fixtures/make_penalties.py).

use std::path::{Path, PathBuf};

use nemo_engine::sampling::{apply_edits, argmax, filtered_distribution, token_logprobs, Penalties, PenaltyState, SamplingParams};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn filters_keep_the_same_tokens_as_transformers_warpers() {
    let doc = read_json(&fixtures().join("sampling_filters.json"));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    let mut sizes = std::collections::BTreeSet::new();
    for (i, case) in cases.iter().enumerate() {
        let params = SamplingParams {
            temperature: case["temperature"].as_f64().unwrap() as f32,
            top_k: case["top_k"].as_u64().unwrap() as usize,
            top_p: case["top_p"].as_f64().unwrap() as f32,
            min_p: case["min_p"].as_f64().unwrap() as f32,
            seed: 0,
        };
        let logits = f32s(&case["logits"]);
        let want: Vec<u32> = case["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let want_probs = f32s(&case["probs"]);

        let got = filtered_distribution(&logits, &params).unwrap();
        assert_eq!(got.tokens(), want, "case {i}: {params:?}");
        for ((token, prob), &p) in got.probabilities().zip(&want_probs) {
            // transformers works in f32, we in f64.
            assert!(
                (prob - p as f64).abs() < 1e-6,
                "case {i} token {token}: {prob} vs {p}"
            );
        }
        sizes.insert(want.len());
    }
    // The cases exercise more than "keep one" and "keep all".
    assert!(sizes.len() > 10, "kept-set sizes {sizes:?}");
}

/// An f32 tensor from a safetensors file, row-major.
fn load_f32(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), data)
}

#[test]
fn greedy_step_and_logprobs_match_transformers_on_the_tiny_model() {
    let dir = fixtures().join("tiny-s0");
    let reference = read_json(&dir.join("reference.json"));
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();

    let runs = reference["greedy"].as_array().unwrap();
    assert!(runs.len() >= 2);
    for run in runs {
        let prompt = run["prompt"].as_str().unwrap();
        let entry = reference["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == prompt)
            .unwrap();
        let n = entry["tokens"].as_array().unwrap().len();
        let positions = entry["logit_positions"].as_array().unwrap();
        assert_eq!(
            positions.last().unwrap().as_u64(),
            Some(n as u64 - 1),
            "{prompt}: last position recorded"
        );

        let (shape, logits) = load_f32(&tensors, &format!("logits.{prompt}"));
        let vocab = shape[1];
        let last = &logits[(shape[0] - 1) * vocab..];

        let step0 = &run["logprobs"][0];
        let want_token = run["tokens"][0].as_u64().unwrap() as u32;
        assert_eq!(argmax(last), Ok(want_token), "{prompt}: greedy token");
        let got = token_logprobs(last, want_token, 5).unwrap();
        let close = |a: f32, b: &Value| (a as f64 - b.as_f64().unwrap()).abs() < 1e-5;
        assert!(
            close(got.logprob, &step0["logprob"]),
            "{prompt}: {} vs {}",
            got.logprob,
            step0["logprob"]
        );
        let want_top = step0["top"].as_array().unwrap();
        assert_eq!(got.top.len(), want_top.len());
        for ((token, logprob), want) in got.top.iter().zip(want_top) {
            assert_eq!(
                Some(*token as u64),
                want["token"].as_u64(),
                "{prompt}: top order"
            );
            assert!(
                close(*logprob, &want["logprob"]),
                "{prompt}: token {token}: {logprob} vs {}",
                want["logprob"]
            );
        }
    }
}

/// Our sparse, incremental edits against transformers' processors and vLLM's formula. vLLM
/// subtracts the frequency and presence terms one after the other and we subtract their sum, so
/// a value may differ in its last bit; the rest (which tokens, the sign rule at 0) is exact.
#[test]
fn penalties_and_logit_bias_match_transformers_processors() {
    let doc = read_json(&fixtures().join("penalties.json"));
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 48, "only {} cases", cases.len());
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>();
    let (mut repeated, mut zero_touched) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let logits = f32s(&case["logits"]);
        let (prompt, generated) = (ids(&case["prompt"]), ids(&case["generated"]));
        let logit_bias = case["logit_bias"].as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap() as u32, e[1].as_f64().unwrap() as f32)).collect();
        let p = Penalties {
            repetition: case["repetition"].as_f64().unwrap() as f32,
            frequency: case["frequency"].as_f64().unwrap() as f32,
            presence: case["presence"].as_f64().unwrap() as f32,
            logit_bias,
        };
        p.validate(logits.len()).unwrap();
        let mut row = logits.clone();
        if let Some(mut state) = PenaltyState::new(&p, &prompt) {
            for &t in &generated {
                state.record(t);
            }
            apply_edits(&mut row, state.edits()).unwrap();
        }
        let want = f32s(&case["want"]);
        for (t, (&got, &want)) in row.iter().zip(&want).enumerate() {
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "case {i} token {t}: {got} vs transformers/vLLM {want} ({p:?})");
        }
        repeated += generated.iter().any(|t| generated.iter().filter(|&g| g == t).count() > 1) as usize;
        zero_touched += prompt.iter().any(|&t| logits[t as usize] == 0.0) as usize;
    }
    assert!(repeated >= 20 && zero_touched >= 1, "the fixture lacks repeats ({repeated}) or zero logits in the prompt ({zero_touched})");
}
