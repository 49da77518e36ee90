//! One error type for everything read from a GGUF file: the file's path plus what was wrong and
//! where. A GGUF file is untrusted input, so every refusal says which field broke which rule,
//! and names read from the file are shown through [`shown`] (escaped, length-capped).

use std::path::{Path, PathBuf};

use crate::error_text::shown;

#[derive(Debug, thiserror::Error)]
#[error("GGUF file {}: {kind}", path.display())]
pub struct GgufError {
    pub path: PathBuf,
    pub kind: GgufErrorKind,
}

impl GgufError {
    pub fn new(path: &Path, kind: GgufErrorKind) -> Self {
        GgufError {
            path: path.to_path_buf(),
            kind,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GgufErrorKind {
    #[error("cannot open or map the file: {0}")]
    Io(#[from] std::io::Error),

    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },

    #[error("big-endian GGUF (version bytes {version:#010x}) is not supported; convert it on a little-endian host")]
    BigEndian { version: u32 },

    #[error("unsupported GGUF version {version} (supported: 2 and 3; re-convert version 1 files)")]
    UnsupportedVersion { version: u32 },

    #[error("{}: needs {needed} bytes at offset {offset}, but the file ends at {file_len}", shown(.field))]
    Truncated {
        field: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    #[error("{}: count {count} is more than the {max} the rest of the file could hold", shown(.field))]
    AbsurdCount { field: String, count: u64, max: u64 },

    #[error("{}: string is not valid UTF-8", shown(.field))]
    InvalidUtf8 { field: String },

    #[error("{}: unknown metadata value type {type_id}", shown(.field))]
    UnknownValueType { field: String, type_id: u32 },

    #[error("{}: bool byte is {value}, expected 0 or 1", shown(.field))]
    InvalidBool { field: String, value: u8 },

    #[error("{}: arrays nested deeper than {max_depth} levels", shown(.field))]
    NestingTooDeep { field: String, max_depth: usize },

    #[error("metadata key '{}' appears twice", shown(.key))]
    DuplicateKey { key: String },

    #[error("general.alignment is {value}; it must be a non-zero power of two")]
    BadAlignment { value: u64 },

    #[error("metadata key '{}' is missing", shown(.key))]
    MissingKey { key: String },

    #[error("metadata key '{}' holds {found}, expected {expected}", shown(.key))]
    WrongValueType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("metadata key '{}': {}", shown(.key), shown(.reason))]
    BadValue { key: String, reason: String },

    #[error("tensor '{}' appears twice", shown(.tensor))]
    DuplicateTensor { tensor: String },

    #[error("tensor '{}': {n_dims} dimensions (at most {max})", shown(.tensor))]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        max: usize,
    },

    #[error("tensor '{}': dimensions {dims:?} overflow when multiplied", shown(.tensor))]
    ShapeOverflow { tensor: String, dims: Vec<u64> },

    #[error("tensor '{}': unknown ggml type {type_id}", shown(.tensor))]
    UnknownGgmlType { tensor: String, type_id: u32 },

    #[error("tensor '{}': row length {row_len} is not a multiple of the {type_name} block size {block}", shown(.tensor))]
    RowNotBlockMultiple {
        tensor: String,
        row_len: u64,
        type_name: &'static str,
        block: u64,
    },

    #[error(
        "tensor '{}': data offset {offset} is not a multiple of the alignment {alignment}",
        shown(.tensor)
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{}': bytes {offset}..{end} of the data section lie past its end ({data_len} bytes)", shown(.tensor))]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        end: u64,
        data_len: u64,
    },

    #[error("tensors '{}' and '{}' overlap in the data section", shown(.first), shown(.second))]
    OverlappingTensors { first: String, second: String },

    #[error("tensor '{}': ggml type {type_name} cannot be dequantised (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)", shown(.tensor))]
    UnsupportedTensorType {
        tensor: String,
        type_name: &'static str,
    },

    #[error("architecture '{}' is not supported (supported: llama)", shown(.arch))]
    UnsupportedArchitecture { arch: String },

    #[error("tensor '{}' is missing", shown(.tensor))]
    MissingTensor { tensor: String },

    #[error("tensor '{}' is not used by the {} architecture as supported here (it may need a feature this engine lacks)", shown(.tensor), shown(.arch))]
    UnexpectedTensor { tensor: String, arch: String },

    #[error("tensor '{}': shape {found:?} (row-major), expected {expected:?}", shown(.tensor))]
    TensorShape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tokenizer: {}", shown(.reason))]
    Tokenizer { reason: String },

    #[error("the file has no tokenizer.chat_template")]
    NoChatTemplate,

    #[error("tokenizer.chat_template: {}", shown(&.0.to_string()))]
    ChatTemplate(#[from] minijinja::Error),
}
