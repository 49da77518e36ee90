//! `nemo_engine::cpu::fp8` against ml_dtypes' float8_e4m3fn: `tests/fixtures/fp8_e4m3.json`,
//! made by `scripts/fixtures/make_fp8_e4m3.py` (every code's value; ties, their neighbours,
//! subnormals and random values of both signs encoded).

use nemo_engine::cpu::fp8::{e4m3_from_f32, e4m3_to_f32};

fn fixture() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fp8_e4m3.json");
    serde_json::from_slice(&std::fs::read(path).expect("tests/fixtures/fp8_e4m3.json")).unwrap()
}

#[test]
fn every_code_decodes_to_the_oracles_value() {
    let f = fixture();
    let decode = f["decode"].as_array().unwrap();
    assert_eq!(decode.len(), 256);
    for (code, want) in decode.iter().enumerate() {
        let got = e4m3_to_f32(code as u8);
        match want.as_f64() {
            None => assert!(got.is_nan(), "code {code:#x}: {got}, the oracle says NaN"),
            Some(w) => assert!(got == w as f32 && got.is_sign_negative() == (code >= 0x80), "code {code:#x}: {got} != {w}"),
        }
    }
}

#[test]
fn every_value_encodes_to_the_oracles_code() {
    let f = fixture();
    let cases = f["encode"].as_array().unwrap();
    assert!(cases.len() > 8000, "{} cases", cases.len());
    let mut bad = Vec::new();
    for case in cases {
        let (bits, want) = (case[0].as_u64().unwrap() as u32, case[1].as_u64().unwrap() as u8);
        let x = f32::from_bits(bits);
        let got = e4m3_from_f32(x);
        if got != want {
            bad.push(format!("{x:e} ({bits:#010x}): {got:#04x}, oracle {want:#04x}"));
        }
    }
    assert!(bad.is_empty(), "{} of {} differ, first: {:?}", bad.len(), cases.len(), &bad[..bad.len().min(5)]);
}
