//! One entry point per file parser: give it any bytes, it must answer with the parsed value or a
//! typed error, never a panic, an out-of-bounds read or an allocation sized by a header field.
//!
//! Shared, word for word, by the libFuzzer targets (`fuzz/fuzz_targets/*.rs`, through this
//! crate's lib) and by the bounded pass in `cargo test` (`tests/hostile/fuzz_pass.rs`, through
//! `#[path]`), so what CI runs is what the long local sessions ran.
//!
//! Beyond "no panic", each harness checks what the parser promised:
//! - a refusal is one line that names the file (the caller's path);
//! - an accepted file is usable: every tensor range lies inside the bytes, a config satisfies
//!   the invariants the engine relies on, a tokenizer round-trips text and knows BOS/EOS.

use std::path::Path;

use nemo_engine::gguf::{
    build_tokenizer, llama_config, load_llama, ChatMessage, ChatTemplate, GgufFile,
};
use nemo_engine::model::params::{parse_config_json_bytes, parse_params_json_bytes};
use nemo_engine::model::safetensors_files::SafetensorsFile;
use nemo_engine::model::ModelConfig;
use nemo_engine::tokenizer::{HfTokenizer, SpecialTokenPolicy, Tekken, Tokenizer};

/// The harnesses by target name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/seeds/*`).
pub const TARGETS: [(&str, fn(&[u8])); 6] = [
    ("safetensors", safetensors),
    ("params_json", params_json),
    ("hf_config_json", hf_config_json),
    ("tekken_json", tekken_json),
    ("tokenizer_json", tokenizer_json),
    ("gguf", gguf),
];

/// Text every accepted tokenizer must encode: ASCII, digits, multi-byte UTF-8, control-token
/// look-alikes (plain text, never control ids), whitespace runs.
const PROBE_TEXTS: [&str; 5] = [
    "Hello, world! 12345",
    "  leading and trailing  \n\n",
    "héllo wörld — ünïcödé ✓ 日本語 🙂",
    "[INST] <s> </s> [TOOL_CALLS] <|im_start|>",
    "",
];

/// A refusal names the file and fits on the one `error:` line the CLI prints.
fn check_refusal(path: &Path, message: &str) {
    let shown = path.display().to_string();
    assert!(
        message.contains(&shown),
        "the error does not name the file {shown}: {message}"
    );
    assert!(
        !message.contains('\n'),
        "the error spans several lines: {message}"
    );
}

pub fn safetensors(data: &[u8]) {
    let path = Path::new("hostile/consolidated.safetensors");
    let file = match SafetensorsFile::from_bytes(path, data) {
        Ok(file) => file,
        Err(e) => return check_refusal(path, &e.to_string()),
    };
    let mut covered = 0usize;
    for (name, entry) in &file.tensors {
        let end = entry
            .offset
            .checked_add(entry.n_bytes)
            .expect("range overflows");
        assert!(
            end <= data.len(),
            "`{name}` ends at {end}, past the {} bytes",
            data.len()
        );
        covered += entry.n_bytes;
        if entry.dtype == safetensors::Dtype::BF16 {
            let tensor = file.bf16_tensor(name, entry);
            assert_eq!(tensor.as_bf16().len() * 2, entry.n_bytes, "`{name}`");
            assert_eq!(tensor.numel() * 2, entry.n_bytes, "`{name}`");
        }
    }
    assert!(covered <= data.len());
}

pub fn params_json(data: &[u8]) {
    let path = Path::new("hostile/params.json");
    match parse_params_json_bytes(path, data) {
        Ok(config) => check_config(&config),
        Err(e) => check_refusal(path, &e.to_string()),
    }
}

pub fn hf_config_json(data: &[u8]) {
    let path = Path::new("hostile/config.json");
    match parse_config_json_bytes(path, data) {
        Ok(config) => check_config(&config),
        Err(e) => check_refusal(path, &e.to_string()),
    }
}

/// What every consumer of a [`ModelConfig`] assumes without checking again.
fn check_config(c: &ModelConfig) {
    for (name, v) in [
        ("dim", c.dim),
        ("n_layers", c.n_layers),
        ("head_dim", c.head_dim),
        ("n_heads", c.n_heads),
        ("n_kv_heads", c.n_kv_heads),
        ("ffn_dim", c.ffn_dim),
        ("vocab_size", c.vocab_size),
        ("max_context", c.max_context),
    ] {
        assert!(v > 0, "{name} is 0 in an accepted config: {c:?}");
        assert!(v <= 1 << 24, "{name} = {v} accepted: {c:?}");
    }
    assert_eq!(c.n_heads % c.n_kv_heads, 0, "{c:?}");
    assert_eq!(c.head_dim % 2, 0, "{c:?}");
    assert!(c.rope_theta.is_finite() && c.rope_theta > 0.0, "{c:?}");
    assert!(
        c.norm_eps.is_finite() && c.norm_eps >= f32::MIN_POSITIVE && c.norm_eps < 1.0,
        "{c:?}"
    );
    // Sizes derived from the config must not overflow (overflow checks are on in the harness).
    let _ = (
        c.q_dim(),
        c.kv_dim(),
        c.kv_bytes_per_token() * c.max_context,
    );
    let _ = c.vocab_size * c.dim * 2 + c.n_layers * c.ffn_dim * c.dim * 6;
}

