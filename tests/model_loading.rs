//! Loading both layouts of a toy checkpoint, and refusing broken ones with errors that name
//! the file, the tensor or key, and what was expected (never a panic).

mod common;

use std::path::Path;

use common::*;
use nemo_engine::model::{inspect, load, Layout, LoadError, RopeLayout, TensorData};
use safetensors::Dtype;
use tempfile::TempDir;

fn mistral_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_toy_mistral(dir.path(), &toy_mistral_tensors(1));
    dir
}

fn hf_sharded_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_toy_hf_sharded(dir.path(), &to_hf(&toy_mistral_tensors(1)));
    dir
}

/// The error's message, checked to contain every expected fragment.
fn refused(dir: &Path, fragments: &[&str]) -> LoadError {
    let err = match load(dir) {
        Ok(_) => panic!(
            "{} loaded, expected an error containing {fragments:?}",
            dir.display()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    eprintln!("refused: {msg}");
    for f in fragments {
        assert!(msg.contains(f), "error {msg:?} does not mention {f:?}");
    }
    err
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(path, v.to_string()).unwrap();
}

/// Rewrites the Mistral toy with `change` applied to its tensor list (name, dtype, shape, bytes).
fn mistral_with(change: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) -> TempDir {
    let dir = mistral_dir();
    let mut raw: Vec<_> = toy_mistral_tensors(1)
        .into_iter()
        .map(|t| (t.name, Dtype::BF16, t.shape, bf16_bytes(&t.data)))
        .collect();
    change(&mut raw);
    write_raw(&dir.path().join("consolidated.safetensors"), &raw);
    dir
}

#[test]
fn loads_the_mistral_layout_zero_copy_with_config_from_params_json() {
    let dir = mistral_dir();
    let model = load(dir.path()).unwrap();
    let c = &model.weights.config;
    assert_eq!(
        (c.dim, c.n_layers, c.head_dim, c.n_heads, c.n_kv_heads),
        (64, 2, 32, 4, 2)
    );
    assert_eq!(
        (c.ffn_dim, c.vocab_size, c.rope_theta, c.norm_eps),
        (96, 50, 1e6, 1e-5)
    );
    assert_eq!(c.max_context, 131_072);
    assert!(!c.tied_embeddings);
    assert_eq!(model.checkpoint.layout, Layout::Mistral);
    assert_eq!(model.weights.rope_layout, RopeLayout::Interleaved);
    assert_eq!(model.checkpoint.tokenizer, None);
    assert!(model.warnings.is_empty());
    assert_eq!(model.tensor_count, 1 + 2 * 9 + 2);
    assert!(matches!(
        model.weights.layers[1].wq.data,
        TensorData::Mapped { .. }
    ));
    // Values are the ones written.
    let written = toy_mistral_tensors(1);
    let wo = written
        .iter()
        .find(|t| t.name == "layers.1.attention.wo.weight")
        .unwrap();
    assert_eq!(model.weights.layers[1].wo.as_bf16(), &wo.data[..]);
    assert_eq!(model.weights.layers[1].wo.shape, vec![64, 128]);
}

#[test]
fn loads_the_hf_layouts_and_config_json() {
    let dir = hf_sharded_dir();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let model = load(dir.path()).unwrap();
    assert_eq!(model.checkpoint.layout, Layout::HfSharded);
    assert_eq!(model.checkpoint.weight_files.len(), 2);
    assert_eq!(model.weights.rope_layout, RopeLayout::RotateHalf);
    assert_eq!(
        model.checkpoint.tokenizer,
        Some(dir.path().join("tokenizer.json"))
    );
    let c = &model.weights.config;
    assert_eq!(
        (c.dim, c.head_dim, c.n_kv_heads, c.ffn_dim, c.max_context),
        (64, 32, 2, 96, 131_072)
    );

    let single = tempfile::tempdir().unwrap();
    write_toy_hf_single(single.path(), &to_hf(&toy_mistral_tensors(1)));
    assert_eq!(
        load(single.path()).unwrap().checkpoint.layout,
        Layout::HfSingle
    );
}

#[test]
fn prefers_the_mistral_layout_when_a_directory_holds_both() {
    let dir = hf_sharded_dir();
    write_toy_mistral(dir.path(), &toy_mistral_tensors(1));
    std::fs::write(dir.path().join("tekken.json"), "{}").unwrap();
    let model = load(dir.path()).unwrap();
    assert_eq!(model.checkpoint.layout, Layout::Mistral);
    assert_eq!(
        model.checkpoint.tokenizer,
        Some(dir.path().join("tekken.json"))
    );
}

#[test]
fn inspect_summarises_layout_sizes_and_kv_bytes() {
    let dir = mistral_dir();
    let s = inspect(dir.path()).unwrap();
    assert_eq!(s.tensor_count, 21);
    let params = 50 * 64 * 2 + 64 + 2 * (2 * 64 + 128 * 64 * 2 + 64 * 64 * 2 + 3 * 96 * 64);
    assert_eq!(s.tensor_bytes, params * 2);
    assert_eq!(s.kv_bytes_128k, 131_072 * 2 * 2 * 64 * 2);
    let text = s.to_string();
    for f in [
        "Mistral",
        "params.json",
        "head_dim 32",
        "131072 tokens",
        "none (prompts must be given as token ids)",
    ] {
        assert!(text.contains(f), "{text}");
    }
}

#[test]
fn head_dim_defaults_to_dim_over_heads_only_when_absent() {
    let dir = mistral_dir();
    edit_json(&dir.path().join("params.json"), |o| {
        o.remove("head_dim");
    });
    // 64 / 4 = 16 != 32: the tensors no longer match, and the error says so.
    refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "layers.0.attention.wq.weight",
            "[128, 64]",
            "[64, 64]",
        ],
    );

    let dir = hf_sharded_dir();
    edit_json(&dir.path().join("config.json"), |o| {
        o.insert("head_dim".into(), serde_json::Value::Null);
    });
    refused(
        dir.path(),
        &["model.layers.0.self_attn.q_proj.weight", "[64, 64]"],
    );
}

