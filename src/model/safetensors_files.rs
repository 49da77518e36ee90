//! Memory-mapped safetensors files and their headers.
//!
//! The header is parsed here entry by entry (each entry with the `safetensors` crate's own
//! `TensorInfo`/`Dtype` types) so that an error names the tensor and the byte counts involved;
//! then the crate's `read_metadata` checks the same buffer again, so nothing the reference
//! implementation rejects is ever accepted.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::bf16;
use memmap2::{Mmap, MmapMut};
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::error::LoadError;
use super::tensor::{Tensor, TensorData};

/// Same limit as the `safetensors` crate: a header beyond this is corrupt.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's header entry, with its absolute byte range in the file.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute offset of the first byte in the file.
    pub offset: usize,
    pub n_bytes: usize,
}

pub struct SafetensorsFile {
    pub path: PathBuf,
    map: Arc<Mmap>,
    /// By name (sorted, so listings and errors are deterministic).
    pub tensors: BTreeMap<String, TensorEntry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
        if file_len < 8 {
            return Err(too_short(path, file_len));
        }
        // SAFETY: the map is read-only; like every mmap-based loader we rely on the checkpoint
        // not being modified or truncated by another process while it is loaded.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| LoadError::io(path, e))?;
        Self::from_map(path, map)
    }

    /// The same checks over bytes already in memory (tests, fuzzing): they are copied into an
    /// anonymous map, so tensors are served exactly as from a file. `path` only labels errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, LoadError> {
        if bytes.len() < 8 {
            return Err(too_short(path, bytes.len() as u64));
        }
        let mut map = MmapMut::map_anon(bytes.len()).map_err(|e| LoadError::io(path, e))?;
        map.copy_from_slice(bytes);
        let map = map.make_read_only().map_err(|e| LoadError::io(path, e))?;
        Self::from_map(path, map)
    }

    /// Parses and checks the header of a mapped file.
    fn from_map(path: &Path, map: Mmap) -> Result<Self, LoadError> {
        let bad = |message: String| LoadError::Safetensors {
            path: path.to_path_buf(),
            message,
        };
        let file_len = map.len() as u64;
        if file_len < 8 {
            return Err(too_short(path, file_len));
        }
        let header_len = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if header_len > file_len - 8 {
            return Err(bad(format!(
                "the header length field says {header_len} bytes, but only {} bytes follow it \
                 (truncated, or not a safetensors file)",
                file_len - 8
            )));
        }
        if header_len > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "the header is {header_len} bytes (limit {MAX_HEADER_BYTES})"
            )));
        }
        let data_start = 8 + header_len as usize;
        let header = std::str::from_utf8(&map[8..data_start])
            .map_err(|e| bad(format!("the header is not UTF-8: {e}")))?;
        let UniqueKeys(header) = serde_json::from_str(header)
            .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;

        let data_len = map.len() - data_start;
        let mut tensors = BTreeMap::new();
        for (name, value) in header {
            if name == "__metadata__" {
                check_metadata(&value).map_err(&bad)?;
                continue;
            }
            // The path names the broken field: `shape[1]`, `dtype`, `data_offsets`.
            let info: TensorInfo = serde_path_to_error::deserialize(value).map_err(|e| {
                bad(format!(
                    "tensor `{name}`: field `{}`: {}",
                    e.path(),
                    e.inner()
                ))
            })?;
            let (start, end) = info.data_offsets;
            let n_bytes = info
                .shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .and_then(|n| n.checked_mul(info.dtype.bitsize()))
                .filter(|bits| bits % 8 == 0)
                .map(|bits| bits / 8)
                .ok_or_else(|| {
                    bad(format!(
                        "tensor `{name}`: shape {:?} is not a whole number of bytes or overflows",
                        info.shape
                    ))
                })?;
            if end < start || end - start != n_bytes {
                return Err(bad(format!(
                    "tensor `{name}`: data_offsets [{start}, {end}) hold {} bytes, but {} {:?} needs {n_bytes}",
                    end.saturating_sub(start), info.dtype, info.shape)));
            }
            if end > data_len {
                return Err(bad(format!(
                    "tensor `{name}` ends at data byte {end}, but the file holds only {data_len} data \
                     bytes ({file_len} bytes in all): the file is truncated")));
            }
            let entry = TensorEntry {
                dtype: info.dtype,
                shape: info.shape,
                offset: data_start + start,
                n_bytes,
            };
            tensors.insert(name, entry);
        }
        check_contiguous(&tensors, data_start, data_len).map_err(bad)?;
        // The reference implementation's own checks, as a second gate.
        SafeTensors::read_metadata(&map[..])
            .map_err(|e| bad(format!("rejected by the safetensors crate: {e}")))?;

        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            tensors,
        })
    }

    /// A bf16 tensor backed by the map (zero-copy), or copied once if its range is misaligned.
    /// The caller has checked the dtype.
    pub fn bf16_tensor(&self, name: &str, entry: &TensorEntry) -> Tensor {
        debug_assert_eq!(entry.dtype, Dtype::BF16);
        let len = entry.n_bytes / 2;
        let data = if entry.offset % std::mem::align_of::<bf16>() == 0 {
            TensorData::Mapped {
                map: Arc::clone(&self.map),
                offset: entry.offset,
                len,
            }
        } else {
            let bytes = &self.map[entry.offset..entry.offset + entry.n_bytes];
            TensorData::Owned(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )
        };
        Tensor {
            name: name.to_string(),
            shape: entry.shape.clone(),
            data,
        }
    }

    pub fn file_len(&self) -> usize {
        self.map.len()
    }
}

