//! Structured outputs (src/structured) over the real tokenizers: Nemo's tekken.json and the
//! demo model's tokenizer.json. Each test walks a grammar with random logits, drawing only what
//! the mask allows, and checks the finished text with an independent reader (serde_json, a
//! regex engine, string equality), so a mask with a wrong bit order, a token consumed twice or
//! a grammar stopped early fails here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use nemo_engine::sampling::rng::splitmix64;
use nemo_engine::sampling::{apply_token_mask, is_allowed, sample_at, SamplingParams};
use nemo_engine::structured::{Constraint, Grammar, GrammarError, Grammars};
use nemo_engine::gguf::{build_tokenizer, GgufFile, DEMO_MODEL_PATH};
use nemo_engine::tokenizer::{HfTokenizer, SpecialTokenPolicy, Tokenizer};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tekken() -> Arc<Tokenizer> {
    let path = std::env::var_os("NEMO_TEKKEN").map(PathBuf::from).unwrap_or_else(|| root().join("models/tekken/tekken.json"));
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    Arc::new(Tokenizer::from_path(&path).unwrap())
}

/// The demo model's byte-level BPE (49152 tokens), built from its GGUF file's metadata.
fn smollm2() -> Arc<Tokenizer> {
    let path = root().join(DEMO_MODEL_PATH);
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    let gguf = build_tokenizer(&GgufFile::open(&path).unwrap()).unwrap();
    let (bos, eos) = (gguf.bos_id.unwrap(), gguf.eos_id.unwrap());
    Arc::new(Tokenizer::Hf(Box::new(HfTokenizer::from_tokenizer(gguf.tokenizer, bos, eos))))
}

/// Logits in [0, 8): a different random ranking of the vocabulary at every step.
fn random_logits(vocab: usize, seed: u64) -> Vec<f32> {
    (0..vocab as u64).map(|t| (splitmix64(seed, t) >> 40) as f32 / (1u64 << 24) as f32 * 8.0).collect()
}

struct Walk {
    text: String,
    tokens: Vec<u32>,
    ended_by_eos: bool,
    mask_us: Vec<f64>,
}

/// Draws up to `max_tokens` tokens under the grammar, as the engine does: mask, sample, consume;
/// the tokenizer's EOS or a finished grammar ends the walk.
fn walk(tokenizer: &Tokenizer, vocab: usize, mut grammar: Grammar, seed: u64, max_tokens: usize) -> Walk {
    let params = SamplingParams { temperature: 1.0, seed, ..SamplingParams::greedy() };
    let (mut tokens, mut mask, mut mask_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut ended_by_eos = false;
    for step in 0..max_tokens {
        let start = Instant::now();
        grammar.fill_mask(&mut mask).unwrap();
        mask_us.push(start.elapsed().as_secs_f64() * 1e6);
        let mut logits = random_logits(vocab, seed * 1000 + step as u64);
        apply_token_mask(&mut logits, &mask).unwrap();
        let token = sample_at(&params, &logits, step as u64).unwrap();
        assert!(is_allowed(&mask, token), "drew {token}, which the mask forbids");
        grammar.consume(token).unwrap();
        if token == tokenizer.eos_id() {
            ended_by_eos = true;
            break;
        }
        tokens.push(token);
        if grammar.is_finished() {
            break;
        }
    }
    let text = tokenizer.decode(&tokens, SpecialTokenPolicy::Raise).unwrap();
    Walk { text, tokens, ended_by_eos, mask_us }
}

fn finished(w: &Walk) -> bool {
    w.ended_by_eos || !w.tokens.is_empty()
}

#[test]
fn json_schema_outputs_parse_and_follow_the_schema() {
    let tokenizer = tekken();
    let grammars = Grammars::new(tokenizer.clone(), 131_072, &[]).unwrap();
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}
        },
        "required": ["city", "days", "unit", "tags"],
        "additionalProperties": false,
        "x-guidance": {"whitespace_flexible": false}
    });
    let grammar = grammars.compile(&Constraint::JsonSchema(schema)).unwrap();
    let mut mask_us = Vec::new();
    for seed in 0..8 {
        let w = walk(&tokenizer, 131_072, grammar.clone(), seed, 200);
        assert!(finished(&w) && (w.ended_by_eos || grammar_done(&w)), "seed {seed}: unfinished {:?}", w.text);
        let v: Value = serde_json::from_str(&w.text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {:?}", w.text));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 4, "{v}");
        assert!(o["city"].as_str().unwrap().chars().count() <= 12, "{v}");
        assert!((1..=14).contains(&o["days"].as_i64().unwrap()), "{v}");
        assert!(["celsius", "fahrenheit"].contains(&o["unit"].as_str().unwrap()), "{v}");
        let tags = o["tags"].as_array().unwrap();
        assert!(tags.len() <= 3 && tags.iter().all(Value::is_boolean), "{v}");
        mask_us.extend(w.mask_us);
    }
    mask_us.sort_by(f64::total_cmp);
    println!(
        "tekken (131072 tokens), JSON schema: {} masks, median {:.0} us, p99 {:.0} us",
        mask_us.len(),
        mask_us[mask_us.len() / 2],
        mask_us[mask_us.len() * 99 / 100]
    );
}

