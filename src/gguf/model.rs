//! The `llama` architecture: config from `llama.*` metadata, weights from the `blk.N.*` tensors,
//! dequantised to owned bf16 at load.
//!
//! q/k row order: llama.cpp's converter (`convert_hf_to_gguf.py`, `LlamaModel.permute`) reorders
//! each head's rows of HF's `q_proj`/`k_proj` so that GGUF row `2i` is HF row `i` and GGUF row
//! `2i + 1` is HF row `i + head_dim / 2`: HF's rotate-half pairs become adjacent pairs. The
//! weights are therefore in [`RopeLayout::Interleaved`] order, as in Mistral's consolidated
//! checkpoints (pinned against transformers' un-permuted tensors in `tests/gguf_smollm2.rs`).

use std::collections::HashSet;

use super::error::{GgufError, GgufErrorKind};
use super::quant::{dequantize_bf16, is_supported};
use super::reader::GgufFile;
use crate::model::config::DEFAULT_MAX_CONTEXT;
use crate::model::params::{MAX_DIM, MAX_FFN_DIM, MAX_HEADS, MAX_HEAD_DIM, MAX_LAYERS, MAX_VOCAB};
use crate::model::{LayerWeights, ModelConfig, ModelWeights, RopeLayout, Tensor, TensorData};

const ARCH: &str = "llama";
pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";

/// `blk.{layer}.{role}.weight`
pub fn layer_tensor(layer: usize, role: &str) -> String {
    format!("blk.{layer}.{role}.weight")
}

/// The model's hyper-parameters from `llama.*` metadata, as llama.cpp reads them.
pub fn llama_config(file: &GgufFile) -> Result<ModelConfig, GgufError> {
    let arch = file.architecture()?;
    if arch != ARCH {
        return Err(file.error(GgufErrorKind::UnsupportedArchitecture { arch: arch.into() }));
    }
    let bad = |key: &str, reason: String| {
        file.error(GgufErrorKind::BadValue {
            key: key.into(),
            reason,
        })
    };
    let key = |k: &str| format!("{ARCH}.{k}");
    // A positive count below the limit every config reader applies (src/model/params.rs): a
    // count sizes allocations (one `LayerWeights` per block) before any tensor is looked at.
    let count = |k: &str, v: u64, max: usize| -> Result<usize, GgufError> {
        if v == 0 || v > max as u64 {
            return Err(bad(k, format!("{v} is out of range (1..={max})")));
        }
        Ok(v as usize)
    };
    let req = |k: &str, max: usize| -> Result<usize, GgufError> {
        count(&key(k), file.u64(&key(k))?, max)
    };
    let opt = |k: &str, max: usize| -> Result<Option<usize>, GgufError> {
        file.opt_u64(&key(k))?
            .map(|v| count(&key(k), v, max))
            .transpose()
    };

    let dim = req("embedding_length", MAX_DIM)?;
    let n_layers = req("block_count", MAX_LAYERS)?;
    let n_heads = req("attention.head_count", MAX_HEADS)?;
    let n_kv_heads = opt("attention.head_count_kv", MAX_HEADS)?.unwrap_or(n_heads);
    let ffn_dim = req("feed_forward_length", MAX_FFN_DIM)?;
    if n_heads % n_kv_heads != 0 {
        return Err(bad(
            &key("attention.head_count_kv"),
            format!("{n_kv_heads} does not divide head_count {n_heads}"),
        ));
    }
    // llama.cpp: head size is key_length, else dim / heads; RoPE must cover the whole head.
    let head_dim = match opt("attention.key_length", MAX_HEAD_DIM)? {
        Some(k) => k,
        None if dim % n_heads == 0 => dim / n_heads,
        None => {
            return Err(bad(
                &key("attention.head_count"),
                format!("{n_heads} does not divide embedding_length {dim}"),
            ))
        }
    };
    if let Some(v) = opt("attention.value_length", MAX_HEAD_DIM)? {
        if v != head_dim {
            return Err(bad(
                &key("attention.value_length"),
                format!("{v} differs from the key length {head_dim}"),
            ));
        }
    }
    if let Some(r) = opt("rope.dimension_count", MAX_HEAD_DIM)? {
        if r != head_dim {
            return Err(bad(
                &key("rope.dimension_count"),
                format!("{r}: partial RoPE is not supported (head_dim {head_dim})"),
            ));
        }
    }
    if head_dim % 2 != 0 {
        return Err(bad(
            &key("attention.key_length"),
            format!("head_dim {head_dim} is odd; RoPE needs pairs"),
        ));
    }
    if let Some(kind) = file.opt_str(&key("rope.scaling.type"))? {
        if kind != "none" {
            return Err(bad(
                &key("rope.scaling.type"),
                format!("'{kind}': RoPE scaling is not supported"),
            ));
        }
    }
    let rope_theta = file.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);
    if !(rope_theta.is_finite() && rope_theta > 1.0) {
        return Err(bad(
            &key("rope.freq_base"),
            format!("{rope_theta} is not a usable RoPE base"),
        ));
    }
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let norm_eps = file.opt_f64(&eps_key)?.ok_or_else(|| {
        file.error(GgufErrorKind::MissingKey {
            key: eps_key.clone(),
        })
    })?;
    // Checked as the f32 the norm uses: 1e-75 is positive in f64 and 0 in f32.
    if !(norm_eps.is_finite() && norm_eps as f32 >= f32::MIN_POSITIVE) {
        return Err(bad(&eps_key, format!("{norm_eps} is not a usable epsilon")));
    }
    let vocab_size = file.string_array("tokenizer.ggml.tokens")?.len();
    if vocab_size == 0 || vocab_size > MAX_VOCAB {
        return Err(bad(
            "tokenizer.ggml.tokens",
            format!("{vocab_size} tokens is out of range (1..={MAX_VOCAB})"),
        ));
    }
    if let Some(v) = opt("vocab_size", MAX_VOCAB)? {
        if v != vocab_size {
            return Err(bad(
                &key("vocab_size"),
                format!("{v} differs from the {vocab_size} tokens in tokenizer.ggml.tokens"),
            ));
        }
    }
    // The trained context bounds positions; never more than the engine's default.
    let max_context = opt("context_length", u32::MAX as usize)?
        .unwrap_or(DEFAULT_MAX_CONTEXT)
        .min(DEFAULT_MAX_CONTEXT);

    Ok(ModelConfig {
        dim,
        n_layers,
        head_dim,
        n_heads,
        n_kv_heads,
        ffn_dim,
        vocab_size,
        rope_theta,
        norm_eps: norm_eps as f32,
        max_context,
        tied_embeddings: file.tensor(OUTPUT).is_none(),
    })
}

