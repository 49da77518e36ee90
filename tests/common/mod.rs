//! Test helpers: a small random Mistral-architecture model written in both checkpoint layouts,
//! and safetensors writing. Each test binary uses a subset.
#![allow(dead_code)]

pub mod checkpoints;
pub mod reference;
pub mod tiny_tekken;

use std::path::Path;

use half::bf16;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Nemo's quirks at toy size: head_dim (32) != dim / n_heads (16), GQA 2:1, theta 1e6.
pub const TOY_PARAMS_JSON: &str = r#"{"dim": 64, "n_layers": 2, "head_dim": 32, "hidden_dim": 96,
 "n_heads": 4, "n_kv_heads": 2, "norm_eps": 1e-05, "vocab_size": 50, "rope_theta": 1000000.0}"#;

pub const TOY_CONFIG_JSON: &str = r#"{"architectures": ["MistralForCausalLM"], "model_type": "mistral",
 "hidden_size": 64, "num_hidden_layers": 2, "head_dim": 32, "intermediate_size": 96,
 "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-05, "vocab_size": 50,
 "rope_theta": 1000000.0, "hidden_act": "silu", "tie_word_embeddings": false, "sliding_window": null,
 "max_position_embeddings": 1024000, "torch_dtype": "bfloat16"}"#;

pub struct Toy {
    pub dim: usize,
    pub n_layers: usize,
    pub head_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
}

pub const TOY: Toy = Toy {
    dim: 64,
    n_layers: 2,
    head_dim: 32,
    n_heads: 4,
    n_kv_heads: 2,
    ffn: 96,
    vocab: 50,
};

/// A named bf16 tensor (`[out, in]` for linear weights).
pub struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<bf16>,
}

/// Deterministic pseudo-random values in [-scale, scale) (splitmix64).
pub fn random(seed: u64, n: usize, scale: f32) -> Vec<bf16> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
            bf16::from_f32((2.0 * u - 1.0) * scale)
        })
        .collect()
}

/// HF's `permute_for_rope` applied to the rows of a q/k weight: within each head, row
/// `2i + p` (interleaved pair i) moves to `p * head_dim/2 + i` (rotate-half pair i).
pub fn permute_for_rope(w: &[bf16], n_heads: usize, head_dim: usize, in_dim: usize) -> Vec<bf16> {
    let half = head_dim / 2;
    let mut out = vec![bf16::ZERO; w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for p in 0..2 {
                let src = (h * head_dim + 2 * i + p) * in_dim;
                let dst = (h * head_dim + p * half + i) * in_dim;
                out[dst..dst + in_dim].copy_from_slice(&w[src..src + in_dim]);
            }
        }
    }
    out
}

/// The toy model in the Mistral layout (q/k rows interleaved), in Mistral names.
pub fn toy_mistral_tensors(seed: u64) -> Vec<Named> {
    let t = &TOY;
    let mut out = Vec::new();
    let mut k = seed;
    let mut push = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        k += 1;
        let n = shape.iter().product();
        let data = random(k, n, scale)
            .into_iter()
            .map(|v| bf16::from_f32(v.to_f32() + offset))
            .collect();
        out.push(Named { name, shape, data });
    };
    push(
        "tok_embeddings.weight".into(),
        vec![t.vocab, t.dim],
        1.0,
        0.0,
    );
    let (q, kv) = (t.n_heads * t.head_dim, t.n_kv_heads * t.head_dim);
    for i in 0..t.n_layers {
        let p = |s: &str| format!("layers.{i}.{s}.weight");
        push(p("attention_norm"), vec![t.dim], 0.2, 1.0);
        // Large enough q/k that attention is far from uniform, so RoPE errors would show.
        push(p("attention.wq"), vec![q, t.dim], 0.6, 0.0);
        push(p("attention.wk"), vec![kv, t.dim], 0.6, 0.0);
        push(p("attention.wv"), vec![kv, t.dim], 0.2, 0.0);
        push(p("attention.wo"), vec![t.dim, q], 0.2, 0.0);
        push(p("ffn_norm"), vec![t.dim], 0.2, 1.0);
        push(p("feed_forward.w1"), vec![t.ffn, t.dim], 0.2, 0.0);
        push(p("feed_forward.w2"), vec![t.dim, t.ffn], 0.2, 0.0);
        push(p("feed_forward.w3"), vec![t.ffn, t.dim], 0.2, 0.0);
    }
    push("norm.weight".into(), vec![t.dim], 0.2, 1.0);
    push("output.weight".into(), vec![t.vocab, t.dim], 0.3, 0.0);
    out
}