#[test]
fn a_misaligned_tensor_range_is_copied_once_and_reads_the_same() {
    let dir = mistral_dir();
    let path = dir.path().join("consolidated.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // One more space of header padding: every tensor now starts at an odd offset.
    let mut out = ((n + 1) as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&bytes[8..8 + n]);
    out.push(b' ');
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    let model = load(dir.path()).unwrap();
    assert!(matches!(model.weights.embedding.data, TensorData::Owned(_)));
    let aligned = load(mistral_dir().path()).unwrap();
    assert_eq!(
        model.weights.embedding.as_bf16(),
        aligned.weights.embedding.as_bf16()
    );
}

// ---- refusals: safetensors files ----

#[test]
fn refuses_a_truncated_file() {
    let dir = mistral_dir();
    let path = dir.path().join("consolidated.safetensors");
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let err = refused(
        dir.path(),
        &["consolidated.safetensors", "truncated", "ends at data byte"],
    );
    assert!(matches!(err, LoadError::Safetensors { .. }));

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(5)
        .unwrap();
    refused(
        dir.path(),
        &["consolidated.safetensors", "5 bytes", "too short"],
    );
}

#[test]
fn refuses_a_header_length_pointing_past_the_end() {
    let dir = mistral_dir();
    let path = dir.path().join("consolidated.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "header length field says 1099511627776 bytes",
        ],
    );
}

#[test]
fn refuses_a_header_that_is_not_json() {
    let dir = mistral_dir();
    let path = dir.path().join("consolidated.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = b'[';
    std::fs::write(&path, bytes).unwrap();
    refused(
        dir.path(),
        &["consolidated.safetensors", "header is not a JSON object"],
    );
}

#[test]
fn refuses_offsets_that_disagree_with_shape() {
    let dir = mistral_dir();
    let path = dir.path().join("consolidated.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    // Same header length: claim the norm holds 63 values but keep its 128-byte range.
    let edited = header.replacen(
        "\"norm.weight\":{\"dtype\":\"BF16\",\"shape\":[64]",
        "\"norm.weight\":{\"dtype\":\"BF16\",\"shape\":[63]",
        1,
    );
    assert_ne!(edited, header, "header layout changed: {header}");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(edited.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, out).unwrap();
    refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "tensor `norm.weight`",
            "needs 126",
        ],
    );
}

#[test]
fn refuses_a_wrong_dtype() {
    let dir = mistral_with(|raw| {
        let t = raw
            .iter_mut()
            .find(|t| t.0 == "layers.1.attention.wk.weight")
            .unwrap();
        let f32s: Vec<u8> =
            t.3.chunks(2)
                .flat_map(|b| {
                    half::bf16::from_le_bytes([b[0], b[1]])
                        .to_f32()
                        .to_le_bytes()
                })
                .collect();
        t.1 = Dtype::F32;
        t.3 = f32s;
    });
    let err = refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "layers.1.attention.wk.weight",
            "F32",
            "expected BF16",
        ],
    );
    assert!(matches!(err, LoadError::WrongDtype { .. }));
}

