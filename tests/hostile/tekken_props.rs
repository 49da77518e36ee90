//! tekken.json built from parts: random vocabularies (the 256 bytes, then random multi-byte
//! tokens) and random config fields (version, vocab size, special-token count and list). The
//! loader accepts exactly what mistral_common's `Tekkenizer` accepts (plus the two rules it
//! needs to be total: at least the 256 byte tokens, and `<s>` / `</s>` present), and whatever
//! it accepts encodes any text to ordinary ids that decode back to that text.

use std::path::Path;

use base64::Engine as _;
use nemo_engine::tokenizer::{SpecialTokenPolicy, Tekken};
use proptest::prelude::*;
use serde_json::{json, Value};

const PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Clone, Debug)]
struct Spec {
    /// Multi-byte tokens after the 256 single bytes (duplicates possible).
    extra: Vec<Vec<u8>>,
    version: String,
    num_special: u64,
    /// `default_vocab_size - num_special - entries` (negative: fewer than present).
    vocab_delta: i64,
    /// `None`: no `special_tokens` key.
    specials: Option<Vec<String>>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let token = prop::collection::vec(
        prop_oneof![4 => b'a'..=b'e', 1 => Just(b' '), 1 => any::<u8>()],
        2..5,
    );
    let version = prop::sample::select(vec![
        "v3",
        "v7",
        "v11",
        "v13",
        "v",
        "3",
        "vx",
        "v99999999999",
    ])
    .prop_map(String::from);
    let num_special = prop_oneof![6 => 0u64..40, 1 => Just(1000u64), 1 => Just(1u64 << 40)];
    let vocab_delta = prop_oneof![6 => Just(0i64), 1 => -300i64..5];
    let special_names = prop::sample::select(vec![
        "<unk>",
        "<s>",
        "</s>",
        "[INST]",
        "[/INST]",
        "<SPECIAL_3>",
        "x",
    ]);
    let specials = prop_oneof![
        2 => Just(None),
        1 => Just(Some(["<unk>", "<s>", "</s>", "[INST]", "[/INST]"].map(String::from).to_vec())),
        2 => prop::collection::vec(special_names.prop_map(String::from), 0..6).prop_map(Some),
    ];
    (
        prop::collection::vec(token, 0..24),
        version,
        num_special,
        vocab_delta,
        specials,
    )
        .prop_map(
            |(extra, version, num_special, vocab_delta, specials)| Spec {
                extra,
                version,
                num_special,
                vocab_delta,
                specials,
            },
        )
}

fn build(spec: &Spec) -> (Vec<u8>, bool) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    pieces.extend(spec.extra.iter().cloned());
    let vocab: Vec<Value> = pieces
        .iter()
        .enumerate()
        .map(|(rank, p)| json!({"rank": rank, "token_bytes": b64(p), "token_str": String::from_utf8(p.clone()).ok()}))
        .collect();
    let vocab_size = spec.num_special as i64 + pieces.len() as i64 + spec.vocab_delta;
    let mut obj = json!({
        "config": {"pattern": PATTERN, "default_vocab_size": vocab_size,
                   "default_num_special_tokens": spec.num_special, "version": spec.version},
        "vocab": vocab,
    });
    if let Some(list) = &spec.specials {
        let list: Vec<Value> = list
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"rank": i, "token_str": s, "is_control": true}))
            .collect();
        obj["special_tokens"] = Value::Array(list);
    }

    // The rules, as mistral_common states them (tekken.py), plus ours.
    let version = spec
        .version
        .strip_prefix('v')
        .and_then(|v| v.parse::<u32>().ok());
    let specials: Option<Vec<String>> = match (&spec.specials, version) {
        (Some(list), Some(_)) => Some(list.clone()),
        (None, Some(v)) if v <= 7 => Some(
            nemo_engine::tokenizer::tekken::DEFAULT_SPECIAL_TOKENS
                .map(String::from)
                .to_vec(),
        ),
        _ => None,
    };
    let inner = vocab_size - spec.num_special as i64;
    let mut unique = std::collections::BTreeSet::new();
    let valid = version.is_some()
        && vocab_size >= 0
        && specials.as_ref().is_some_and(|s| {
            let all: Vec<String> = s
                .iter()
                .cloned()
                .chain(
                    (s.len() as u64..spec.num_special.min(100_000))
                        .map(|i| format!("<SPECIAL_{i}>")),
                )
                .collect();
            s.len() as u64 <= spec.num_special
                && all.iter().all(|t| unique.insert(t.clone()))
                && s.iter().any(|t| t == "<s>")
                && s.iter().any(|t| t == "</s>")
        })
        && spec.num_special <= 1 << 20
        && inner >= 256
        && inner as usize <= pieces.len()
        && {
            let mut seen = std::collections::BTreeSet::new();
            pieces[..inner as usize]
                .iter()
                .all(|p| seen.insert(p.clone()))
        };
    (serde_json::to_vec(&obj).unwrap(), valid)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn accepts_exactly_the_valid_files(spec in spec()) {
        let (bytes, valid) = build(&spec);
        let path = Path::new("prop/tekken.json");
        match Tekken::from_bytes(path, &bytes) {
            Ok(t) => prop_assert!(valid, "accepted {spec:?} ({t:?})"),
            Err(e) => {
                prop_assert!(!valid, "refused {spec:?}: {e}");
                prop_assert!(e.to_string().contains("prop/tekken.json"), "{}", e);
            }
        }
        crate::harness::tekken_json(&bytes);
    }

    #[test]
    fn any_text_round_trips(extra in prop::collection::vec(prop::collection::vec(b'a'..=b'f', 2..6), 0..60), texts in prop::collection::vec(".{0,40}", 1..8)) {
        let spec = Spec { extra, version: "v3".into(), num_special: 30, vocab_delta: 0, specials: None };
        let (bytes, _) = build(&spec);
        // Duplicated extra tokens are refused; the rest must round-trip.
        let Ok(t) = Tekken::from_bytes(Path::new("prop/tekken.json"), &bytes) else { return Ok(()) };
        for text in &texts {
            let ids = t.encode(text).unwrap();
            prop_assert!(ids.iter().all(|&id| !t.is_special(id) && (id as usize) < t.vocab_size()));
            prop_assert_eq!(&t.decode(&ids, SpecialTokenPolicy::Raise).unwrap(), text);
        }
    }
}
