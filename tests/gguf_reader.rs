//! The GGUF reader on hand-built files: every metadata value type, tensor placement and shape
//! order, and hostile headers, each refused with a typed error naming the file and the field.

#[path = "gguf_support/writer.rs"]
mod writer;

use half::f16;
use nemo_engine::gguf::quant::dequantize_f32;
use nemo_engine::gguf::{Array, GgmlType, GgufError, GgufErrorKind, GgufFile, Value};
use writer::{s, str_arr, GgufWriter, W};

const PATH: &str = "/data/hostile.gguf";

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(PATH, bytes)
}

fn refuse(w: &GgufWriter) -> GgufErrorKind {
    match parse(w.build()) {
        Ok(_) => panic!("a hostile file was accepted: {w:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("GGUF file {PATH}: ")),
                "error does not name the file: {msg}"
            );
            e.kind
        }
    }
}

fn q8_0_block(d: f32, qs: impl Fn(usize) -> i8) -> Vec<u8> {
    let mut b = f16::from_f32(d).to_bits().to_le_bytes().to_vec();
    b.extend((0..32).map(|j| qs(j) as u8));
    b
}

fn one_tensor_file() -> GgufWriter {
    GgufWriter::default()
        .kv("general.architecture", s("test"))
        .f32_tensor("t", &[4, 2], &[0., 1., 2., 3., 4., 5., 6., 7.])
}

