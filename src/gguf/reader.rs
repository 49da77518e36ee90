//! Parse a GGUF file: header, metadata, tensor table, data section. The file is memory-mapped and
//! every count, length, offset and shape is checked against the file's size before use, so a
//! hostile file is refused with a [`GgufError`] rather than a panic, an out-of-bounds read or an
//! allocation sized by a header field.
//!
//! Shapes: GGUF stores `ne[0..n_dims]` innermost first (`ne[0]` is the row length, contiguous
//! in memory). [`TensorInfo::shape`] reverses them into our row-major convention, outermost
//! first, so a linear weight stored as `ne = [in, out]` is `[out, in]` as in PyTorch, with the
//! same bytes and no transposition.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::Cursor;
use super::error::{GgufError, GgufErrorKind};
use super::header::{align_up, GgmlType, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, SUPPORTED_VERSIONS};
use super::value::{Array, Value};

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `ne[0]` is the innermost (row) length.
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset inside the data section (a multiple of the alignment).
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape, outermost first (`ne` reversed).
    pub fn shape(&self) -> Vec<usize> {
        // Each ne fits in usize: their product was checked against the file size.
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> u64 {
        self.ne.iter().product()
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// A parsed GGUF file; tensor bytes are read from the mapping on demand.
pub struct GgufFile {
    pub path: PathBuf,
    bytes: Bytes,
    pub version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let io = |e| GgufError::new(path, GgufErrorKind::Io(e));
        let file = File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private to this process. Another process
        // truncating the file while it is mapped could fault; model files are not rewritten in
        // place while loaded, and all tensor data is copied out (dequantised) at load.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Bytes::Mapped(map))
    }

    /// Parse bytes already in memory; `path` only labels errors (tests, embedded files).
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path.as_ref(), Bytes::Owned(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<Self, GgufError> {
        let raw: &[u8] = match &bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        };
        let err = |kind| GgufError::new(path, kind);
        let mut c = Cursor::new(raw, path);

        let magic = c.take(4, &|| "magic".into())?;
        if magic != MAGIC {
            return Err(err(GgufErrorKind::BadMagic {
                found: magic.to_vec(),
            }));
        }
        let version = c.u32(&|| "version".into())?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            if SUPPORTED_VERSIONS.contains(&version.swap_bytes()) {
                return Err(err(GgufErrorKind::BigEndian { version }));
            }
            return Err(err(GgufErrorKind::UnsupportedVersion { version }));
        }
        let tensor_count = c.u64(&|| "tensor_count".into())?;
        let kv_count = c.u64(&|| "kv_count".into())?;
        // Smallest metadata entry: empty key (8) + type (4) + a u8 value (1). Smallest tensor
        // entry: empty name (8) + n_dims (4) + type (4) + offset (8).
        c.check_count(kv_count, 13, &|| "kv_count".into())?;

        let mut metadata = Vec::new();
        let mut index = HashMap::new();
        for i in 0..kv_count {
            let key = c.string(&|| format!("metadata[{i}] key"))?;
            let field = || format!("metadata '{key}'");
            let ty = c.value_type(&field)?;
            let value = c.value(ty, &field)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(err(GgufErrorKind::DuplicateKey { key }));
            }
            metadata.push((key, value));
        }
        c.check_count(tensor_count, 24, &|| "tensor_count".into())?;

        let alignment = match metadata_get(&metadata, &index, "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                Some(a) => return Err(err(GgufErrorKind::BadAlignment { value: a })),
                None => {
                    return Err(err(GgufErrorKind::WrongValueType {
                        key: "general.alignment".into(),
                        expected: "an unsigned integer",
                        found: v.describe(),
                    }))
                }
            },
        };

        let mut tensors = Vec::new();
        let mut tensor_index = HashMap::new();
        for i in 0..tensor_count {
            let info = read_tensor_info(&mut c, i)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                return Err(err(GgufErrorKind::DuplicateTensor { tensor: info.name }));
            }
            tensors.push(info);
        }

        let file_len = raw.len() as u64;
        let data_offset = align_up(c.pos(), alignment).unwrap_or(u64::MAX);
        if !tensors.is_empty() && data_offset > file_len {
            return Err(err(GgufErrorKind::Truncated {
                field: "padding before the data section".into(),
                offset: c.pos(),
                needed: data_offset - c.pos(),
                file_len,
            }));
        }
        check_tensor_placement(
            path,
            &tensors,
            alignment,
            file_len.saturating_sub(data_offset),
        )?;

        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError::new(&self.path, kind)
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        metadata_get(&self.metadata, &self.index, key)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's bytes (bounds were checked at parse).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let raw: &[u8] = match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        };
        let start = (self.data_offset + info.offset) as usize;
        &raw[start..start + info.n_bytes as usize]
    }

    // Typed metadata access: a missing key and a wrong type are different errors.

    fn wrong_type(&self, key: &str, expected: &'static str, v: &Value) -> GgufError {
        self.error(GgufErrorKind::WrongValueType {
            key: key.into(),
            expected,
            found: v.describe(),
        })
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key)
            .ok_or_else(|| self.error(GgufErrorKind::MissingKey { key: key.into() }))
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.wrong_type(key, "an unsigned integer", v))
            })
            .transpose()
    }

    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "an unsigned integer", v))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong_type(key, "a float", v)))
            .transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", v)))
            .transpose()
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong_type(key, "a string", v))
            })
            .transpose()
    }

    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .ok_or_else(|| self.wrong_type(key, "an array", v))
            })
            .transpose()
    }

    pub fn string_array(&self, key: &str) -> Result<&[String], GgufError> {
        match self.require(key)? {
            Value::Array(Array::String(v)) => Ok(v),
            v => Err(self.wrong_type(key, "an array of strings", v)),
        }
    }

    /// `general.architecture`, which prefixes the architecture's own keys (`llama.*`).
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.str("general.architecture")
    }
}