#[test]
fn refuses_a_wrong_shape() {
    let dir = mistral_with(|raw| {
        let t = raw
            .iter_mut()
            .find(|t| t.0 == "layers.0.feed_forward.w2.weight")
            .unwrap();
        t.2 = vec![96, 64]; // transposed
    });
    let err = refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "layers.0.feed_forward.w2.weight",
            "[96, 64]",
            "expected [64, 96]",
        ],
    );
    assert!(matches!(err, LoadError::WrongShape { .. }));
}

#[test]
fn refuses_a_missing_tensor() {
    let dir = mistral_with(|raw| raw.retain(|t| t.0 != "layers.1.ffn_norm.weight"));
    let err = refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "layers.1.ffn_norm.weight",
            "missing",
        ],
    );
    assert!(matches!(err, LoadError::MissingTensor { .. }));
}

#[test]
fn refuses_an_unexpected_tensor() {
    let dir = mistral_with(|raw| {
        raw.push((
            "layers.0.attention.wq.bias".into(),
            Dtype::BF16,
            vec![128],
            vec![0; 256],
        ))
    });
    let err = refused(
        dir.path(),
        &[
            "consolidated.safetensors",
            "layers.0.attention.wq.bias",
            "unexpected",
        ],
    );
    assert!(matches!(err, LoadError::UnexpectedTensor { .. }));
}

#[test]
fn refuses_shards_that_disagree_with_their_index() {
    let dir = hf_sharded_dir();
    let index = dir.path().join("model.safetensors.index.json");
    edit_json(&index, |o| {
        let map = o["weight_map"].as_object_mut().unwrap();
        map.insert(
            "model.norm.weight".into(),
            "model-00001-of-00002.safetensors".into(),
        );
    });
    refused(
        dir.path(),
        &[
            "model.safetensors.index.json",
            "model.norm.weight",
            "model-00001-of-00002",
        ],
    );

    let dir = hf_sharded_dir();
    edit_json(&dir.path().join("model.safetensors.index.json"), |o| {
        o["weight_map"].as_object_mut().unwrap().insert(
            "lm_head.weight".into(),
            "model-00003-of-00002.safetensors".into(),
        );
    });
    refused(
        dir.path(),
        &[
            "model-00003-of-00002.safetensors",
            "file not found (named by",
            "model.safetensors.index.json",
        ],
    );

    let dir = hf_sharded_dir();
    edit_json(&dir.path().join("model.safetensors.index.json"), |o| {
        o["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("model.embed_tokens.weight");
    });
    refused(
        dir.path(),
        &["model.embed_tokens.weight", "which the index does not list"],
    );
}

// ---- refusals: config files ----

#[test]
fn refuses_malformed_json() {
    let dir = mistral_dir();
    std::fs::write(dir.path().join("params.json"), r#"{"dim": 64,"#).unwrap();
    let err = refused(dir.path(), &["params.json", "not valid JSON"]);
    assert!(matches!(err, LoadError::Json { .. }));

    let dir = hf_sharded_dir();
    std::fs::write(dir.path().join("config.json"), "[1, 2]").unwrap();
    refused(
        dir.path(),
        &["config.json", "expected a JSON object, found an array"],
    );

    let dir = hf_sharded_dir();
    std::fs::write(dir.path().join("model.safetensors.index.json"), "{").unwrap();
    refused(
        dir.path(),
        &["model.safetensors.index.json", "not valid JSON"],
    );
}

#[test]
fn refuses_ill_typed_missing_and_absurd_values() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &[&str])> = vec![
        (
            "dim",
            json!("64"),
            &["`dim`", "positive integer", "string \"64\""],
        ),
        ("n_heads", json!(4.5), &["`n_heads`", "number 4.5"]),
        (
            "n_layers",
            json!(-2),
            &["`n_layers`", "positive integer", "-2"],
        ),
        (
            "hidden_dim",
            json!(0),
            &["`hidden_dim`", "positive integer"],
        ),
        (
            "vocab_size",
            json!(1_000_000_000_000u64),
            &["`vocab_size`", "implausibly large"],
        ),
        (
            "norm_eps",
            json!("small"),
            &["`norm_eps`", "positive number"],
        ),
        ("norm_eps", json!(2.0), &["`norm_eps`", "implausibly large"]),
        (
            "rope_theta",
            json!(-1.0),
            &["`rope_theta`", "positive number"],
        ),
        (
            "n_kv_heads",
            json!(3),
            &["`n_kv_heads`", "not a multiple of 3 KV heads"],
        ),
        ("head_dim", json!(33), &["`head_dim`", "odd"]),
        (
            "vocab_size",
            serde_json::Value::Null,
            &["`vocab_size`", "missing"],
        ),
        ("moe", json!({"num_experts": 8}), &["unsupported", "moe"]),
        (
            "sliding_window",
            json!(4096),
            &["unsupported", "sliding_window is 4096"],
        ),
    ];
    for (key, value, fragments) in cases {
        let dir = mistral_dir();
        edit_json(&dir.path().join("params.json"), |o| {
            o.insert(key.into(), value.clone());
        });
        let err = refused(dir.path(), fragments);
        assert!(err.to_string().contains("params.json"), "{err}");
    }
}

