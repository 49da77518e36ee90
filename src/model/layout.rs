//! The two published checkpoint layouts: which files a directory holds, and what each tensor
//! is called in it.
//!
//! A Hub snapshot of Mistral-Nemo-Instruct-2407 holds both layouts side by side; the Mistral
//! one (one file, tekken.json) is then preferred. Use [`Checkpoint::with_layout`] to pick.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::LoadError;
use super::params;
use super::{ModelConfig, RopeLayout};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `params.json` + `consolidated.safetensors` (+ `tekken.json`); q/k rows interleaved.
    Mistral,
    /// `config.json` + `model.safetensors.index.json` + shards (+ `tokenizer.json`).
    HfSharded,
    /// `config.json` + a single `model.safetensors` (+ `tokenizer.json`).
    HfSingle,
}

impl Layout {
    pub fn rope_layout(self) -> RopeLayout {
        match self {
            Layout::Mistral => RopeLayout::Interleaved,
            Layout::HfSharded | Layout::HfSingle => RopeLayout::RotateHalf,
        }
    }

    pub fn family(self) -> &'static str {
        match self {
            Layout::Mistral => "Mistral",
            Layout::HfSharded | Layout::HfSingle => "HF",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Mistral => "Mistral (params.json + consolidated.safetensors)",
            Layout::HfSharded => "HF (config.json + sharded model-*.safetensors)",
            Layout::HfSingle => "HF (config.json + model.safetensors)",
        })
    }
}

/// The files of one checkpoint, found but not yet read.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub layout: Layout,
    /// `params.json` or `config.json`.
    pub config_file: PathBuf,
    /// `model.safetensors.index.json` for a sharded HF checkpoint.
    pub index_file: Option<PathBuf>,
    /// The safetensors files, in a stable order.
    pub weight_files: Vec<PathBuf>,
    /// `tekken.json` / `tokenizer.json` when present: optional, prompts may be token ids.
    pub tokenizer: Option<PathBuf>,
}

impl Checkpoint {
    /// Finds the checkpoint in `dir`, preferring the Mistral layout when both are present.
    pub fn detect(dir: &Path) -> Result<Self, LoadError> {
        if dir.exists() && !dir.is_dir() {
            return Err(LoadError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        if !dir.exists() {
            return Err(LoadError::NotFound {
                path: dir.to_path_buf(),
                why: "no such directory".into(),
            });
        }
        let has = |name: &str| dir.join(name).is_file();
        let layout = if has("params.json") && has("consolidated.safetensors") {
            Layout::Mistral
        } else if has("config.json") && has("model.safetensors.index.json") {
            Layout::HfSharded
        } else if has("config.json") && has("model.safetensors") {
            Layout::HfSingle
        } else {
            return Err(LoadError::NoCheckpoint {
                dir: dir.to_path_buf(),
            });
        };
        Self::with_layout(dir, layout)
    }

    /// The checkpoint of the given layout in `dir`.
    pub fn with_layout(dir: &Path, layout: Layout) -> Result<Self, LoadError> {
        let need = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(LoadError::NotFound {
                    path,
                    why: format!("required by the {layout} layout"),
                })
            }
        };
        let optional = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
        let (config_file, index_file, weight_files, tokenizer) = match layout {
            Layout::Mistral => (
                need("params.json")?,
                None,
                vec![need("consolidated.safetensors")?],
                optional(&["tekken.json", "tokenizer.json"]),
            ),
            Layout::HfSingle => (
                need("config.json")?,
                None,
                vec![need("model.safetensors")?],
                optional(&["tokenizer.json"]),
            ),
            Layout::HfSharded => {
                let index = need("model.safetensors.index.json")?;
                let shards = shard_files(&index, dir)?;
                (
                    need("config.json")?,
                    Some(index),
                    shards,
                    optional(&["tokenizer.json"]),
                )
            }
        };
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            layout,
            config_file,
            index_file,
            weight_files,
            tokenizer,
        })
    }

    pub fn parse_config(&self) -> Result<ModelConfig, LoadError> {
        match self.layout {
            Layout::Mistral => params::parse_params_json(&self.config_file),
            Layout::HfSharded | Layout::HfSingle => params::parse_config_json(&self.config_file),
        }
    }
}