fn metadata_get<'m>(
    metadata: &'m [(String, Value)],
    index: &HashMap<String, usize>,
    key: &str,
) -> Option<&'m Value> {
    index.get(key).map(|&i| &metadata[i].1)
}

/// name, n_dims u32, ne[n_dims] u64, ggml type u32, offset u64.
fn read_tensor_info(c: &mut Cursor, i: u64) -> Result<TensorInfo, GgufError> {
    let name = c.string(&|| format!("tensor_infos[{i}] name"))?;
    let field = |what: &str| format!("tensor '{name}' {what}");
    let n_dims = c.u32(&|| field("n_dims"))?;
    if n_dims as usize > MAX_DIMS {
        return Err(c.error(GgufErrorKind::TooManyDims {
            tensor: name,
            n_dims,
            max: MAX_DIMS,
        }));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        ne.push(c.u64(&|| field(&format!("ne[{d}]")))?);
    }
    let type_id = c.u32(&|| field("type"))?;
    let offset = c.u64(&|| field("offset"))?;

    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
        c.error(GgufErrorKind::UnknownGgmlType {
            tensor: name.clone(),
            type_id,
        })
    })?;
    // The element count must fit in i64 (ggml's int64_t ne) and the byte count in u64.
    let numel = ne
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let Some(n_bytes) = numel.and_then(|n| ggml_type.bytes_for(n)) else {
        return Err(c.error(GgufErrorKind::ShapeOverflow {
            tensor: name,
            dims: ne,
        }));
    };
    let row_len = ne.first().copied().unwrap_or(1);
    if row_len % ggml_type.block_size != 0 {
        return Err(c.error(GgufErrorKind::RowNotBlockMultiple {
            tensor: name,
            row_len,
            type_name: ggml_type.name,
            block: ggml_type.block_size,
        }));
    }
    Ok(TensorInfo {
        name,
        ne,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// Every tensor aligned, inside the data section, and disjoint from every other.
fn check_tensor_placement(
    path: &Path,
    tensors: &[TensorInfo],
    alignment: u64,
    data_len: u64,
) -> Result<(), GgufError> {
    let err = |kind| GgufError::new(path, kind);
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(err(GgufErrorKind::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            }));
        }
        let end = t.offset.saturating_add(t.n_bytes);
        if end > data_len {
            return Err(err(GgufErrorKind::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                end,
                data_len,
            }));
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(err(GgufErrorKind::OverlappingTensors {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            }));
        }
    }
    Ok(())
}
