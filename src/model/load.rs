//! Loading a checkpoint: config, headers, and a full validation of every tensor's name, dtype
//! and shape against the config before any weight is used.
//!
//! Unknown tensors are an error, not a warning: a checkpoint with extra weights (biases, q/k
//! norms, adapters) is a different architecture, and computing without them would give
//! plausible but wrong logits. Two exceptions, both recomputed or implied by the config and
//! reported in [`LoadedModel::warnings`]: HF `*.rotary_emb.inv_freq` buffers, and an
//! `lm_head.weight` saved beside `tie_word_embeddings: true` (transformers then uses the
//! embedding, and so do we).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use super::error::LoadError;
use super::layout::{read_weight_map, Checkpoint, LayerRole, TensorNames};
use super::safetensors_files::{SafetensorsFile, TensorEntry};
use super::tensor::{LayerWeights, ModelWeights, Tensor};
use super::ModelConfig;

pub struct LoadedModel {
    pub checkpoint: Checkpoint,
    pub weights: ModelWeights,
    /// Tensors that were present but deliberately not used, and why.
    pub warnings: Vec<String>,
    /// Tensors in the files (including ignored ones).
    pub tensor_count: usize,
    /// Bytes of tensor data in the files.
    pub tensor_bytes: usize,
}

/// Detects the layout in `dir` and loads it.
pub fn load(dir: &Path) -> Result<LoadedModel, LoadError> {
    load_checkpoint(Checkpoint::detect(dir)?)
}

