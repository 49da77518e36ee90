//! `nemo serve` driven by the official OpenAI Python client (tests/server_openai/suite.py, the
//! client pinned in tests/server_openai/requirements.txt and installed outside the repository
//! by scripts/setup-openai-client.sh). These tests FAIL, never skip, when that client is
//! missing.
//!
//! Models, all on the CPU backend:
//! - the demo model (SmolLM2-135M-Instruct GGUF, its Jinja template): plain, streamed,
//!   logprobs, shutdown;
//! - a tiny random model with Nemo's vocabulary and tekken.json (Mistral layout, v3 template):
//!   random text of real tokens, fast enough for 64 concurrent clients and the soak;
//! - a scripted tiny model with Nemo's tekken.json that answers any `[INST]...[/INST]` with a
//!   `[TOOL_CALLS]` call: a random model never writes a tool call, so this forces one through
//!   the real template, server and parser.
//!
//! The groups run one at a time (each starts its own server; they would compete for 2 cores).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{random, write_bf16, Named};
use half::bf16;

const VOCAB: usize = 131_072;
const INST_END: u32 = 4; // [/INST]
const TOOL_CALLS: u32 = 9;
const EOS: u32 = 2;
/// Compact call JSON whose tokens are all distinct (the scripted model's chain cannot revisit a
/// token).
const CALL_JSON: &str = r#"[{"name":"get_current_weather","arguments":{"location": "Paris"}}]"#;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tekken() -> PathBuf {
    let path = std::env::var_os("NEMO_TEKKEN").map(PathBuf::from).unwrap_or_else(|| root().join("models/tekken/tekken.json"));
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    path
}

/// The venv's python, with `openai` importable.
fn python() -> PathBuf {
    let python = match std::env::var_os("NEMO_OPENAI_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = std::env::var_os("NEMO_OPENAI_VENV").map(PathBuf::from).unwrap_or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
                cache.join("nemo-engine/openai-venv")
            });
            venv.join("bin/python")
        }
    };
    let ok = Command::new(&python).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{} cannot import openai: run scripts/setup-openai-client.sh", python.display());
    python
}

fn run_group(group: &str, model: Option<&Path>, env: &[(&str, &str)]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/server_openai/suite.py")).arg(group).arg("--nemo").arg(env!("CARGO_BIN_EXE_nemo"));
    if let Some(model) = model {
        cmd.arg("--model").arg(model);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("running suite.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "suite.py {group} failed ({}):\n{stdout}\n{stderr}", out.status);
}

fn params_json(dim: usize, n_layers: usize, head_dim: usize, hidden: usize, n_heads: usize, n_kv_heads: usize) -> String {
    format!(
        r#"{{"dim": {dim}, "n_layers": {n_layers}, "head_dim": {head_dim}, "hidden_dim": {hidden}, "n_heads": {n_heads},
            "n_kv_heads": {n_kv_heads}, "norm_eps": 1e-05, "vocab_size": {VOCAB}, "rope_theta": 1000000.0}}"#
    )
}

fn layer(i: usize, dim: usize, head_dim: usize, hidden: usize, n_heads: usize, n_kv: usize, seed: u64, attn_out: f32) -> Vec<Named> {
    let named = |name: &str, shape: Vec<usize>, data: Vec<bf16>| Named { name: format!("layers.{i}.{name}.weight"), shape, data };
    let ones = |n| vec![bf16::ONE; n];
    let (q, kv) = (n_heads * head_dim, n_kv * head_dim);
    vec![
        named("attention_norm", vec![dim], ones(dim)),
        named("attention.wq", vec![q, dim], random(seed, q * dim, 0.2)),
        named("attention.wk", vec![kv, dim], random(seed + 1, kv * dim, 0.2)),
        named("attention.wv", vec![kv, dim], random(seed + 2, kv * dim, 0.2)),
        named("attention.wo", vec![dim, q], random(seed + 3, dim * q, attn_out)),
        named("ffn_norm", vec![dim], ones(dim)),
        named("feed_forward.w1", vec![hidden, dim], random(seed + 4, hidden * dim, 0.2)),
        named("feed_forward.w2", vec![dim, hidden], random(seed + 5, dim * hidden, attn_out)),
        named("feed_forward.w3", vec![hidden, dim], random(seed + 6, hidden * dim, 0.2)),
    ]
}