#[test]
fn every_metadata_type_round_trips() {
    let w = GgufWriter::default()
        .kv("u8", W::U8(200))
        .kv("i8", W::I8(-100))
        .kv("u16", W::U16(60000))
        .kv("i16", W::I16(-30000))
        .kv("u32", W::U32(4_000_000_000))
        .kv("i32", W::I32(-2_000_000_000))
        .kv("u64", W::U64(u64::MAX))
        .kv("i64", W::I64(i64::MIN))
        .kv("f32", W::F32(1.5))
        .kv("f64", W::F64(-2.25))
        .kv("bool", W::Bool(true))
        .kv("string", s("héllo"))
        .kv("empty", s(""))
        .kv("strings", str_arr(&["a", "", "ünï"]))
        .kv("i32s", W::Arr(5, vec![W::I32(-1), W::I32(7)]))
        .kv("f64s", W::Arr(12, vec![W::F64(0.5)]))
        .kv("bools", W::Arr(7, vec![W::Bool(false), W::Bool(true)]))
        .kv(
            "nested",
            W::Arr(
                9,
                vec![W::Arr(0, vec![W::U8(1), W::U8(2)]), W::Arr(8, vec![s("x")])],
            ),
        )
        .kv("empty_array", W::Arr(4, vec![]));
    let f = parse(w.build()).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata().len(), 19);
    assert_eq!(f.get("u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("i8"), Some(&Value::I8(-100)));
    assert_eq!(f.get("u16"), Some(&Value::U16(60000)));
    assert_eq!(f.get("i16"), Some(&Value::I16(-30000)));
    assert_eq!(f.get("u32"), Some(&Value::U32(4_000_000_000)));
    assert_eq!(f.get("i32"), Some(&Value::I32(-2_000_000_000)));
    assert_eq!(f.get("u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(f.get("f32"), Some(&Value::F32(1.5)));
    assert_eq!(f.get("f64"), Some(&Value::F64(-2.25)));
    assert_eq!(f.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(f.str("string").unwrap(), "héllo");
    assert_eq!(f.str("empty").unwrap(), "");
    assert_eq!(f.string_array("strings").unwrap(), ["a", "", "ünï"]);
    assert_eq!(f.get("i32s"), Some(&Value::Array(Array::I32(vec![-1, 7]))));
    assert_eq!(f.get("f64s"), Some(&Value::Array(Array::F64(vec![0.5]))));
    assert_eq!(
        f.get("bools"),
        Some(&Value::Array(Array::Bool(vec![false, true])))
    );
    assert_eq!(
        f.get("nested"),
        Some(&Value::Array(Array::Array(vec![
            Array::U8(vec![1, 2]),
            Array::String(vec!["x".into()])
        ])))
    );
    assert_eq!(
        f.get("empty_array"),
        Some(&Value::Array(Array::U32(vec![])))
    );
    // Typed access: integers widen, a wrong type is its own error.
    assert_eq!(f.u64("u16").unwrap(), 60000);
    assert_eq!(f.opt_u64("missing").unwrap(), None);
    assert!(
        matches!(f.u64("i8").unwrap_err().kind, GgufErrorKind::WrongValueType { ref key, .. } if key == "i8")
    );
    assert!(
        matches!(f.str("missing").unwrap_err().kind, GgufErrorKind::MissingKey { ref key } if key == "missing")
    );
    assert_eq!(f.opt_f64("f32").unwrap(), Some(1.5));
}

#[test]
fn tensors_are_placed_aligned_and_shapes_read_outermost_first() {
    let q8 = [
        q8_0_block(0.5, |j| j as i8 - 16),
        q8_0_block(-1.0, |j| j as i8),
    ]
    .concat();
    let mut w = GgufWriter::default()
        .kv("general.alignment", W::U32(64))
        .f32_tensor("norm", &[3], &[1.0, -2.0, 0.25])
        .tensor("emb", &[32, 2], 8, q8)
        .f32_tensor("scalar", &[], &[42.0]);
    w.alignment = 64;
    let bytes = w.build();
    let f = parse(bytes.clone()).unwrap();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    let emb = f.tensor("emb").unwrap();
    assert_eq!(emb.ne, [32, 2]);
    assert_eq!(emb.shape(), [2, 32], "row-major: ne reversed");
    assert_eq!(emb.ggml_type, GgmlType::Q8_0);
    assert_eq!(
        emb.offset, 64,
        "the 12-byte norm is padded to the alignment"
    );
    assert_eq!(emb.n_bytes, 68);
    let y = dequantize_f32(emb.ggml_type, f.tensor_bytes(emb)).unwrap();
    assert_eq!(y[0], -8.0);
    assert_eq!(y[31], 7.5);
    assert_eq!(y[32 + 3], -3.0, "second row starts at element 32");
    let norm = f.tensor("norm").unwrap();
    assert_eq!(
        dequantize_f32(norm.ggml_type, f.tensor_bytes(norm)).unwrap(),
        [1.0, -2.0, 0.25]
    );
    let scalar = f.tensor("scalar").unwrap();
    assert_eq!((scalar.shape(), scalar.numel()), (vec![], 1));
    assert_eq!(
        f.tensors()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["norm", "emb", "scalar"]
    );

    // The same bytes through the memory-mapped path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let mapped = GgufFile::open(&path).unwrap();
    assert_eq!(
        mapped.tensor_bytes(mapped.tensor("emb").unwrap()),
        f.tensor_bytes(emb)
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let err = GgufFile::open("/nonexistent/model.gguf")
        .err()
        .expect("no such file");
    assert!(matches!(err.kind, GgufErrorKind::Io(_)));
    assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");

    // An empty file: refused (by the mapping or as truncated), not a panic.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).err().expect("empty file");
    assert!(err.to_string().contains("empty.gguf"), "{err}");
}

#[test]
fn bad_magic_and_versions_are_refused() {
    let mut w = one_tensor_file();
    w.magic = *b"GGML";
    assert!(matches!(refuse(&w), GgufErrorKind::BadMagic { ref found } if found == b"GGML"));
    for (version, big_endian) in [
        (1, false),
        (4, false),
        (0, false),
        (3u32.swap_bytes(), true),
    ] {
        let mut w = one_tensor_file();
        w.version = version;
        match refuse(&w) {
            GgufErrorKind::BigEndian { version: v } if big_endian => assert_eq!(v, version),
            GgufErrorKind::UnsupportedVersion { version: v } if !big_endian => {
                assert_eq!(v, version)
            }
            other => panic!("version {version:#x}: {other:?}"),
        }
    }
    let mut w = one_tensor_file();
    w.version = 2;
    assert!(parse(w.build()).is_ok(), "version 2 has the same layout");
    assert!(
        matches!(parse(b"GG".to_vec()).err().unwrap().kind, GgufErrorKind::Truncated { ref field, .. } if field == "magic")
    );
}

#[test]
fn counts_larger_than_the_file_are_refused_before_allocating() {
    for (kv_count, tensor_count, field) in [
        (Some(u64::MAX), None, "kv_count"),
        (None, Some(u64::MAX), "tensor_count"),
        (Some(1 << 40), None, "kv_count"),
    ] {
        let mut w = one_tensor_file();
        w.kv_count = kv_count;
        w.tensor_count = tensor_count;
        match refuse(&w) {
            GgufErrorKind::AbsurdCount {
                field: f,
                count,
                max,
            } => {
                assert_eq!(f, field);
                assert!(count > max);
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    // One more tensor announced than present: the second entry is read from padding and data,
    // which must fail one check or another.
    let mut w = one_tensor_file();
    w.tensor_count = Some(2);
    refuse(&w);
}

#[test]
fn string_and_array_lengths_past_the_end_are_refused() {
    // A string value claiming 2^62 bytes.
    let huge_str = W::Raw(8, (1u64 << 62).to_le_bytes().to_vec());
    let kind = refuse(&one_tensor_file().kv("general.name", huge_str));
    assert!(
        matches!(kind, GgufErrorKind::Truncated { ref field, needed, .. } if field == "metadata 'general.name'" && needed == 1 << 62),
        "{kind:?}"
    );

    // A key claiming more bytes than the file has.
    let mut raw = one_tensor_file().build();
    raw.truncate(24);
    raw.extend(u64::MAX.to_le_bytes());
    raw.extend([0u8; 100]);
    let kind = parse(raw).err().unwrap().kind;
    assert!(
        matches!(kind, GgufErrorKind::Truncated { ref field, .. } if field == "metadata[0] key"),
        "{kind:?}"
    );

    // Arrays: u8 (1 byte each), strings (8 bytes at least each), nested arrays (12 at least).
    for elem_type in [0u32, 8, 9, 4] {
        let mut bytes = elem_type.to_le_bytes().to_vec();
        bytes.extend((1u64 << 40).to_le_bytes());
        let kind = refuse(&one_tensor_file().kv("tokenizer.ggml.tokens", W::Raw(9, bytes)));
        assert!(
            matches!(kind, GgufErrorKind::AbsurdCount { ref field, count, .. } if field == "metadata 'tokenizer.ggml.tokens' (array length)" && count == 1 << 40),
            "element type {elem_type}: {kind:?}"
        );
    }
    // A string element inside an array that runs off the end names the element.
    let mut bytes = 8u32.to_le_bytes().to_vec();
    bytes.extend(2u64.to_le_bytes());
    writer::put_str(&mut bytes, "ok");
    bytes.extend(1000u64.to_le_bytes());
    let kind = refuse(&GgufWriter::default().kv("toks", W::Raw(9, bytes)));
    assert!(
        matches!(kind, GgufErrorKind::Truncated { ref field, .. } if field == "metadata 'toks'[1]"),
        "{kind:?}"
    );
}

#[test]
fn malformed_values_are_refused() {
    let kind = refuse(&one_tensor_file().kv("x", W::Raw(13, vec![0; 8])));
    assert!(
        matches!(kind, GgufErrorKind::UnknownValueType { type_id: 13, ref field } if field == "metadata 'x'"),
        "{kind:?}"
    );
    let kind = refuse(&one_tensor_file().kv("flag", W::Raw(7, vec![2])));
    assert!(
        matches!(kind, GgufErrorKind::InvalidBool { value: 2, .. }),
        "{kind:?}"
    );
    let kind = refuse(&one_tensor_file().kv(
        "s",
        W::Raw(8, [2u64.to_le_bytes().to_vec(), vec![0xff, 0xfe]].concat()),
    ));
    assert!(
        matches!(kind, GgufErrorKind::InvalidUtf8 { ref field } if field == "metadata 's'"),
        "{kind:?}"
    );
    let kind = refuse(&one_tensor_file().kv("k", W::U8(1)).kv("k", W::U8(2)));
    assert!(
        matches!(kind, GgufErrorKind::DuplicateKey { ref key } if key == "k"),
        "{kind:?}"
    );

    // Arrays nested 100 deep: refused by depth, not by the stack.
    let mut v = W::Arr(0, vec![]);
    for _ in 0..100 {
        v = W::Arr(9, vec![v]);
    }
    assert!(matches!(
        refuse(&one_tensor_file().kv("deep", v)),
        GgufErrorKind::NestingTooDeep { .. }
    ));
}

#[test]
fn bad_alignment_is_refused() {
    for a in [0u32, 3, 48] {
        let kind = refuse(&one_tensor_file().kv("general.alignment", W::U32(a)));
        assert!(
            matches!(kind, GgufErrorKind::BadAlignment { value } if value == a as u64),
            "{a}: {kind:?}"
        );
    }
    let kind = refuse(&one_tensor_file().kv("general.alignment", s("32")));
    assert!(
        matches!(kind, GgufErrorKind::WrongValueType { ref key, .. } if key == "general.alignment"),
        "{kind:?}"
    );
}

#[test]
fn bad_tensor_entries_are_refused() {
    let base = || GgufWriter::default();
    let kind = refuse(&base().tensor("t", &[1, 1, 1, 1, 1], 0, vec![0; 4]));
    assert!(
        matches!(kind, GgufErrorKind::TooManyDims { n_dims: 5, ref tensor, .. } if tensor == "t"),
        "{kind:?}"
    );

    let kind = refuse(&base().tensor("big", &[u64::MAX, 2], 0, vec![]));
    assert!(
        matches!(kind, GgufErrorKind::ShapeOverflow { ref tensor, .. } if tensor == "big"),
        "{kind:?}"
    );
    // Elements fit in i64 but the bytes (8 each) do not fit in u64.
    let kind = refuse(&base().tensor("f64", &[1 << 62], 28, vec![]));
    assert!(
        matches!(kind, GgufErrorKind::ShapeOverflow { .. }),
        "{kind:?}"
    );

    let kind = refuse(&base().tensor("t", &[4], 99, vec![0; 4]));
    assert!(
        matches!(kind, GgufErrorKind::UnknownGgmlType { type_id: 99, ref tensor } if tensor == "t"),
        "{kind:?}"
    );

    let kind = refuse(&base().tensor("q", &[33], 8, vec![0; 68]));
    assert!(
        matches!(
            kind,
            GgufErrorKind::RowNotBlockMultiple {
                row_len: 33,
                block: 32,
                ..
            }
        ),
        "{kind:?}"
    );

    let kind = refuse(
        &base()
            .tensor("t", &[4], 0, vec![0; 16])
            .tensor("t", &[4], 0, vec![0; 16]),
    );
    assert!(
        matches!(kind, GgufErrorKind::DuplicateTensor { ref tensor } if tensor == "t"),
        "{kind:?}"
    );
}

#[test]
fn tensor_data_outside_the_file_or_overlapping_is_refused() {
    // Offset not a multiple of the alignment.
    let mut w = one_tensor_file();
    w.tensors[0].offset = Some(8);
    let kind = refuse(&w);
    assert!(
        matches!(kind, GgufErrorKind::MisalignedTensor { offset: 8, alignment: 32, ref tensor } if tensor == "t"),
        "{kind:?}"
    );

    // Data claimed past the end: a huge offset, an offset whose end overflows, a short file.
    for offset in [1u64 << 40, u64::MAX - 31] {
        let mut w = GgufWriter::default().tensor("far", &[8], 0, vec![]);
        w.tensors[0].offset = Some(offset);
        let kind = refuse(&w);
        assert!(
            matches!(kind, GgufErrorKind::TensorOutOfBounds { offset: o, ref tensor, .. } if o == offset && tensor == "far"),
            "{kind:?}"
        );
    }
    let kind = refuse(&GgufWriter::default().tensor("short", &[1024], 0, vec![0; 16]));
    assert!(
        matches!(
            kind,
            GgufErrorKind::TensorOutOfBounds {
                end: 4096,
                data_len: 16,
                ..
            }
        ),
        "{kind:?}"
    );

    // Two tensors sharing bytes.
    let mut w = GgufWriter::default()
        .f32_tensor("a", &[16], &[0.0; 16])
        .f32_tensor("b", &[16], &[0.0; 16]);
    w.tensors[1].offset = Some(32);
    let kind = refuse(&w);
    assert!(
        matches!(kind, GgufErrorKind::OverlappingTensors { ref first, ref second } if first == "a" && second == "b"),
        "{kind:?}"
    );
}

#[test]
fn every_truncation_of_a_valid_file_is_refused() {
    let w = GgufWriter::default()
        .kv("general.architecture", s("test"))
        .kv("tokens", str_arr(&["a", "bb", "ccc"]))
        .kv("nested", W::Arr(9, vec![W::Arr(6, vec![W::F32(1.0)])]))
        .tensor("q", &[32, 1], 8, q8_0_block(1.0, |j| j as i8));
    let full = w.build();
    assert!(parse(full.clone()).is_ok());
    for len in 0..full.len() {
        assert!(
            parse(full[..len].to_vec()).is_err(),
            "a file cut to {len} of {} bytes was accepted",
            full.len()
        );
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Flip bytes all over a valid file (deterministically): whatever comes out, the reader must
    // return, not panic or allocate without bound.
    let w = GgufWriter::default()
        .kv("general.architecture", s("llama"))
        .kv("tokens", str_arr(&["<s>", "a", "b"]))
        .kv("types", W::Arr(5, vec![W::I32(3), W::I32(1), W::I32(1)]))
        .tensor(
            "q",
            &[32, 2],
            8,
            [
                q8_0_block(1.0, |j| j as i8),
                q8_0_block(2.0, |j| -(j as i8)),
            ]
            .concat(),
        )
        .f32_tensor("n", &[8], &[1.0; 8]);
    let full = w.build();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut refused) = (0, 0);
    for pos in 0..full.len() {
        for _ in 0..4 {
            let mut bytes = full.clone();
            bytes[pos] ^= (next() % 255 + 1) as u8;
            match parse(bytes) {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        refused > 0 && ok > 0,
        "flips in tensor data parse, flips in the header are refused ({ok} ok, {refused} refused)"
    );
}