/// Every weight of a `llama` GGUF, validated against the config and dequantised to bf16.
/// A tensor the architecture does not use is refused: it would mean a feature we lack.
pub fn load_llama(file: &GgufFile) -> Result<ModelWeights, GgufError> {
    let config = llama_config(file)?;
    let c = &config;
    let mut loader = Loader {
        file,
        used: HashSet::new(),
    };
    let embedding = loader.load(TOKEN_EMBD, &[c.vocab_size, c.dim])?;
    let mut layers = Vec::with_capacity(c.n_layers);
    for i in 0..c.n_layers {
        let mut t = |role: &str, shape: &[usize]| loader.load(&layer_tensor(i, role), shape);
        layers.push(LayerWeights {
            attn_norm: t("attn_norm", &[c.dim])?,
            wq: t("attn_q", &[c.q_dim(), c.dim])?,
            wk: t("attn_k", &[c.kv_dim(), c.dim])?,
            wv: t("attn_v", &[c.kv_dim(), c.dim])?,
            wo: t("attn_output", &[c.dim, c.q_dim()])?,
            ffn_norm: t("ffn_norm", &[c.dim])?,
            w_gate: t("ffn_gate", &[c.ffn_dim, c.dim])?,
            w_up: t("ffn_up", &[c.ffn_dim, c.dim])?,
            w_down: t("ffn_down", &[c.dim, c.ffn_dim])?,
        });
    }
    let final_norm = loader.load(OUTPUT_NORM, &[c.dim])?;
    let lm_head = if c.tied_embeddings {
        None
    } else {
        Some(loader.load(OUTPUT, &[c.vocab_size, c.dim])?)
    };
    if let Some(extra) = file
        .tensors()
        .iter()
        .find(|t| !loader.used.contains(t.name.as_str()))
    {
        return Err(file.error(GgufErrorKind::UnexpectedTensor {
            tensor: extra.name.clone(),
            arch: ARCH.into(),
        }));
    }
    Ok(ModelWeights {
        config,
        rope_layout: RopeLayout::Interleaved,
        embedding,
        layers,
        final_norm,
        lm_head,
    })
}

struct Loader<'f> {
    file: &'f GgufFile,
    used: HashSet<String>,
}

impl Loader<'_> {
    fn load(&mut self, name: &str, expected: &[usize]) -> Result<Tensor, GgufError> {
        let file = self.file;
        let info = file.tensor(name).ok_or_else(|| {
            file.error(GgufErrorKind::MissingTensor {
                tensor: name.into(),
            })
        })?;
        // Shape first: the expected sizes come from the config, so nothing is decoded (or
        // allocated) for a tensor that does not match it.
        let shape = info.shape();
        if shape != expected {
            return Err(file.error(GgufErrorKind::TensorShape {
                tensor: name.into(),
                expected: expected.to_vec(),
                found: shape,
            }));
        }
        if !is_supported(info.ggml_type) {
            return Err(file.error(GgufErrorKind::UnsupportedTensorType {
                tensor: name.into(),
                type_name: info.ggml_type.name,
            }));
        }
        let data = dequantize_bf16(info.ggml_type, file.tensor_bytes(info))
            .expect("type checked as supported");
        self.used.insert(name.to_owned());
        Ok(Tensor {
            name: name.into(),
            shape,
            data: TensorData::Owned(data),
        })
    }
}
