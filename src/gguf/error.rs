//! One error type for everything read from a GGUF file: the file's path plus what was wrong and
//! where. A GGUF file is untrusted input, so every refusal says which field broke which rule.

use std::path::{Path, PathBuf};

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

    #[error("{field}: needs {needed} bytes at offset {offset}, but the file ends at {file_len}")]
    Truncated {
        field: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    #[error("{field}: count {count} is more than the {max} the rest of the file could hold")]
    AbsurdCount { field: String, count: u64, max: u64 },

    #[error("{field}: string is not valid UTF-8")]
    InvalidUtf8 { field: String },

    #[error("{field}: unknown metadata value type {type_id}")]
    UnknownValueType { field: String, type_id: u32 },

    #[error("{field}: bool byte is {value}, expected 0 or 1")]
    InvalidBool { field: String, value: u8 },

    #[error("{field}: arrays nested deeper than {max_depth} levels")]
    NestingTooDeep { field: String, max_depth: usize },

    #[error("metadata key '{key}' appears twice")]
    DuplicateKey { key: String },

    #[error("general.alignment is {value}; it must be a non-zero power of two")]
    BadAlignment { value: u64 },

    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },

    #[error("metadata key '{key}' holds {found}, expected {expected}")]
    WrongValueType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("metadata key '{key}': {reason}")]
    BadValue { key: String, reason: String },

    #[error("tensor '{tensor}' appears twice")]
    DuplicateTensor { tensor: String },

    #[error("tensor '{tensor}': {n_dims} dimensions (at most {max})")]
    TooManyDims {
        tensor: String,
        n_dims: u32,
        max: usize,
    },

    #[error("tensor '{tensor}': dimensions {dims:?} overflow when multiplied")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },

    #[error("tensor '{tensor}': unknown ggml type {type_id}")]
    UnknownGgmlType { tensor: String, type_id: u32 },

    #[error("tensor '{tensor}': row length {row_len} is not a multiple of the {type_name} block size {block}")]
    RowNotBlockMultiple {
        tensor: String,
        row_len: u64,
        type_name: &'static str,
        block: u64,
    },

    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{tensor}': bytes {offset}..{end} of the data section lie past its end ({data_len} bytes)")]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        end: u64,
        data_len: u64,
    },

    #[error("tensors '{first}' and '{second}' overlap in the data section")]
    OverlappingTensors { first: String, second: String },

    #[error("tensor '{tensor}': ggml type {type_name} cannot be dequantised (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)")]
    UnsupportedTensorType {
        tensor: String,
        type_name: &'static str,
    },

    #[error("architecture '{arch}' is not supported (supported: llama)")]
    UnsupportedArchitecture { arch: String },

    #[error("tensor '{tensor}' is missing")]
    MissingTensor { tensor: String },

    #[error("tensor '{tensor}' is not used by the {arch} architecture as supported here (it may need a feature this engine lacks)")]
    UnexpectedTensor { tensor: String, arch: String },

    #[error("tensor '{tensor}': shape {found:?} (row-major), expected {expected:?}")]
    TensorShape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tokenizer: {reason}")]
    Tokenizer { reason: String },

    #[error("the file has no tokenizer.chat_template")]
    NoChatTemplate,

    #[error("tokenizer.chat_template: {0}")]
    ChatTemplate(#[from] minijinja::Error),
}
