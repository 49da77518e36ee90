//! safetensors headers built from parts (names, dtypes, shapes, offsets, data length, the
//! length prefix), some right and some wrong, against an independent statement of the format's
//! rules: the parser accepts exactly the files the rules allow, and every accepted tensor lies
//! inside the file.

use std::path::Path;

use nemo_engine::model::safetensors_files::SafetensorsFile;
use proptest::prelude::*;

/// (name in the header, bytes per element); `None` = not a safetensors dtype.
const DTYPES: [(&str, Option<usize>); 12] = [
    ("BF16", Some(2)),
    ("F16", Some(2)),
    ("F32", Some(4)),
    ("F64", Some(8)),
    ("I64", Some(8)),
    ("U8", Some(1)),
    ("BOOL", Some(1)),
    ("F8_E4M3", Some(1)),
    ("bf16", None),
    ("Q4_K", None),
    ("F128", None),
    ("", None),
];

#[derive(Clone, Debug)]
struct Entry {
    name: &'static str,
    dtype: usize,
    shape: Vec<u64>,
    /// `None`: placed right after the previous tensor with its true size.
    offsets: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct FileSpec {
    entries: Vec<Entry>,
    /// Bytes added to (or, negative, cut from) the data section the entries need.
    data_delta: i64,
    /// Added to the header length prefix.
    prefix_delta: i64,
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..6,
        1 => Just(1u64 << 32),
        1 => Just(1u64 << 62),
        1 => Just(u64::MAX),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let names = prop::sample::select(vec!["a", "b", "c", "layers.0.w", "__x", "é"]);
    let dtype = prop_oneof![6 => 0usize..8, 1 => 8usize..DTYPES.len()];
    let offsets = prop_oneof![4 => Just(None), 1 => (0u64..80, 0u64..80).prop_map(Some)];
    (names, dtype, prop::collection::vec(dim(), 0..4), offsets).prop_map(
        |(name, dtype, shape, offsets)| Entry {
            name,
            dtype,
            shape,
            offsets,
        },
    )
}

fn file_spec() -> impl Strategy<Value = FileSpec> {
    let delta = prop_oneof![6 => Just(0i64), 1 => -8i64..8];
    (prop::collection::vec(entry(), 0..5), delta.clone(), delta).prop_map(
        |(entries, data_delta, prefix_delta)| FileSpec {
            entries,
            data_delta,
            prefix_delta,
        },
    )
}

/// As the reference implementation counts: elements left to right with overflow checks (so
/// `[u64::MAX, 0]` is an empty tensor, `[u64::MAX, 2, 0]` an overflow), then bytes.
fn n_bytes(e: &Entry) -> Option<u64> {
    let size = DTYPES[e.dtype].1? as u64;
    e.shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))?
        .checked_mul(size)
}

/// The file's bytes, and whether the format's rules allow it.
fn build(spec: &FileSpec) -> (Vec<u8>, bool) {
    let mut valid = spec.prefix_delta == 0;
    let mut header = String::from("{");
    let mut next = 0u64;
    let mut ranges = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, e) in spec.entries.iter().enumerate() {
        let size = n_bytes(e);
        valid &= size.is_some();
        valid &= names.insert(e.name);
        let (start, end) = e
            .offsets
            .unwrap_or((next, next.saturating_add(size.unwrap_or(0))));
        valid &= end >= start && Some(end - start) == size;
        next = end.max(next);
        ranges.push((start, end));
        let shape: Vec<String> = e.shape.iter().map(u64::to_string).collect();
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{start},{end}]}}",
            e.name,
            DTYPES[e.dtype].0,
            shape.join(",")
        ));
    }
    header.push('}');
    // The ranges must tile the data section exactly: sorted, each starting where the last ended.
    ranges.sort();
    let mut covered = 0;
    for &(start, end) in &ranges {
        valid &= start == covered;
        covered = end.max(covered);
    }
    let data_len = (covered.min(1 << 20) as i64 + spec.data_delta).clamp(0, 4096) as u64;
    valid &= data_len == covered;
    let prefix = (header.len() as i64 + spec.prefix_delta).max(0) as u64;
    let mut bytes = prefix.to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend((0..data_len).map(|i| i as u8));
    (bytes, valid)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepts_exactly_the_files_the_format_allows(spec in file_spec()) {
        let (bytes, valid) = build(&spec);
        let path = Path::new("prop/model.safetensors");
        match SafetensorsFile::from_bytes(path, &bytes) {
            Ok(file) => {
                prop_assert!(valid, "accepted a file the format forbids: {}", String::from_utf8_lossy(&bytes));
                prop_assert_eq!(file.tensors.len(), spec.entries.len());
                for (name, e) in &file.tensors {
                    prop_assert!(e.offset + e.n_bytes <= bytes.len(), "{} out of bounds", name);
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!valid, "refused a valid file: {message}\n{}", String::from_utf8_lossy(&bytes));
                prop_assert!(message.contains("prop/model.safetensors"), "{}", message);
            }
        }
        // The harness's own checks (bf16 views, ranges) on the same bytes.
        crate::harness::safetensors(&bytes);
    }
}
