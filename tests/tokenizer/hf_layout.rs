//! The HF layout (`tokenizer.json` through the `tokenizers` crate) against the same fixtures.
//!
//! No real Nemo tokenizer.json can be downloaded here, so the test rebuilds the one
//! transformers' `MistralConverter` makes from tekken.json (the way HF layouts of Tekken models
//! are produced), checks it against digests of transformers' own output
//! (tests/fixtures/tokenizer/hf_conversion.json), then runs every encode, decode and chat
//! fixture through it.

use std::collections::HashMap;

use nemo_engine::tokenizer::{SpecialTokenPolicy, Tokenizer};
use serde_json::{json, Value};

use crate::{fixture, ids_of, tekken};

/// GPT-2 `bytes_to_unicode`, byte -> char.
fn byte_encoder() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec!['\0'; 256];
    for (b, c) in bs.into_iter().zip(cs) {
        table[b as usize] = char::from_u32(c).unwrap();
    }
    table
}

fn fnv1a64(data: &[u8]) -> String {
    let mut h: u64 = 0xCBF29CE484222325;
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x100000001B3);
    }
    format!("{h:016x}")
}

/// transformers' `MistralConverter`: byte-level vocab, merges from every split of every token
/// whose halves are tokens, ordered by the token's rank then the halves' ranks.
fn build_tokenizer_json(tek: &Tokenizer, conv: &Value) -> String {
    let enc = byte_encoder();
    let to_str = |b: &[u8]| -> String { b.iter().map(|&x| enc[x as usize]).collect() };
    let n_special = 1000u32;
    let pieces: Vec<Vec<u8>> =
        (n_special..tek.vocab_size() as u32).map(|id| tek.token_bytes(id).unwrap().into_owned()).collect();
    let rank: HashMap<&[u8], usize> = pieces.iter().enumerate().map(|(r, p)| (p.as_slice(), r)).collect();

    let mut vocab_lines = Vec::new();
    let mut vocab = serde_json::Map::new();
    for id in 0..n_special {
        let s = tek.special_text(id).unwrap();
        vocab_lines.push(format!("{s} {id}\n"));
        vocab.insert(s, json!(id));
    }
    let mut merges = Vec::new();
    let mut merges_text = String::new();
    for (r, p) in pieces.iter().enumerate() {
        let s = to_str(p);
        vocab_lines.push(format!("{s} {}\n", r as u32 + n_special));
        vocab.insert(s, json!(r as u32 + n_special));
        if p.len() < 2 {
            continue;
        }
        let mut local: Vec<(usize, usize, &[u8], &[u8])> = (1..p.len())
            .filter_map(|i| {
                let (l, rr) = p.split_at(i);
                Some((*rank.get(l)?, *rank.get(rr)?, l, rr))
            })
            .collect();
        local.sort_by_key(|&(a, b, _, _)| (a, b));
        for (_, _, l, rr) in local {
            let (l, rr) = (to_str(l), to_str(rr));
            merges_text.push_str(&format!("{l} {rr}\n"));
            merges.push(json!([l, rr]));
        }
    }
    assert_eq!(vocab.len() as u64, conv["vocab_count"].as_u64().unwrap());
    assert_eq!(
        fnv1a64(vocab_lines.concat().as_bytes()),
        conv["vocab_fnv1a64"].as_str().unwrap(),
        "vocab differs from transformers'"
    );
    assert_eq!(merges.len() as u64, conv["merges_count"].as_u64().unwrap());
    assert_eq!(
        fnv1a64(merges_text.as_bytes()),
        conv["merges_fnv1a64"].as_str().unwrap(),
        "merges differ from transformers'"
    );

    let added: Vec<Value> = (0..n_special)
        .map(|id| {
            json!({"id": id, "content": tek.special_text(id).unwrap(), "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    assert_eq!(&Value::Array(added[..3].to_vec()), &conv["added_tokens_head"]);
    let mut model = conv["model_settings"].clone();
    model["vocab"] = Value::Object(vocab);
    model["merges"] = Value::Array(merges);
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": conv["normalizer"], "pre_tokenizer": conv["pre_tokenizer"],
        "post_processor": conv["post_processor"], "decoder": conv["decoder"], "model": model,
    })
    .to_string()
}

#[test]
fn hf_tokenizer_json_matches_mistral_common_on_every_fixture() {
    let conv = fixture("hf_conversion.json");
    let text = build_tokenizer_json(tekken(), &conv);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, text).unwrap();
    let hf = Tokenizer::from_path(dir.path()).expect("tokenizer.json loads");
    assert!(matches!(hf, Tokenizer::Hf(_)), "a directory with only tokenizer.json is the HF layout");
    assert_eq!((hf.bos_id(), hf.eos_id(), hf.vocab_size()), (1, 2, 131072));
    assert_eq!(hf.special_id("[TOOL_CALLS]"), Some(9));

    let n = crate::codec::check_encode_fixtures(&hf);
    assert!(n > 200);
    let decode = fixture("decode.json");
    for case in decode["cases"].as_array().unwrap() {
        let ids = ids_of(&case["ids"]);
        assert_eq!(
            hf.decode(&ids, SpecialTokenPolicy::Ignore).unwrap(),
            case["ignore"].as_str().unwrap(),
            "{}",
            case["name"]
        );
        assert_eq!(
            hf.decode(&ids, SpecialTokenPolicy::Keep).unwrap(),
            case["keep"].as_str().unwrap(),
            "{}",
            case["name"]
        );
    }
    let (rendered, refused) = crate::chat::check_chat_fixtures(&hf);
    assert!(rendered >= 50 && refused >= 20);
}
