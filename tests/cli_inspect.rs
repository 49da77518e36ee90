//! `nemo inspect` on both fixture layouts prints the right numbers, each computed here
//! independently from the files (config JSON, safetensors headers).

mod cli_support;

use std::path::Path;

use cli_support::{fixture_dir, nemo};
use safetensors::SafeTensors;
use serde_json::Value;

/// Tensor count and data bytes, straight from the safetensors headers of `files`.
fn count_tensors(files: &[&Path]) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    for file in files {
        let data = std::fs::read(file).unwrap();
        let st = SafeTensors::deserialize(&data).unwrap();
        for (_, view) in st.tensors() {
            count += 1;
            bytes += view.data().len();
        }
    }
    (count, bytes)
}

/// The value after `label:` on the line that starts with it.
fn field<'a>(out: &'a str, label: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("{label}:")))
        .map(str::trim)
        .collect()
}

fn check(dir: &Path, layout: &str, config: &Value, keys: [&str; 6], files: &[&Path]) {
    let run = nemo(&["inspect", "--model", dir.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let out = &run.stdout;
    let num = |k: &str| config[k].as_u64().unwrap();
    let [dim, layers, heads, kv_heads, ffn, vocab] = keys.map(num);
    let head_dim = num("head_dim");

    assert!(field(out, "layout")[0].starts_with(layout), "{out}");
    assert_eq!(field(out, "dim"), [dim.to_string()]);
    assert_eq!(field(out, "layers"), [layers.to_string()]);
    assert_eq!(
        field(out, "heads"),
        [format!("{heads} query, {kv_heads} KV, head_dim {head_dim}")]
    );
    assert_eq!(field(out, "ffn_dim"), [ffn.to_string()]);
    assert_eq!(field(out, "vocab"), [vocab.to_string()]);
    assert_eq!(
        field(out, "rope_theta"),
        [config["rope_theta"].as_f64().unwrap().to_string()]
    );
    assert_eq!(
        field(out, "context"),
        ["131072 tokens"],
        "never max_position_embeddings"
    );
    assert_eq!(
        field(out, "tokenizer"),
        ["none (prompts must be given as token ids)"]
    );

    let (count, bytes) = count_tensors(files);
    // 9 per layer + embedding + final norm + untied LM head.
    assert_eq!(count as u64, 9 * layers + 3);
    assert_eq!(field(out, "tensors"), [count.to_string()]);
    let weights = field(out, "weights");
    assert!(
        weights
            .iter()
            .any(|w| w.ends_with(&format!("({bytes} bytes)"))),
        "{out}"
    );
    // bf16 K and V, every layer, 131072 tokens; as FP8, a byte a value and an f32 scale per KV
    // head row.
    let kv = 2 * layers * kv_heads * head_dim * 2 * 131072;
    let fp8 = 2 * layers * kv_heads * (head_dim + 4) * 131072;
    let gib = |b: u64| format!("{:.2} GiB ({b} bytes)", b as f64 / (1u64 << 30) as f64);
    assert_eq!(
        field(out, "KV cache"),
        [format!("{} for 131072 tokens (bf16; {} with --kv-cache-dtype fp8)", gib(kv), gib(fp8))]
    );
}

#[test]
fn inspect_hf_layout() {
    let dir = fixture_dir().join("hf");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let shards = [
        dir.join("model-00001-of-00002.safetensors"),
        dir.join("model-00002-of-00002.safetensors"),
    ];
    let keys = [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
    ];
    check(&dir, "HF", &config, keys, &[&shards[0], &shards[1]]);
}

#[test]
fn inspect_mistral_layout() {
    let dir = fixture_dir().join("mistral");
    let params: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("params.json")).unwrap()).unwrap();
    let keys = [
        "dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "hidden_dim",
        "vocab_size",
    ];
    check(
        &dir,
        "Mistral",
        &params,
        keys,
        &[&dir.join("consolidated.safetensors")],
    );
}