#[test]
fn refuses_unsupported_hf_configs() {
    use serde_json::json;
    let cases: Vec<(&str, serde_json::Value, &[&str])> = vec![
        ("hidden_act", json!("gelu"), &["hidden_act is \"gelu\""]),
        (
            "sliding_window",
            json!(4096),
            &["sliding_window is 4096", "not implemented"],
        ),
        (
            "rope_scaling",
            json!({"rope_type": "yarn", "factor": 4.0}),
            &["rope_scaling.rope_type"],
        ),
        (
            "model_type",
            json!("mixtral"),
            &["model_type is \"mixtral\""],
        ),
        (
            "tie_word_embeddings",
            json!("no"),
            &["`tie_word_embeddings`", "true or false"],
        ),
        (
            "num_key_value_heads",
            json!([8]),
            &["`num_key_value_heads`", "an array"],
        ),
        (
            "intermediate_size",
            serde_json::Value::Null,
            &["`intermediate_size`", "missing"],
        ),
    ];
    for (key, value, fragments) in cases {
        let dir = hf_sharded_dir();
        edit_json(&dir.path().join("config.json"), |o| {
            o.insert(key.into(), value.clone());
        });
        let err = refused(dir.path(), fragments);
        assert!(err.to_string().contains("config.json"), "{err}");
    }
    // A window covering the whole context changes nothing and is accepted.
    let dir = hf_sharded_dir();
    edit_json(&dir.path().join("config.json"), |o| {
        o.insert("sliding_window".into(), json!(131_072));
    });
    load(dir.path()).unwrap();
}

#[test]
fn refuses_a_directory_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("params.json"), TOY_PARAMS_JSON).unwrap();
    let err = refused(
        dir.path(),
        &["no checkpoint found", "consolidated.safetensors"],
    );
    assert!(matches!(err, LoadError::NoCheckpoint { .. }));
    refused(
        &dir.path().join("nope"),
        &["nope", "not found (not a directory)"],
    );
}

#[test]
fn tied_embeddings_use_the_embedding_and_ignore_a_saved_lm_head_with_a_warning() {
    let hf = to_hf(&toy_mistral_tensors(1));
    let untied: Vec<Named> = hf
        .iter()
        .filter(|t| t.name != "lm_head.weight")
        .map(|t| Named {
            name: t.name.clone(),
            shape: t.shape.clone(),
            data: t.data.clone(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_toy_hf_single(dir.path(), &untied);
    let config = dir.path().join("config.json");
    // Untied (the toy's config) without lm_head: refused.
    refused(
        dir.path(),
        &["model.safetensors", "lm_head.weight", "missing"],
    );
    edit_json(&config, |o| {
        o.insert("tie_word_embeddings".into(), true.into());
    });
    let model = load(dir.path()).unwrap();
    assert!(model.weights.lm_head.is_none());
    assert_eq!(model.weights.lm_head().name, "model.embed_tokens.weight");
    assert!(model.warnings.is_empty());

    write_toy_hf_single(dir.path(), &hf); // with lm_head.weight (rewrites config.json)
    edit_json(&config, |o| {
        o.insert("tie_word_embeddings".into(), true.into());
    });
    let model = load(dir.path()).unwrap();
    assert_eq!(model.weights.lm_head().name, "model.embed_tokens.weight");
    assert_eq!(model.warnings.len(), 1);
    assert!(
        model.warnings[0].contains("ignored `lm_head.weight`"),
        "{:?}",
        model.warnings
    );
}

#[test]
fn hf_rotary_inv_freq_buffers_are_ignored_with_a_warning() {
    let mut hf = to_hf(&toy_mistral_tensors(1));
    hf.push(Named {
        name: "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        shape: vec![16],
        data: random(5, 16, 1.0),
    });
    let dir = tempfile::tempdir().unwrap();
    write_toy_hf_single(dir.path(), &hf);
    let model = load(dir.path()).unwrap();
    assert_eq!(model.warnings.len(), 1);
    assert!(model.warnings[0].contains("rotary_emb.inv_freq"));
    assert_eq!(model.tensor_count, 22);
}