pub fn tekken_json(data: &[u8]) {
    let path = Path::new("hostile/tekken.json");
    match Tekken::from_bytes(path, data) {
        Ok(t) => check_tokenizer(&Tokenizer::Tekken(Box::new(t)), true),
        Err(e) => check_refusal(path, &e.to_string()),
    }
}

pub fn tokenizer_json(data: &[u8]) {
    let path = Path::new("hostile/tokenizer.json");
    match HfTokenizer::from_bytes(path, data) {
        // Normalizers may rewrite text, so only Tekken promises an exact round trip.
        Ok(t) => check_tokenizer(&Tokenizer::Hf(Box::new(t)), false),
        Err(e) => check_refusal(path, &e.to_string()),
    }
}

/// An accepted tokenizer does what the CLI and the chat template ask of it.
fn check_tokenizer(t: &Tokenizer, exact_round_trip: bool) {
    let (bos, eos) = (t.bos_id(), t.eos_id());
    assert!(
        t.is_special(bos) && t.is_special(eos),
        "BOS {bos} / EOS {eos} are not special"
    );
    let vocab = t.vocab_size();
    for text in PROBE_TEXTS {
        // A pathological split regex may give up (a typed error): that is a refusal, not a bug.
        let Ok(ids) = t.encode_with(text, true, true) else {
            continue;
        };
        assert_eq!((ids[0], ids[ids.len() - 1]), (bos, eos));
        let body = &ids[1..ids.len() - 1];
        for &id in body {
            assert!(
                (id as usize) < vocab.max(1),
                "id {id} from encode is past the vocabulary ({vocab})"
            );
        }
        if exact_round_trip {
            assert!(
                body.iter().all(|&id| !t.is_special(id)),
                "{text:?} encoded to a control id: {body:?}"
            );
            let back = t
                .decode(body, SpecialTokenPolicy::Raise)
                .expect("decode what encode gave");
            assert_eq!(back, text, "round trip of {text:?} through {body:?}");
        } else {
            let _ = t.decode(body, SpecialTokenPolicy::Keep);
        }
    }
    // Every id up to the vocabulary (a bounded sample) and a few past it: decode answers or
    // refuses, and token_bytes never reads out of range.
    let probe: Vec<u32> = (0..vocab.min(2048) as u32)
        .chain([vocab as u32, u32::MAX])
        .collect();
    for &id in &probe {
        let _ = t.token_bytes(id);
        let _ = t.special_text(id);
    }
    for policy in [
        SpecialTokenPolicy::Ignore,
        SpecialTokenPolicy::Keep,
        SpecialTokenPolicy::Raise,
    ] {
        let _ = t.decode(&probe, policy);
    }
}

pub fn gguf(data: &[u8]) {
    let path = Path::new("hostile/model.gguf");
    let file = match GgufFile::from_bytes(path, data.to_vec()) {
        Ok(file) => file,
        Err(e) => return check_refusal(path, &e.to_string()),
    };
    for info in file.tensors() {
        let bytes = file.tensor_bytes(info);
        assert_eq!(bytes.len() as u64, info.n_bytes, "tensor '{}'", info.name);
        assert!(file.data_offset + info.offset + info.n_bytes <= data.len() as u64);
    }
    match llama_config(&file) {
        Ok(config) => {
            check_config(&config);
            match load_llama(&file) {
                Ok(weights) => {
                    assert_eq!(weights.layers.len(), config.n_layers);
                    assert_eq!(weights.embedding.shape, [config.vocab_size, config.dim]);
                }
                Err(e) => check_refusal(path, &e.to_string()),
            }
        }
        Err(e) => check_refusal(path, &e.to_string()),
    }
    match build_tokenizer(&file) {
        Ok(t) => {
            for text in PROBE_TEXTS {
                if let Ok(enc) = t.tokenizer.encode(text, true) {
                    let _ = t.tokenizer.decode(enc.get_ids(), false);
                }
            }
        }
        Err(e) => check_refusal(path, &e.to_string()),
    }
    match ChatTemplate::from_gguf(&file) {
        Ok(template) => {
            let messages = [
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi!"),
            ];
            let _ = template.render(&messages, true);
        }
        Err(e) => check_refusal(path, &e.to_string()),
    }
}
