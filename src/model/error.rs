//! Why a checkpoint was refused. Every message names the file and, where there is one, the
//! tensor or key, and says what was expected, so a user can tell a corrupt download from an
//! unsupported model without reading code.

use std::path::PathBuf;

use crate::error_text::shown;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{dir}: no checkpoint found: expected params.json + consolidated.safetensors (Mistral \
         layout) or config.json + model.safetensors.index.json / model.safetensors (HF layout)"
    )]
    NoCheckpoint { dir: PathBuf },

    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: expected a JSON object, found {}", shown(.found))]
    NotAnObject { path: PathBuf, found: String },

    #[error("{path}: not a directory; pass the directory that holds the checkpoint's files")]
    NotADirectory { path: PathBuf },

    #[error("{path}: not found ({why})")]
    NotFound { path: PathBuf, why: String },

    /// A config file parsed as JSON but a key is missing, ill-typed or out of range.
    #[error("{path}: key `{}`: {}", shown(.key), shown(.message))]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// The config describes an architecture variant this engine does not implement.
    #[error("{path}: unsupported model: {}", shown(.message))]
    Unsupported { path: PathBuf, message: String },

    /// The safetensors header or the file's size is inconsistent (truncated, corrupt).
    #[error("{path}: not a valid safetensors file: {}", shown(.message))]
    Safetensors { path: PathBuf, message: String },

    #[error("{path}: tensor `{}` has dtype {}, expected {expected}", shown(.tensor), shown(.found))]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        found: String,
        expected: &'static str,
    },

    #[error("{path}: tensor `{}` has shape {found:?}, expected {expected:?}", shown(.tensor))]
    WrongShape {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{path}: tensor `{}` is missing", shown(.tensor))]
    MissingTensor { path: PathBuf, tensor: String },

    #[error(
        "{path}: unexpected tensor `{}` (not part of the {layout} layout this engine \
         implements; a different architecture or a fine-tune format it does not support)", shown(.tensor))]
    UnexpectedTensor {
        path: PathBuf,
        tensor: String,
        layout: &'static str,
    },

    #[error("{path}: tensor `{}` appears in both {path} and {other}", shown(.tensor))]
    DuplicateTensor {
        path: PathBuf,
        other: PathBuf,
        tensor: String,
    },

    /// The shard index names a tensor that its shard does not hold, or the reverse.
    #[error("{path}: {}", shown(.message))]
    Index { path: PathBuf, message: String },
}

impl LoadError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, key: &str, message: impl Into<String>) -> Self {
        LoadError::Config {
            path: path.into(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}
