//! What fuzzing (and reading the parsers while writing the harnesses) found, one test each,
//! with the smallest input that showed it. The fix lives in the owning module; docs/reliability.md
//! lists them.

use std::path::Path;

use nemo_engine::gguf::{llama_config, load_llama, GgufErrorKind, GgufFile};
use nemo_engine::model::safetensors_files::SafetensorsFile;
use nemo_engine::tokenizer::{HfTokenizer, SpecialTokenPolicy, Tekken, Tokenizer};
use serde_json::{json, Value};

use crate::writer::{s, str_arr, GgufWriter, W};

fn seed_json(target: &str, name: &str) -> Value {
    let path = super::seeds::seed_dir(target).join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn tekken_err(file: &Value) -> String {
    let bytes = serde_json::to_vec(file).unwrap();
    Tekken::from_bytes(Path::new("t/tekken.json"), &bytes)
        .unwrap_err()
        .to_string()
}

/// libFuzzer, tekken_json, first input: a vocabulary of fewer than 256 ordinary tokens loaded,
/// then `encode` panicked in bpe.rs ("every BPE part is a vocabulary entry") on any byte
/// without a token.
#[test]
fn tekken_with_fewer_than_256_ordinary_tokens_is_refused_at_load() {
    let mut file = seed_json("tekken_json", "ok-v3-default-specials.json");
    let n = file["config"]["default_num_special_tokens"]
        .as_u64()
        .unwrap();
    file["config"]["default_vocab_size"] = json!(n + 200);
    let e = tekken_err(&file);
    assert!(
        e.contains("t/tekken.json")
            && e.contains("leaves 200 ordinary tokens")
            && e.contains("256"),
        "{e}"
    );
}

/// Found writing the harness: `default_num_special_tokens` sized a list of filler names before
/// any check, so 10^12 asked for terabytes.
#[test]
fn tekken_special_token_count_is_capped_before_anything_is_allocated() {
    let mut file = seed_json("tekken_json", "ok-v3-default-specials.json");
    let entries = file["vocab"].as_array().unwrap().len() as u64;
    file["config"]["default_num_special_tokens"] = json!(1_000_000_000_000u64);
    file["config"]["default_vocab_size"] = json!(1_000_000_000_000u64 + entries);
    let e = tekken_err(&file);
    assert!(
        e.contains("config.default_num_special_tokens is 1000000000000, implausibly many"),
        "{e}"
    );
}

/// Found writing the harness: a file that lists its own special tokens without `<s>` loaded,
/// and `Tokenizer::bos_id` then panicked ("tekken always has <s>") on the first prompt.
#[test]
fn tekken_without_bos_or_eos_is_refused_at_load() {
    for missing in ["<s>", "</s>"] {
        let mut file = seed_json("tekken_json", "ok-v7-listed-specials.json");
        let specials: Vec<Value> = file["special_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                if t["token_str"] == missing {
                    json!({"rank": t["rank"], "token_str": "[X]", "is_control": true})
                } else {
                    t.clone()
                }
            })
            .collect();
        file["special_tokens"] = Value::Array(specials);
        let e = tekken_err(&file);
        assert!(
            e.contains(&format!("special_tokens has no {missing:?}")),
            "{e}"
        );
    }
    // And what loads always has them.
    let ok = serde_json::to_vec(&seed_json("tekken_json", "ok-v7-listed-specials.json")).unwrap();
    let t = Tokenizer::Tekken(Box::new(Tekken::from_bytes(Path::new("t"), &ok).unwrap()));
    assert_eq!((t.bos_id(), t.eos_id()), (1, 2));
}