/// The header's entries in file order, refusing a name given twice: a JSON map would keep the
/// last one silently, and which tensor a loader then reads is anyone's guess.
struct UniqueKeys(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut seen = std::collections::BTreeSet::new();
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("`{key}` appears twice")));
                    }
                    entries.push((key, value));
                }
                Ok(UniqueKeys(entries))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `__metadata__` is a map of strings to strings (the format's rule, which the safetensors
/// crate enforces too, but without naming the key).
fn check_metadata(value: &Value) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "`__metadata__` must be an object of strings, found {value}"
        ));
    };
    match map.iter().find(|(_, v)| !v.is_string()) {
        Some((key, v)) => Err(format!(
            "`__metadata__` entry `{key}` must be a string, found {v}"
        )),
        None => Ok(()),
    }
}

fn too_short(path: &Path, len: u64) -> LoadError {
    LoadError::Safetensors {
        path: path.to_path_buf(),
        message: format!(
            "the file is {len} bytes, too short for the 8-byte header length (truncated?)"
        ),
    }
}

/// The format requires the tensors to tile the data section exactly: no gaps, no overlaps, no
/// trailing bytes. A gap or trailing bytes usually mean a corrupt or concatenated file.
fn check_contiguous(
    tensors: &BTreeMap<String, TensorEntry>,
    data_start: usize,
    data_len: usize,
) -> Result<(), String> {
    let mut ranges: Vec<(usize, usize, &str)> = tensors
        .iter()
        .map(|(name, e)| {
            (
                e.offset - data_start,
                e.offset - data_start + e.n_bytes,
                name.as_str(),
            )
        })
        .collect();
    ranges.sort();
    let mut expected_start = 0;
    for (start, end, name) in ranges {
        if start != expected_start {
            return Err(format!(
                "tensor `{name}` starts at data byte {start}, expected {expected_start} \
                 (tensors overlap or leave a gap)"
            ));
        }
        expected_start = end;
    }
    if expected_start != data_len {
        return Err(format!(
            "the tensors cover {expected_start} data bytes but the file holds {data_len} \
             (trailing bytes)"
        ));
    }
    Ok(())
}