/// The same model in HF names, q/k permuted for rotate-half RoPE.
pub fn to_hf(tensors: &[Named]) -> Vec<Named> {
    let t = &TOY;
    tensors
        .iter()
        .map(|x| {
            let name = hf_name(&x.name);
            let data = if x.name.ends_with("attention.wq.weight") {
                permute_for_rope(&x.data, t.n_heads, t.head_dim, t.dim)
            } else if x.name.ends_with("attention.wk.weight") {
                permute_for_rope(&x.data, t.n_kv_heads, t.head_dim, t.dim)
            } else {
                x.data.clone()
            };
            Named {
                name,
                shape: x.shape.clone(),
                data,
            }
        })
        .collect()
}

fn hf_name(mistral: &str) -> String {
    let simple = [
        ("tok_embeddings.weight", "model.embed_tokens.weight"),
        ("norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, hf)) = simple.iter().find(|(m, _)| *m == mistral) {
        return hf.to_string();
    }
    let rest = mistral.strip_prefix("layers.").expect("layer tensor");
    let (i, suffix) = rest.split_once('.').unwrap();
    let role = match suffix {
        "attention_norm.weight" => "input_layernorm",
        "attention.wq.weight" => "self_attn.q_proj",
        "attention.wk.weight" => "self_attn.k_proj",
        "attention.wv.weight" => "self_attn.v_proj",
        "attention.wo.weight" => "self_attn.o_proj",
        "ffn_norm.weight" => "post_attention_layernorm",
        "feed_forward.w1.weight" => "mlp.gate_proj",
        "feed_forward.w2.weight" => "mlp.down_proj",
        "feed_forward.w3.weight" => "mlp.up_proj",
        other => panic!("unknown {other}"),
    };
    format!("model.layers.{i}.{role}.weight")
}

pub fn bf16_bytes(v: &[bf16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes tensors of any dtype: (name, dtype, shape, raw little-endian bytes).
pub fn write_raw(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

pub fn write_bf16(path: &Path, tensors: &[Named]) {
    let raw: Vec<_> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                Dtype::BF16,
                t.shape.clone(),
                bf16_bytes(&t.data),
            )
        })
        .collect();
    write_raw(path, &raw);
}

/// Writes the toy model in the Mistral layout into `dir`.
pub fn write_toy_mistral(dir: &Path, tensors: &[Named]) {
    std::fs::write(dir.join("params.json"), TOY_PARAMS_JSON).unwrap();
    write_bf16(&dir.join("consolidated.safetensors"), tensors);
}

/// Writes HF tensors as two shards plus an index into `dir`.
pub fn write_toy_hf_sharded(dir: &Path, hf: &[Named]) {
    std::fs::write(dir.join("config.json"), TOY_CONFIG_JSON).unwrap();
    let (a, b) = hf.split_at(hf.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut map = serde_json::Map::new();
    for (shard, name) in [a, b].iter().zip(names) {
        write_bf16(&dir.join(name), shard);
        for t in *shard {
            map.insert(t.name.clone(), name.into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// Writes HF tensors as a single `model.safetensors` into `dir`.
pub fn write_toy_hf_single(dir: &Path, hf: &[Named]) {
    std::fs::write(dir.join("config.json"), TOY_CONFIG_JSON).unwrap();
    write_bf16(&dir.join("model.safetensors"), hf);
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
