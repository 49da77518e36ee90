//! Loading both layouts of a toy checkpoint: config from either format, zero-copy tensors,
//! layout detection, tied heads, and the `nemo inspect` summary.

mod common;

use common::checkpoints::*;
use common::*;
use nemo_engine::model::{inspect, load, Layout, RopeLayout, TensorData};

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
    // fp8: a byte a value and 4 bytes of scale per KV head row (2 heads of 32).
    assert_eq!(s.kv_bytes_128k_fp8, 131_072 * 2 * 2 * (64 + 2 * 4));
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
