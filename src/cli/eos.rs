//! The EOS token ids to stop at when the checkpoint says which they are.
//!
//! The tokenizer knows (`</s>`); without one, an HF checkpoint still names them in
//! `generation_config.json` (what transformers' `generate` uses) or `config.json`, as a number
//! or a list. The Mistral layout's params.json does not, so without tekken.json none is known.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::Value;

use nemo_engine::model::{Checkpoint, Layout};

/// The EOS ids of an HF checkpoint's config files, and the file that named them.
pub fn from_hf_config(checkpoint: &Checkpoint) -> anyhow::Result<Option<(Vec<u32>, String)>> {
    if checkpoint.layout == Layout::Mistral {
        return Ok(None);
    }
    for file in [
        checkpoint.dir.join("generation_config.json"),
        checkpoint.config_file.clone(),
    ] {
        if let Some(ids) = read_eos(&file)? {
            return Ok(Some((ids, file.display().to_string())));
        }
    }
    Ok(None)
}

fn read_eos(file: &Path) -> anyhow::Result<Option<Vec<u32>>> {
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    let ids = match json.get("eos_token_id") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items.iter().map(as_id).collect::<Option<Vec<_>>>(),
        Some(v) => as_id(v).map(|id| vec![id]),
    };
    match ids {
        Some(ids) => Ok(Some(ids)),
        None => bail!(
            "{}: key `eos_token_id`: expected a token id or a list of them, found {}",
            file.display(),
            json["eos_token_id"]
        ),
    }
}

fn as_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|id| u32::try_from(id).ok())
}
