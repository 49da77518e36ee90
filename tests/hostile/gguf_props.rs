//! GGUF tensor tables built from parts (names, dimension counts and sizes, ggml types, data
//! offsets, alignment), against an independent statement of the placement rules: the reader
//! accepts exactly the tables those rules allow, and every accepted tensor lies in the file.
//! (Metadata values and byte-level corruption are covered by tests/gguf_reader.rs and the
//! fuzz pass.)

use std::path::Path;

use nemo_engine::gguf::{GgmlType, GgufFile};
use proptest::prelude::*;

use crate::writer::{align, GgufWriter, W};

#[derive(Clone, Debug)]
struct TensorPart {
    name: &'static str,
    ne: Vec<u64>,
    type_id: u32,
    /// `None`: exactly the bytes the shape needs (when that is small).
    data_len: Option<usize>,
    offset: Option<u64>,
}

fn tensor() -> impl Strategy<Value = TensorPart> {
    let name = prop::sample::select(vec!["a", "b", "blk.0.attn_q.weight", ""]);
    let dim = prop_oneof![6 => prop::sample::select(vec![1u64, 2, 32, 64]), 1 => Just(0u64), 1 => prop::sample::select(vec![1u64 << 40, 1 << 62, u64::MAX])];
    // F32, F16, Q4_0, Q4_1, Q8_0, BF16, Q4_K; 4 was removed from ggml; 77 never existed.
    let type_id = prop::sample::select(vec![0u32, 1, 2, 3, 8, 30, 12, 4, 77]);
    let data_len = prop_oneof![4 => Just(None), 1 => (0usize..300).prop_map(Some)];
    let offset = prop_oneof![4 => Just(None), 1 => prop::sample::select(vec![0u64, 7, 32, 64, 96, 4000]).prop_map(Some)];
    (
        name,
        prop::collection::vec(dim, 0..6),
        type_id,
        data_len,
        offset,
    )
        .prop_map(|(name, ne, type_id, data_len, offset)| TensorPart {
            name,
            ne,
            type_id,
            data_len,
            offset,
        })
}

fn n_bytes(t: &TensorPart) -> Option<(u64, GgmlType)> {
    let ty = GgmlType::from_id(t.type_id)?;
    let numel =
        t.ne.iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)?;
    let row = t.ne.first().copied().unwrap_or(1);
    (row % ty.block_size == 0).then_some(())?;
    Some((ty.bytes_for(numel)?, ty))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepts_exactly_the_tables_the_rules_allow(
        tensors in prop::collection::vec(tensor(), 0..4),
        alignment in prop::sample::select(vec![None, Some(1u64), Some(8), Some(64), Some(0), Some(3)]),
    ) {
        let layout_alignment = alignment.filter(|a| a.is_power_of_two()).unwrap_or(32);
        let mut w = GgufWriter { alignment: layout_alignment, ..GgufWriter::default() }.kv("general.architecture", W::Str("test".into()));
        if let Some(a) = alignment {
            w = w.kv("general.alignment", W::U32(a as u32));
        }
        for t in &tensors {
            let len = t.data_len.unwrap_or_else(|| n_bytes(t).map_or(0, |(n, _)| n.min(4096) as usize));
            w = w.tensor(t.name, &t.ne, t.type_id, vec![0x3c; len]);
            w.tensors.last_mut().unwrap().offset = t.offset;
        }
        let offsets = w.offsets();
        let mut header_only = w.clone();
        header_only.tensors.iter_mut().for_each(|t| t.data.clear());
        let data_start = header_only.build().len() as u64;
        let bytes = w.build();
        let data_len = (bytes.len() as u64).saturating_sub(data_start);

        // The rules.
        let mut valid = alignment.is_none_or(|a| a.is_power_of_two());
        let mut names = std::collections::BTreeSet::new();
        let mut placed = Vec::new();
        for (t, &offset) in tensors.iter().zip(&offsets) {
            valid &= t.ne.len() <= 4 && names.insert(t.name);
            match n_bytes(t) {
                Some((n, _)) => {
                    valid &= offset % layout_alignment == 0 && offset.checked_add(n).is_some_and(|end| end <= data_len);
                    if n > 0 {
                        placed.push((offset, n));
                    }
                }
                None => valid = false,
            }
        }
        placed.sort();
        valid &= placed.windows(2).all(|p| p[0].0 + p[0].1 <= p[1].0);
        valid &= tensors.is_empty() || data_start <= bytes.len() as u64;

        let path = Path::new("prop/model.gguf");
        match GgufFile::from_bytes(path, bytes.clone()) {
            Ok(file) => {
                prop_assert!(valid, "accepted {tensors:?} at {offsets:?} (alignment {alignment:?}, data {data_len} bytes)");
                for info in file.tensors() {
                    prop_assert_eq!(file.tensor_bytes(info).len() as u64, info.n_bytes);
                }
            }
            Err(e) => {
                prop_assert!(!valid, "refused {tensors:?} at {offsets:?}: {e}");
                prop_assert!(e.to_string().contains("prop/model.gguf"), "{}", e);
            }
        }
        crate::harness::gguf(&bytes);
    }
}

#[test]
fn the_header_only_build_ends_where_the_data_starts() {
    let w = GgufWriter::default().f32_tensor("x", &[8], &[1.0; 8]);
    let mut header_only = w.clone();
    header_only.tensors[0].data.clear();
    let start = header_only.build().len();
    let full = w.build();
    assert_eq!(start as u64, align(start as u64, 32));
    assert_eq!(&full[start..start + 4], &1.0f32.to_le_bytes());
}