/// libFuzzer, tokenizer_json, after 348 runs: invalid UTF-8 inside the `decoder` section made
/// the `tokenizers` crate panic (`expect("Helper")` in its decoder deserializer).
#[test]
fn tokenizer_json_with_invalid_utf8_inside_a_section_is_an_error_not_a_panic() {
    let text =
        serde_json::to_string(&seed_json("tokenizer_json", "ok-byte-level-bpe.json")).unwrap();
    let decoder = text.find("\"decoder\":").unwrap();
    let at = decoder + text[decoder..].find("ByteLevel").unwrap() + "ByteLeve".len();
    let mut bytes = text.into_bytes();
    bytes[at] = 0x94;
    let e = HfTokenizer::from_bytes(Path::new("t/tokenizer.json"), &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t/tokenizer.json") && e.contains("not valid JSON"),
        "{e}"
    );
    // The same section with a syntax error, also a panic before.
    let text =
        serde_json::to_string(&seed_json("tokenizer_json", "ok-byte-level-bpe.json")).unwrap();
    let broken = text.replacen("\"decoder\":{", "\"decoder\":{\"x\":[}", 1);
    let e = HfTokenizer::from_bytes(Path::new("t/tokenizer.json"), broken.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not valid JSON"), "{e}");
}

/// Bounded fuzz pass, tokenizer_json case 3718: a renamed vocabulary entry left the ids with a
/// hole, so `vocab_size` (the entry count) was below the ids `encode` returned, and every
/// caller's `id < vocab_size` check was wrong.
#[test]
fn tokenizer_json_vocab_size_covers_every_id() {
    let mut file = seed_json("tokenizer_json", "ok-byte-level-bpe.json");
    let vocab = file["model"]["vocab"].as_object_mut().unwrap();
    let top = vocab
        .iter()
        .max_by_key(|(_, id)| id.as_u64())
        .map(|(k, _)| k.clone())
        .unwrap();
    let entries = vocab.len();
    vocab[&top] = json!(entries + 100);
    let t = HfTokenizer::from_bytes(
        Path::new("t/tokenizer.json"),
        &serde_json::to_vec(&file).unwrap(),
    )
    .unwrap();
    assert_eq!(t.vocab_size(), entries + 101);
    let t = Tokenizer::Hf(Box::new(t));
    let ids = t
        .encode("the quick brown fox jumps over the lazy dog")
        .unwrap();
    assert!(
        ids.iter().all(|&id| (id as usize) < t.vocab_size()),
        "{ids:?}"
    );
    assert!(t.decode(&ids, SpecialTokenPolicy::Keep).is_ok());
}

/// libFuzzer, gguf, after 253 runs: a metadata key holding a newline was copied into the error,
/// which then spanned two lines (and could forge an `error:` line of its own).
#[test]
fn names_from_the_file_are_escaped_in_errors() {
    let w = GgufWriter::default().kv("general.arch\nerror: forged", W::Raw(99, vec![]));
    let e = GgufFile::from_bytes("t/model.gguf", w.build())
        .err()
        .unwrap()
        .to_string();
    assert!(
        !e.contains('\n') && e.contains("general.arch\\nerror: forged"),
        "{e}"
    );
    // And a key a megabyte long is cut, not copied whole.
    let long = "k".repeat(1 << 20);
    let w = GgufWriter::default().kv(&long, W::Raw(99, vec![]));
    let e = GgufFile::from_bytes("t/model.gguf", w.build())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.len() < 1000 && e.contains("bytes in all)"),
        "{} bytes",
        e.len()
    );
    // The same in safetensors tensor names.
    let header = r#"{"a\nb":{"dtype":"BF16","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let e = SafetensorsFile::from_bytes(Path::new("t/x.safetensors"), &bytes)
        .err()
        .unwrap()
        .to_string();
    assert!(!e.contains('\n') && e.contains("a\\nb"), "{e}");
}

fn llama(block_count: u32, tokens: &[&str]) -> GgufFile {
    let w = GgufWriter::default()
        .kv("general.architecture", s("llama"))
        .kv("llama.embedding_length", W::U32(32))
        .kv("llama.block_count", W::U32(block_count))
        .kv("llama.feed_forward_length", W::U32(32))
        .kv("llama.attention.head_count", W::U32(2))
        .kv("llama.attention.layer_norm_rms_epsilon", W::F32(1e-5))
        .kv("tokenizer.ggml.tokens", str_arr(tokens))
        .f32_tensor(
            "token_embd.weight",
            &[32, tokens.len() as u64],
            &vec![0.0; 32 * tokens.len()],
        );
    GgufFile::from_bytes("t/model.gguf", w.build()).unwrap()
}

/// Found writing the harness: `llama.block_count` was accepted up to u32::MAX and sized
/// `Vec::with_capacity` of layers (720 bytes each) before any tensor was looked for: about
/// 3 TB for a 4-billion count. Counts now have the same limits as params.json / config.json.
#[test]
fn gguf_layer_count_is_capped_before_anything_is_allocated() {
    let e = load_llama(&llama(u32::MAX, &["a", "b"])).err().unwrap();
    assert!(
        matches!(&e.kind, GgufErrorKind::BadValue { key, reason } if key == "llama.block_count" && reason.contains("out of range (1..=1024)")),
        "{e}"
    );
    // Within the limit the load goes on, to the first missing tensor.
    let e = load_llama(&llama(1024, &["a", "b"])).err().unwrap();
    assert!(
        matches!(&e.kind, GgufErrorKind::MissingTensor { tensor } if tensor == "blk.0.attn_norm.weight"),
        "{e}"
    );
}

/// Found by the harness's config invariants: an empty `tokenizer.ggml.tokens` gave a config
/// with `vocab_size` 0.
#[test]
fn gguf_with_no_tokens_is_refused() {
    let e = llama_config(&llama(1, &[])).err().unwrap();
    assert!(
        e.to_string().contains("tokenizer.ggml.tokens") && e.to_string().contains("0 tokens"),
        "{e}"
    );
}

