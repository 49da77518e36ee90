//! Dequantisation of every supported GGUF type against the `gguf` Python package, on random raw
//! blocks (fixture and generator: tests/fixtures/gguf/quant_blocks.json,
//! scripts/fixtures/gguf_quant_blocks.py). The demo model only exercises Q8_0, Q4_1 and F32.

use half::bf16;
use nemo_engine::gguf::quant::{dequantize_bf16, dequantize_f32};
use nemo_engine::gguf::GgmlType;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn every_supported_type_matches_the_gguf_package() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gguf/quant_blocks.json"
    );
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let types = fx["types"].as_object().unwrap();
    let mut seen = Vec::new();
    for (name, case) in types {
        let ty = GgmlType::from_id(case["ggml_type_id"].as_u64().unwrap() as u32).unwrap();
        assert_eq!(ty.name, name);
        let raw = hex(case["hex"].as_str().unwrap());
        let want: Vec<f32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(dequantize_f32(ty, &raw).unwrap(), want, "{name}: f32");
        let want_bf16: Vec<bf16> = want.iter().map(|&v| bf16::from_f32(v)).collect();
        assert_eq!(
            dequantize_bf16(ty, &raw).unwrap(),
            want_bf16,
            "{name}: bf16 is the f32 value rounded"
        );
        seen.push(name.as_str());
    }
    seen.sort();
    assert_eq!(seen, ["BF16", "F16", "F32", "Q4_0", "Q4_1", "Q8_0"]);
}