/// The walk stopped because the grammar could take nothing more (not because it ran out).
fn grammar_done(w: &Walk) -> bool {
    w.tokens.len() < 200
}

#[test]
fn any_json_object_is_an_object() {
    let tokenizer = smollm2();
    let vocab = tokenizer.vocab_size();
    let grammars = Grammars::new(tokenizer.clone(), vocab, &[]).unwrap();
    let grammar = grammars.compile(&Constraint::JsonObject).unwrap();
    let mut complete = 0;
    for seed in 0..6 {
        let w = walk(&tokenizer, vocab, grammar.clone(), seed, 60);
        // Random logits rarely close an open object within 60 tokens; whatever came must still
        // be the start of one, and a finished one must parse.
        assert!(w.text.trim_start().starts_with('{'), "seed {seed}: {:?}", w.text);
        if w.ended_by_eos {
            complete += 1;
            assert!(serde_json::from_str::<Value>(&w.text).unwrap().is_object(), "{:?}", w.text);
        }
    }
    println!("{complete} of 6 random walks closed their object");
}

#[test]
fn regex_outputs_match_the_whole_pattern() {
    let tokenizer = tekken();
    let grammars = Grammars::new(tokenizer.clone(), 131_072, &[]).unwrap();
    let pattern = r"[A-Z][a-z]{2,5}-[0-9]{3}( (yes|no))?";
    let grammar = grammars.compile(&Constraint::Regex(pattern.into())).unwrap();
    let full = fancy_regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    for seed in 0..10 {
        let w = walk(&tokenizer, 131_072, grammar.clone(), seed, 40);
        assert!(full.is_match(&w.text).unwrap(), "seed {seed}: {:?} does not match {pattern}", w.text);
    }
}

#[test]
fn a_choice_output_is_exactly_one_choice() {
    let tokenizer = tekken();
    let grammars = Grammars::new(tokenizer.clone(), 131_072, &[]).unwrap();
    // Regex metacharacters, a shared prefix and non-ASCII text must all come out literally.
    let choices: Vec<String> = ["positive", "positive (mostly)", "neg.*ative", "naïve ☃", "a|b"].map(String::from).to_vec();
    let grammar = grammars.compile(&Constraint::Choice(choices.clone())).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let w = walk(&tokenizer, 131_072, grammar.clone(), seed, 20);
        assert!(choices.contains(&w.text), "seed {seed}: {:?} is not a choice", w.text);
        seen.insert(w.text);
    }
    assert!(seen.len() >= 3, "random logits should reach several choices: {seen:?}");
}

#[test]
fn a_lark_grammar_constrains_the_output() {
    let tokenizer = smollm2();
    let vocab = tokenizer.vocab_size();
    let grammars = Grammars::new(tokenizer.clone(), vocab, &[]).unwrap();
    let lark = r#"start: "call " NAME "(" NUMBER ("," NUMBER)* ")"
NAME: /[a-z]{1,6}/
NUMBER: /[0-9]{1,3}/
"#;
    let grammar = grammars.compile(&Constraint::Lark(lark.into())).unwrap();
    let full = fancy_regex::Regex::new(r"^call [a-z]{1,6}\([0-9]{1,3}(,[0-9]{1,3})*\)$").unwrap();
    let prefix = fancy_regex::Regex::new(r"^call [a-z]{0,6}(\([0-9]{0,3}(,[0-9]{0,3})*)?$").unwrap();
    for seed in 0..8 {
        let w = walk(&tokenizer, vocab, grammar.clone(), seed, 40);
        let ok = if w.ended_by_eos || grammar_done_within(&w, 40) { full.is_match(&w.text) } else { prefix.is_match(&w.text) };
        assert!(ok.unwrap(), "seed {seed}: {:?}", w.text);
    }
}

