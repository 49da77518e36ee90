//! Streaming decode: pieces concatenate to the one-shot decode, and a character split across
//! tokens comes out whole, only once all of its bytes have arrived.

use nemo_engine::tokenizer::{SpecialTokenPolicy, StreamDecoder, Tokenizer};

use crate::{fixture, ids_of, tekken};

fn stream_all(tok: &Tokenizer, ids: &[u32], policy: SpecialTokenPolicy) -> Vec<String> {
    let mut d = StreamDecoder::new(tok, policy);
    let mut pieces: Vec<String> = ids.iter().map(|&id| d.push(id).unwrap()).collect();
    pieces.push(d.finish());
    pieces
}

#[test]
fn multibyte_characters_split_across_byte_tokens_come_out_whole() {
    let tok = tekken();
    // Single-byte tokens have id 1000 + byte.
    for text in ["😀", "é", "你", "👨‍👩‍👧", "a😀b"] {
        let ids: Vec<u32> = text.bytes().map(|b| 1000 + b as u32).collect();
        let pieces = stream_all(tok, &ids, SpecialTokenPolicy::Ignore);
        assert_eq!(pieces.concat(), text);
        for p in &pieces {
            assert!(!p.contains('\u{FFFD}'), "{text}: piece {p:?}");
        }
        let mut d = StreamDecoder::new(tok, SpecialTokenPolicy::Ignore);
        let first_char_len = text.chars().next().unwrap().len_utf8();
        for (k, &id) in ids.iter().enumerate().take(first_char_len) {
            let out = d.push(id).unwrap();
            if k + 1 < first_char_len {
                assert_eq!(out, "", "{text}: byte {k} must be held back");
                assert!(d.has_pending());
            } else {
                assert_eq!(out, &text[..first_char_len]);
            }
        }
    }
}

#[test]
fn stream_equals_one_shot_decode_on_every_fixture() {
    let tok = tekken();
    let decode = fixture("decode.json");
    for case in decode["cases"].as_array().unwrap() {
        let ids = ids_of(&case["ids"]);
        for (policy, key) in [(SpecialTokenPolicy::Ignore, "ignore"), (SpecialTokenPolicy::Keep, "keep")] {
            assert_eq!(stream_all(tok, &ids, policy).concat(), case[key].as_str().unwrap(), "{} {key}", case["name"]);
        }
    }
    let encode = fixture("encode.json");
    let mut tokens_split_inside_a_char = 0;
    for case in encode["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        let pieces = stream_all(tok, &ids, SpecialTokenPolicy::Ignore);
        assert_eq!(pieces.concat(), text, "{}", case["name"]);
        if !text.contains('\u{FFFD}') {
            assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{}: a piece broke a character", case["name"]);
        }
        tokens_split_inside_a_char +=
            ids.iter().filter_map(|&id| tok.token_bytes(id)).filter(|b| std::str::from_utf8(b).is_err()).count();
    }
    assert!(
        tokens_split_inside_a_char > 10,
        "fixtures should exercise partial characters ({tokens_split_inside_a_char})"
    );
}