/// Found writing the property test: a safetensors header naming a tensor twice kept the last
/// entry silently (a JSON map); the first one's bytes became a gap, or, with equal ranges, the
/// file loaded.
#[test]
fn safetensors_tensor_named_twice_is_refused() {
    let header = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let e = SafetensorsFile::from_bytes(Path::new("t/x.safetensors"), &bytes)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`a` appears twice"), "{e}");
}

/// Tree-edit property test (1 run in 100): `config.pattern` set to "" panicked (an index out of
/// bounds) on its first empty match instead of being refused. An empty match has no tokens, so
/// the coverage check refuses the pattern; one that matches the empty string only sometimes
/// still works.
#[test]
fn tekken_split_pattern_with_empty_matches_is_refused_not_a_panic() {
    let mut file = seed_json("tekken_json", "ok-v3-default-specials.json");
    file["config"]["pattern"] = json!("");
    let e = tekken_err(&file);
    assert!(e.contains("config.pattern does not match every character"), "{e}");

    file["config"]["pattern"] = json!(r"[^§]*");
    let bytes = serde_json::to_vec(&file).unwrap();
    let t = Tekken::from_bytes(Path::new("t/tekken.json"), &bytes).unwrap();
    assert_eq!(t.decode(&t.encode("a b").unwrap(), SpecialTokenPolicy::Raise).unwrap(), "a b");
    assert!(t.encode("a§b").is_err());
}

/// Bounded fuzz pass, tekken_json case 40494: a `config.pattern` that lost its `\p{N}` and
/// punctuation alternatives loaded, and encoding silently dropped every digit and comma (the
/// regex's unmatched text; tiktoken drops it too). Now refused at load, and any gap left at
/// encode time is an error.
#[test]
fn tekken_split_pattern_that_skips_text_is_refused() {
    let mut file = seed_json("tekken_json", "ok-v3-default-specials.json");
    file["config"]["pattern"] = json!(r"[\p{L}]+|\s+");
    let e = tekken_err(&file);
    assert!(
        e.contains("config.pattern does not match every character") && e.contains("','"),
        "{e}"
    );

    // A pattern that covers the load-time probe but not `§`: the gap is found when encoding.
    file["config"]["pattern"] = json!(r"[^§]+");
    let bytes = serde_json::to_vec(&file).unwrap();
    let t = Tekken::from_bytes(Path::new("t/tekken.json"), &bytes).unwrap();
    assert_eq!(
        t.decode(&t.encode("a b").unwrap(), SpecialTokenPolicy::Raise)
            .unwrap(),
        "a b"
    );
    let e = t.encode("a§b").unwrap_err();
    assert!(
        matches!(
            e,
            nemo_engine::tokenizer::TokenizerError::PatternGap { at: 1 }
        ),
        "{e}"
    );
}

/// Bounded fuzz pass, params_json case 82687: `norm_eps: 1e-75` is positive as the f64 it was
/// checked in and 0 as the f32 the norm uses (a zero row then normalises to 0/0). The same
/// check in GGUF's `llama.attention.layer_norm_rms_epsilon` (an f64 value there).
#[test]
fn an_epsilon_that_is_zero_in_f32_is_refused() {
    use nemo_engine::model::params::parse_params_json_bytes;
    let mut params = seed_json("params_json", "ok-nemo-12b.json");
    for (eps, ok) in [
        (1e-75, false),
        (1e-40, false),
        (1.2e-38, true),
        (1e-5, true),
    ] {
        params["norm_eps"] = json!(eps);
        let r = parse_params_json_bytes(
            Path::new("t/params.json"),
            &serde_json::to_vec(&params).unwrap(),
        );
        match r {
            Ok(c) => assert!(ok && c.norm_eps > 0.0, "{eps} accepted as {}", c.norm_eps),
            Err(e) => assert!(
                !ok && e.to_string().contains("`norm_eps`: 1e-"),
                "{eps}: {e}"
            ),
        }
    }
    let w = GgufWriter::default()
        .kv("general.architecture", s("llama"))
        .kv("llama.embedding_length", W::U32(32))
        .kv("llama.block_count", W::U32(1))
        .kv("llama.feed_forward_length", W::U32(32))
        .kv("llama.attention.head_count", W::U32(2))
        .kv("llama.attention.layer_norm_rms_epsilon", W::F64(1e-75))
        .kv("tokenizer.ggml.tokens", str_arr(&["a"]));
    let e = llama_config(&GgufFile::from_bytes("t/model.gguf", w.build()).unwrap())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("layer_norm_rms_epsilon")
            && e.to_string().contains("not a usable epsilon"),
        "{e}"
    );
}
