//! Broken checkpoints are refused with errors that name the file, the tensor or key, and what
//! was expected (never a panic): safetensors files, shard indexes and both config formats.

mod common;

use common::checkpoints::*;
use common::*;
use nemo_engine::model::{load, LoadError};
use safetensors::Dtype;

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
            "not found (named by",
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
        &["nope", "not found (no such directory)"],
    );
    let file = dir.path().join("params.json");
    let err = refused(&file, &["params.json", "not a directory"]);
    assert!(matches!(err, LoadError::NotADirectory { .. }));
}
