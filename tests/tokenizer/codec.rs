//! Encoding and decoding, id for id and byte for byte with mistral_common.

use std::time::Instant;

use nemo_engine::tokenizer::{SpecialTokenPolicy, Tokenizer};

use crate::{fixture, ids_of, tekken};

#[test]
fn special_tokens_and_ids_match_mistral_common() {
    let f = fixture("encode.json");
    let tok = tekken();
    assert_eq!(tok.vocab_size() as u64, f["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.bos_id() as u64, f["bos_id"].as_u64().unwrap());
    assert_eq!(tok.eos_id() as u64, f["eos_id"].as_u64().unwrap());
    assert_eq!(tok.special_id("<unk>").map(u64::from), f["unk_id"].as_u64());
    assert_eq!(tok.special_id("<pad>").map(u64::from), f["pad_id"].as_u64());
    let specials = f["special_tokens"].as_array().unwrap();
    assert_eq!(specials.len(), 1000);
    for s in specials {
        let id = s["id"].as_u64().unwrap() as u32;
        let text = s["text"].as_str().unwrap();
        assert!(tok.is_special(id));
        assert_eq!(tok.special_text(id).as_deref(), Some(text), "special {id}");
        assert_eq!(tok.special_id(text), Some(id), "special {text}");
    }
    assert!(!tok.is_special(1000));
    for p in f["pieces"].as_array().unwrap() {
        let id = p["id"].as_u64().unwrap() as u32;
        let want: Vec<u8> = p["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        assert_eq!(tok.token_bytes(id).as_deref(), Some(want.as_slice()), "bytes of {id}");
    }
    assert!(tok.token_bytes(131072).is_none());
    assert!(tok.decode(&[131072], SpecialTokenPolicy::Ignore).is_err());
}

pub fn check_encode_fixtures(tok: &Tokenizer) -> usize {
    let f = fixture("encode.json");
    let mut failures = Vec::new();
    let cases = f["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let (bos, eos) = (case["bos"].as_bool().unwrap(), case["eos"].as_bool().unwrap());
        let want = ids_of(&case["ids"]);
        let got = tok.encode_with(text, bos, eos).unwrap();
        if got != want {
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            failures.push(format!(
                "{name}: first difference at {at}: got {:?} want {:?}",
                &got[at..(at + 5).min(got.len())],
                &want[at..(at + 5).min(want.len())]
            ));
        }
        // Ordinary ids decode back to the text (no special ids, valid UTF-8 in).
        let plain = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&plain, SpecialTokenPolicy::Ignore).unwrap(), text, "{name} round trip");
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    cases.len()
}

#[test]
fn encode_matches_mistral_common_on_every_fixture() {
    let n = check_encode_fixtures(tekken());
    assert!(n > 200, "fixture has {n} cases");
}

#[test]
fn literal_special_text_is_ordinary_text() {
    let tok = tekken();
    for text in ["[INST]", "<s>", "</s>", "[TOOL_CALLS]", "<SPECIAL_20>"] {
        let ids = tok.encode(text).unwrap();
        assert!(ids.iter().all(|&id| !tok.is_special(id)), "{text} gave a control id: {ids:?}");
        assert!(ids.len() > 1, "{text} should take several ordinary tokens: {ids:?}");
    }
}

#[test]
fn decode_matches_mistral_common() {
    let f = fixture("decode.json");
    let tok = tekken();
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        assert_eq!(
            tok.decode(&ids, SpecialTokenPolicy::Ignore).unwrap(),
            case["ignore"].as_str().unwrap(),
            "{name} ignore"
        );
        assert_eq!(tok.decode(&ids, SpecialTokenPolicy::Keep).unwrap(), case["keep"].as_str().unwrap(), "{name} keep");
        let has_special = ids.iter().any(|&i| tok.is_special(i));
        assert_eq!(tok.decode(&ids, SpecialTokenPolicy::Raise).is_err(), has_special, "{name} raise");
    }
}

/// A 100k-token input must not be the bottleneck of a 128k-context request.
#[test]
fn encodes_100k_tokens_quickly() {
    let tok = tekken();
    let para = "Mistral NeMo handles long documents: 128k tokens of context, in many languages — \
                français, deutsch, 中文, 日本語, русский, العربية — and code like `fn main() { println!(\"hi\"); }`.\n\n";
    let text = para.repeat(2600);
    let t = Instant::now();
    let ids = tok.encode(&text).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "encoded {} bytes into {} tokens in {:.3} s ({:.0} tokens/s)",
        text.len(),
        ids.len(),
        secs,
        ids.len() as f64 / secs
    );
    assert!(ids.len() > 100_000, "{} tokens", ids.len());
    assert!(secs < 10.0, "encoding 100k tokens took {secs:.1} s");
    let ws = " ".repeat(200_000) + "x" + &"\n".repeat(100_000);
    let t = Instant::now();
    let ids = tok.encode(&ws).unwrap();
    eprintln!("encoded 300k whitespace bytes into {} tokens in {:.3} s", ids.len(), t.elapsed().as_secs_f64());
    assert!(t.elapsed().as_secs_f64() < 10.0);
    assert_eq!(tok.decode(&ids, SpecialTokenPolicy::Ignore).unwrap(), ws);
}
