//! A byte-level v3 tekken.json of 1024 ids, the tiny fixture models' vocabulary: 20 default
//! specials (`<s>` = 1, `</s>` = 2), the 256 bytes (ids 20..276), then 748 two-character merges.
//! Real text (and grammars) tokenize with it, unlike Nemo's tekken.json, whose first 1000 ids
//! are all special.

use base64::Engine as _;
use serde_json::{json, Value};

/// Two-character merges over this alphabet (all printable ASCII).
pub const PAIR_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

pub fn pairs(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for &a in PAIR_ALPHABET {
        for &b in PAIR_ALPHABET {
            out.push(vec![a, b]);
        }
    }
    out.truncate(n);
    out
}

/// The ordinary tokens' bytes by rank (id = rank + 20).
pub fn tiny_tekken_pieces() -> Vec<Vec<u8>> {
    let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    pieces.extend(pairs(1024 - 20 - 256));
    pieces
}

pub fn tiny_tekken_json() -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let vocab: Vec<Value> = tiny_tekken_pieces()
        .iter()
        .enumerate()
        .map(|(rank, p)| json!({"rank": rank, "token_bytes": b64.encode(p), "token_str": null}))
        .collect();
    json!({
        "config": {"pattern": "[a-z0-9]+|[^a-z0-9]+", "default_vocab_size": 1024,
                   "default_num_special_tokens": 20, "version": "v3"},
        "vocab": vocab,
    })
    .to_string()
}