pub fn load_checkpoint(checkpoint: Checkpoint) -> Result<LoadedModel, LoadError> {
    let config = checkpoint.parse_config()?;
    let files = checkpoint
        .weight_files
        .iter()
        .map(|p| SafetensorsFile::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let catalog = Catalog::new(&files)?;
    if let Some(index) = &checkpoint.index_file {
        catalog.check_index(index, &files)?;
    }
    // Where a missing tensor should have been: the index for sharded checkpoints.
    let missing_path = checkpoint
        .index_file
        .clone()
        .unwrap_or_else(|| checkpoint.weight_files[0].clone());

    let names = TensorNames::new(checkpoint.layout);
    let expected = expected_tensors(&names, &config);
    for (name, shape) in &expected {
        catalog.check(name, shape, &missing_path)?;
    }

    let mut warnings = Vec::new();
    let expected_names: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    for (name, (file, _)) in &catalog.entries {
        if expected_names.contains(name.as_str()) {
            continue;
        }
        let path = &files[*file].path;
        if names.is_ignorable(name) {
            warnings.push(format!(
                "{}: ignored `{name}` (RoPE frequencies are recomputed from rope_theta)",
                path.display()
            ));
        } else if config.tied_embeddings && *name == names.lm_head() {
            warnings.push(format!(
                "{}: ignored `{name}`: tie_word_embeddings is true, the embedding is the LM head",
                path.display()
            ));
        } else {
            let layout = checkpoint.layout.family();
            return Err(LoadError::UnexpectedTensor {
                path: path.clone(),
                tensor: name.clone(),
                layout,
            });
        }
    }

    // Everything is validated: build the zero-copy views.
    let get = |name: String| catalog.tensor(&files, &name);
    let layers = (0..config.n_layers)
        .map(|i| {
            let t = |role| get(names.layer(i, role));
            LayerWeights {
                attn_norm: t(LayerRole::AttnNorm),
                wq: t(LayerRole::Wq),
                wk: t(LayerRole::Wk),
                wv: t(LayerRole::Wv),
                wo: t(LayerRole::Wo),
                ffn_norm: t(LayerRole::FfnNorm),
                w_gate: t(LayerRole::Gate),
                w_up: t(LayerRole::Up),
                w_down: t(LayerRole::Down),
            }
        })
        .collect();
    let weights = ModelWeights {
        rope_layout: checkpoint.layout.rope_layout(),
        embedding: get(names.embedding()),
        layers,
        final_norm: get(names.final_norm()),
        lm_head: (!config.tied_embeddings).then(|| get(names.lm_head())),
        config,
    };
    let tensor_count = catalog.entries.len();
    let tensor_bytes = catalog.entries.values().map(|(_, e)| e.n_bytes).sum();
    Ok(LoadedModel {
        checkpoint,
        weights,
        warnings,
        tensor_count,
        tensor_bytes,
    })
}

/// Every tensor the config implies, with its shape.
fn expected_tensors(names: &TensorNames, c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![(names.embedding(), vec![c.vocab_size, c.dim])];
    for i in 0..c.n_layers {
        for role in LayerRole::ALL {
            out.push((names.layer(i, role), role.shape(c)));
        }
    }
    out.push((names.final_norm(), vec![c.dim]));
    if !c.tied_embeddings {
        out.push((names.lm_head(), vec![c.vocab_size, c.dim]));
    }
    out
}

/// All tensors of all files of a checkpoint: name -> (file index, entry).
struct Catalog {
    entries: BTreeMap<String, (usize, TensorEntry)>,
    paths: Vec<PathBuf>,
}

impl Catalog {
    fn new(files: &[SafetensorsFile]) -> Result<Self, LoadError> {
        let mut entries: BTreeMap<String, (usize, TensorEntry)> = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for (name, entry) in &file.tensors {
                if let Some((other, _)) = entries.insert(name.clone(), (i, entry.clone())) {
                    return Err(LoadError::DuplicateTensor {
                        path: file.path.clone(),
                        other: files[other].path.clone(),
                        tensor: name.clone(),
                    });
                }
            }
        }
        Ok(Catalog {
            entries,
            paths: files.iter().map(|f| f.path.clone()).collect(),
        })
    }

    /// The index and the shards must agree tensor by tensor: a mismatch means a partial or
    /// mixed download.
    fn check_index(&self, index: &Path, files: &[SafetensorsFile]) -> Result<(), LoadError> {
        let bad = |message: String| LoadError::Index {
            path: index.to_path_buf(),
            message,
        };
        let weight_map: BTreeMap<String, String> = read_weight_map(index)?.into_iter().collect();
        for (tensor, shard) in &weight_map {
            match self.entries.get(tensor) {
                None => {
                    return Err(bad(format!(
                        "tensor `{tensor}` is listed in shard {shard}, which does not hold it"
                    )))
                }
                Some((i, _)) if !files[*i].path.ends_with(shard) => {
                    return Err(bad(format!(
                        "tensor `{tensor}` is listed in shard {shard} but found in {}",
                        files[*i].path.display()
                    )));
                }
                Some(_) => {}
            }
        }
        for (tensor, (i, _)) in &self.entries {
            if !weight_map.contains_key(tensor) {
                return Err(bad(format!(
                    "{} holds tensor `{tensor}`, which the index does not list",
                    files[*i].path.display()
                )));
            }
        }
        Ok(())
    }

    fn check(&self, name: &str, shape: &[usize], missing_path: &Path) -> Result<(), LoadError> {
        let Some((file, entry)) = self.entries.get(name) else {
            return Err(LoadError::MissingTensor {
                path: missing_path.to_path_buf(),
                tensor: name.to_string(),
            });
        };
        let path = self.paths[*file].clone();
        if entry.dtype != Dtype::BF16 {
            return Err(LoadError::WrongDtype {
                path: path.clone(),
                tensor: name.to_string(),
                found: entry.dtype.to_string(),
                expected: "BF16",
            });
        }
        if entry.shape != shape {
            return Err(LoadError::WrongShape {
                path,
                tensor: name.to_string(),
                found: entry.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(())
    }

    fn tensor(&self, files: &[SafetensorsFile], name: &str) -> Tensor {
        let (file, entry) = &self.entries[name];
        files[*file].bf16_tensor(name, entry)
    }
}