fn write_model(dir: &Path, params: String, tensors: Vec<Named>) {
    std::fs::write(dir.join("params.json"), params).unwrap();
    write_bf16(&dir.join("consolidated.safetensors"), &tensors);
    std::os::unix::fs::symlink(tekken(), dir.join("tekken.json")).unwrap();
}

/// Random weights, Nemo's vocabulary: real tokens in random order.
fn tiny_random_model() -> tempfile::TempDir {
    let (dim, n_layers, head_dim, hidden, n_heads, n_kv) = (64, 2, 16, 128, 4, 2);
    let mut tensors = vec![Named { name: "tok_embeddings.weight".into(), shape: vec![VOCAB, dim], data: random(1, VOCAB * dim, 1.0) }];
    for i in 0..n_layers {
        tensors.extend(layer(i, dim, head_dim, hidden, n_heads, n_kv, 10 + 10 * i as u64, 0.2));
    }
    tensors.push(Named { name: "norm.weight".into(), shape: vec![dim], data: vec![bf16::ONE; dim] });
    tensors.push(Named { name: "output.weight".into(), shape: vec![VOCAB, dim], data: random(2, VOCAB * dim, 0.5) });
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), params_json(dim, n_layers, head_dim, hidden, n_heads, n_kv), tensors);
    dir
}

/// Answers any `[INST]...[/INST]` with `script` then `</s>`: attention and FFN write nothing
/// (wo = w2 = 0), so the logits depend on the last token only; each token of the chain gets
/// its own embedding direction and the LM head maps it to the next one.
fn scripted_model(script: &[u32]) -> tempfile::TempDir {
    let dim = 32;
    let chain: Vec<u32> = [&[INST_END][..], script].concat();
    let mut seen = std::collections::HashSet::new();
    assert!(chain.iter().all(|t| seen.insert(*t)), "a chain token repeats: {chain:?}");
    assert!(chain.len() <= dim);
    let mut embedding = vec![bf16::ZERO; VOCAB * dim];
    let mut output = vec![bf16::ZERO; VOCAB * dim];
    for (k, &token) in chain.iter().enumerate() {
        embedding[token as usize * dim + k] = bf16::ONE;
        let next = chain.get(k + 1).copied().unwrap_or(EOS);
        output[next as usize * dim + k] = bf16::from_f32(4.0);
    }
    let mut tensors = vec![Named { name: "tok_embeddings.weight".into(), shape: vec![VOCAB, dim], data: embedding }];
    tensors.extend(layer(0, dim, 16, 32, 2, 1, 100, 0.0));
    tensors.push(Named { name: "norm.weight".into(), shape: vec![dim], data: vec![bf16::ONE; dim] });
    tensors.push(Named { name: "output.weight".into(), shape: vec![VOCAB, dim], data: output });
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), params_json(dim, 1, 16, 32, 2, 1), tensors);
    dir
}

fn tool_model() -> tempfile::TempDir {
    let tok = nemo_engine::tokenizer::Tokenizer::from_path(&tekken()).unwrap();
    scripted_model(&[&[TOOL_CALLS][..], &tok.encode(CALL_JSON).unwrap()].concat())
}

#[test]
fn demo_model_plain_streamed_logprobs_and_refusals() {
    run_group("demo", None, &[]);
}

#[test]
fn tool_calls_whole_and_streamed() {
    let model = tool_model();
    run_group("tools", Some(model.path()), &[]);
}

#[test]
fn sixty_four_concurrent_streaming_clients() {
    let model = tiny_random_model();
    run_group("load", Some(model.path()), &[]);
}

#[test]
fn a_client_that_disconnects_is_cancelled() {
    let model = tiny_random_model();
    run_group("disconnect", Some(model.path()), &[]);
}

#[test]
fn sigterm_drains_then_exits_zero() {
    run_group("shutdown", None, &[]);
}

#[test]
fn the_api_key_is_checked() {
    let model = tiny_random_model();
    run_group("auth", Some(model.path()), &[]);
}

#[test]
fn soak() {
    let model = tiny_random_model();
    run_group("soak", Some(model.path()), &[]);
}
