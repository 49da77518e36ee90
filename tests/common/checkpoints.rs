//! Toy checkpoints to break, and the check that a load is refused with a clear message.

use std::path::Path;

use nemo_engine::model::{load, LoadError};
use safetensors::Dtype;
use tempfile::TempDir;

use super::*;

pub fn mistral_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_toy_mistral(dir.path(), &toy_mistral_tensors(1));
    dir
}

pub fn hf_sharded_dir() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_toy_hf_sharded(dir.path(), &to_hf(&toy_mistral_tensors(1)));
    dir
}

/// The error's message, checked to contain every expected fragment.
pub fn refused(dir: &Path, fragments: &[&str]) -> LoadError {
    let err = match load(dir) {
        Ok(_) => panic!(
            "{} loaded, expected an error containing {fragments:?}",
            dir.display()
        ),
        Err(e) => e,
    };
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "error {msg:?} does not mention {f:?}");
    }
    err
}

pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(path, v.to_string()).unwrap();
}

/// Rewrites the Mistral toy with `change` applied to its tensor list (name, dtype, shape, bytes).
pub fn mistral_with(
    change: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> TempDir {
    let dir = mistral_dir();
    let mut raw: Vec<_> = toy_mistral_tensors(1)
        .into_iter()
        .map(|t| (t.name, Dtype::BF16, t.shape, bf16_bytes(&t.data)))
        .collect();
    change(&mut raw);
    write_raw(&dir.path().join("consolidated.safetensors"), &raw);
    dir
}