fn grammar_done_within(w: &Walk, max: usize) -> bool {
    w.tokens.len() < max
}

#[test]
fn a_model_vocabulary_past_the_tokenizer_never_allows_the_padding_ids() {
    let tokenizer = smollm2();
    let vocab = tokenizer.vocab_size() + 77; // a padded embedding, as some checkpoints have
    let grammars = Grammars::new(tokenizer.clone(), vocab, &[]).unwrap();
    let mut grammar = grammars.compile(&Constraint::Regex(".{1,40}".into())).unwrap();
    let mut mask = Vec::new();
    grammar.fill_mask(&mut mask).unwrap();
    assert_eq!(mask.len(), vocab.div_ceil(32));
    assert!((tokenizer.vocab_size()..vocab).all(|t| !is_allowed(&mask, t as u32)));
    assert!(is_allowed(&mask, tokenizer.encode("a").unwrap()[0]));
    // A model with fewer ids than the tokenizer (and not a multiple of 32): its last word
    // carries nothing past its own vocabulary, though the tokenizer's tokens there would fit.
    let small = tokenizer.vocab_size() - 5;
    let mut grammar = Grammars::new(tokenizer.clone(), small, &[]).unwrap().compile(&Constraint::Regex(".{1,40}".into())).unwrap();
    grammar.fill_mask(&mut mask).unwrap();
    assert_eq!(mask.len(), small.div_ceil(32));
    assert_eq!(mask[mask.len() - 1] >> (small % 32), 0, "bits past the model's vocabulary");
    assert!((small - 40..small).any(|t| is_allowed(&mask, t as u32)), "ids just below the cut stay allowed");
}

#[test]
fn special_tokens_are_never_text() {
    let tokenizer = tekken();
    let grammars = Grammars::new(tokenizer.clone(), 131_072, &[]).unwrap();
    let mut grammar = grammars.compile(&Constraint::Regex(r"[\[\]A-Z_]{0,20}".into())).unwrap();
    let mut mask = Vec::new();
    grammar.fill_mask(&mut mask).unwrap();
    for name in ["[INST]", "[/INST]", "[TOOL_CALLS]", "<s>"] {
        let id = tokenizer.special_id(name).unwrap();
        assert!(!is_allowed(&mask, id), "{name} would be emitted as text");
    }
    assert!(is_allowed(&mask, tokenizer.eos_id()), "an empty match may end at once");
}

#[test]
fn invalid_constraints_are_refused_with_the_reason() {
    let grammars = Grammars::new(smollm2(), 49_152, &[]).unwrap();
    let cases = [
        Constraint::Regex("(unclosed".into()),
        Constraint::Lark("start: undefined_rule".into()),
        Constraint::JsonSchema(json!({"type": "no-such-type"})),
        Constraint::JsonSchema(json!({"$ref": "#/$defs/missing"})),
        Constraint::Choice(vec![]),
    ];
    for c in cases {
        match grammars.compile(&c) {
            Err(GrammarError::Invalid { kind, why }) => {
                assert_eq!(kind, c.kind());
                assert!(!why.is_empty());
                println!("{kind}: {why}");
            }
            other => panic!("{c:?} compiled: {other:?}"),
        }
    }
}

fn rule_chain(n: usize) -> String {
    let mut lark = String::from("start: r0\n");
    for i in 0..n {
        lark += &format!("r{i}: r{} \"a\"\n", i + 1);
    }
    lark + &format!("r{n}: \"b\"\n")
}

fn ref_chain(n: usize) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..n {
        defs.insert(format!("d{i}"), json!({"type": "array", "items": {"$ref": format!("#/$defs/d{}", i + 1)}}));
    }
    defs.insert(format!("d{n}"), json!({"type": "integer"}));
    json!({"$defs": defs, "$ref": "#/$defs/d0"})
}