/// The shard files named by an index's `weight_map`, each checked to be a plain file name in
/// `dir` (no path traversal) that exists.
fn shard_files(index: &Path, dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let map = read_weight_map(index)?;
    let names: BTreeSet<&str> = map.iter().map(|(_, file)| file.as_str()).collect();
    names
        .into_iter()
        .map(|name| {
            if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(LoadError::Index {
                    path: index.to_path_buf(),
                    message: format!("weight_map names the file {name:?}; expected a file name in the same directory"),
                });
            }
            let path = dir.join(name);
            if !path.is_file() {
                return Err(LoadError::NotFound { path, why: format!("named by {}", index.display()) });
            }
            Ok(path)
        })
        .collect()
}

/// `weight_map` of a shard index: (tensor name, shard file name) pairs.
pub fn read_weight_map(index: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let obj = params::read_json_object(index)?;
    let bad = |message: String| LoadError::Index {
        path: index.to_path_buf(),
        message,
    };
    let Some(Value::Object(map)) = obj.get("weight_map") else {
        return Err(bad("expected a `weight_map` object".into()));
    };
    map.iter()
        .map(|(tensor, file)| match file {
            Value::String(f) => Ok((tensor.clone(), f.clone())),
            other => Err(bad(format!(
                "weight_map[\"{tensor}\"] is {other}, expected a file name"
            ))),
        })
        .collect()
}

/// What each weight is called in a layout.
pub struct TensorNames {
    layout: Layout,
}

impl TensorNames {
    pub fn new(layout: Layout) -> Self {
        TensorNames { layout }
    }

    fn hf(&self) -> bool {
        self.layout != Layout::Mistral
    }

    pub fn embedding(&self) -> String {
        if self.hf() {
            "model.embed_tokens.weight"
        } else {
            "tok_embeddings.weight"
        }
        .into()
    }

    pub fn final_norm(&self) -> String {
        if self.hf() {
            "model.norm.weight"
        } else {
            "norm.weight"
        }
        .into()
    }

    pub fn lm_head(&self) -> String {
        if self.hf() {
            "lm_head.weight"
        } else {
            "output.weight"
        }
        .into()
    }

    /// Per-layer weight name for a role (the names of `LayerWeights`' fields).
    pub fn layer(&self, i: usize, role: LayerRole) -> String {
        use LayerRole::*;
        if self.hf() {
            let suffix = match role {
                AttnNorm => "input_layernorm",
                Wq => "self_attn.q_proj",
                Wk => "self_attn.k_proj",
                Wv => "self_attn.v_proj",
                Wo => "self_attn.o_proj",
                FfnNorm => "post_attention_layernorm",
                Gate => "mlp.gate_proj",
                Up => "mlp.up_proj",
                Down => "mlp.down_proj",
            };
            format!("model.layers.{i}.{suffix}.weight")
        } else {
            let suffix = match role {
                AttnNorm => "attention_norm",
                Wq => "attention.wq",
                Wk => "attention.wk",
                Wv => "attention.wv",
                Wo => "attention.wo",
                FfnNorm => "ffn_norm",
                Gate => "feed_forward.w1",
                Up => "feed_forward.w3",
                Down => "feed_forward.w2",
            };
            format!("layers.{i}.{suffix}.weight")
        }
    }

    /// Tensors some HF checkpoints carry that this engine recomputes: ignored with a warning.
    pub fn is_ignorable(&self, name: &str) -> bool {
        self.hf() && name.ends_with(".rotary_emb.inv_freq")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerRole {
    AttnNorm,
    Wq,
    Wk,
    Wv,
    Wo,
    FfnNorm,
    Gate,
    Up,
    Down,
}

impl LayerRole {
    pub const ALL: [LayerRole; 9] = [
        LayerRole::AttnNorm,
        LayerRole::Wq,
        LayerRole::Wk,
        LayerRole::Wv,
        LayerRole::Wo,
        LayerRole::FfnNorm,
        LayerRole::Gate,
        LayerRole::Up,
        LayerRole::Down,
    ];

    /// The expected shape (`[out, in]` for linear weights) under `c`.
    pub fn shape(self, c: &ModelConfig) -> Vec<usize> {
        use LayerRole::*;
        match self {
            AttnNorm | FfnNorm => vec![c.dim],
            Wq => vec![c.q_dim(), c.dim],
            Wk | Wv => vec![c.kv_dim(), c.dim],
            Wo => vec![c.dim, c.q_dim()],
            Gate | Up => vec![c.ffn_dim, c.dim],
            Down => vec![c.dim, c.ffn_dim],
        }
    }
}