/// Constraints built to exhaust the compiler are refused (or compile) within llguidance's
/// fuel limits, never hang or panic: each must come back within a few seconds.
#[test]
fn hostile_constraints_are_refused_or_compiled_quickly() {
    let grammars = Grammars::new(tekken(), 131_072, &[]).unwrap();
    let deep = (0..2000).fold(json!({"type": "integer"}), |inner, _| json!({"type": "array", "items": inner}));
    let many_props: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("p{i}"), json!({"type": "string", "pattern": "[a-z]{1,50}"}))).collect();
    let cases = [
        ("nested repetition", Constraint::Regex("((a{1,100}){1,100}){1,100}".into())),
        ("huge counted repetition", Constraint::Regex("x{100000}".into())),
        ("blown-up alternation", Constraint::Regex(format!("({})*z", (0..3000).map(|i| format!("a{i}b")).collect::<Vec<_>>().join("|")))),
        ("2000 nested arrays", Constraint::JsonSchema(deep)),
        ("5000 properties", Constraint::JsonSchema(json!({"type": "object", "properties": many_props, "required": ["p0", "p4999"]}))),
        ("left recursion", Constraint::Lark("start: start \"a\" | \"b\"\n".into())),
        ("20000 choices", Constraint::Choice((0..20000).map(|i| format!("choice {i}")).collect())),
        // Chains the compiler follows by recursion: 1000 links overflowed a 2 MiB stack (a
        // process abort) before compiling moved to a thread of its own.
        ("a 6000-rule Lark chain", Constraint::Lark(rule_chain(6000))),
        ("a 2500-link $ref chain", Constraint::JsonSchema(ref_chain(2500))),
        ("a 20000-rule Lark chain (over the size limit)", Constraint::Lark(rule_chain(20000))),
    ];
    for (what, c) in cases {
        let started = Instant::now();
        let outcome = grammars.compile(&c).and_then(|mut g| g.fill_mask(&mut Vec::new()));
        let took = started.elapsed();
        println!("{what}: {} in {took:.2?}", match &outcome { Ok(()) => "compiled".to_string(), Err(e) => format!("refused ({e})").chars().take(120).collect() });
        assert!(took.as_secs_f64() < 10.0, "{what} took {took:?}");
    }
}

/// A complete (or completable) grammar allows the model's stop ids, not only the tokenizer's
/// EOS: an HF chat model ends its turn with its own token.
#[test]
fn the_model_stop_ids_end_a_grammar() {
    let tokenizer = smollm2();
    let (eos, other) = (tokenizer.eos_id(), tokenizer.special_id("<|endoftext|>").unwrap());
    assert_ne!(eos, other);
    let mut mask = Vec::new();
    let mut first_mask = |ends: &[u32]| {
        let mut g = Grammars::new(tokenizer.clone(), 49_152, ends).unwrap().compile(&Constraint::Regex("[a-z]{0,3}".into())).unwrap();
        g.fill_mask(&mut mask).unwrap();
        (is_allowed(&mask, eos), is_allowed(&mask, other))
    };
    assert_eq!(first_mask(&[]), (true, false), "the tokenizer's EOS by default");
    assert_eq!(first_mask(&[other, eos]), (true, true));
    assert_eq!(first_mask(&[other]), (false, true));
    let err = Grammars::new(tokenizer.clone(), 49_152, &[60_000]).unwrap_err();
    assert!(matches!(err, GrammarError::EosOutsideVocabulary { eos: 60_000, .. }), "{err}");
}

/// A constraint compiled again comes from the cache: a copy of the start state that walks
/// exactly as a fresh compile does, and that no earlier copy's tokens have advanced.
#[test]
fn a_cached_constraint_walks_as_a_fresh_compile() {
    let tokenizer = tekken();
    let grammars = Grammars::new(tokenizer.clone(), 131_072, &[]).unwrap();
    let schema = Constraint::JsonSchema(json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer"}}, "required": ["city", "days"], "additionalProperties": false}));
    let regex = Constraint::Regex("[a-z]{3,9}( [0-9]{1,4})+".into());
    for (i, c) in [schema, regex].iter().enumerate() {
        let (hits, misses) = grammars.cache_counts();
        let first = grammars.compile(c).unwrap();
        assert_eq!(grammars.cache_counts(), (hits, misses + 1), "compiled");
        let walked = walk(&tokenizer, 131_072, first, 40 + i as u64, 48);
        assert!(walked.tokens.len() > 3, "{:?}", walked.text);
        // The start state is intact after a copy walked: every seed walks as a fresh compile.
        for seed in [40 + i as u64, 7, 8] {
            let cached = grammars.compile(c).unwrap();
            let fresh = grammars.compile_uncached(c).unwrap();
            let (a, b) = (walk(&tokenizer, 131_072, cached, seed, 48), walk(&tokenizer, 131_072, fresh, seed, 48));
            assert_eq!((&a.tokens, a.ended_by_eos), (&b.tokens, b.ended_by_eos), "seed {seed}");
        }
        assert_eq!(grammars.cache_counts(), (hits + 3, misses + 1), "served from the cache");
    }
}
