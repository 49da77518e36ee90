//! Grammars in the batch: requests constrained by a regex, a choice list or a JSON schema run
//! beside unconstrained ones through chunked prefill and preemption, and each generates exactly
//! its solo run (masked logits, logprobs of the masked row, stopped once the grammar is complete).
//! The tiny model's vocabulary is the tiny byte-level tekken (tests/common/tiny_tekken.rs).

use std::sync::Arc;

use nemo_engine::sampling::SamplingParams;
use nemo_engine::scheduler::{Admission, FinishReason};
use nemo_engine::structured::{Constraint, Grammars};
use nemo_engine::tokenizer::{SpecialTokenPolicy, Tekken, Tokenizer};
use serde_json::json;

use super::batched_equals_solo::{batched_run_matches_solo, requests, solo_run, tiny};
use super::tiny_tekken::tiny_tekken_json;

const REGEX: &str = r"[a-z]{2,8}( [0-9]{1,3}){1,3}";
const CHOICES: [&str; 3] = ["alpha", "beta gamma", "delta"];

fn constraint(i: usize) -> Option<Constraint> {
    match i % 4 {
        0 => Some(Constraint::Regex(REGEX.into())),
        1 => Some(Constraint::Choice(CHOICES.map(String::from).to_vec())),
        2 => Some(Constraint::JsonSchema(json!({
            "type": "object",
            "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99},
                           "c": {"enum": ["x", "yz"]}},
            "required": ["ok", "n", "c"], "additionalProperties": false,
            "x-guidance": {"whitespace_flexible": false}
        }))),
        _ => None,
    }
}

#[test]
fn grammars_in_the_batch_equal_the_solo_runs() {
    let tekken = Tekken::from_slice(tiny_tekken_json().as_bytes()).unwrap();
    let tokenizer = Arc::new(Tokenizer::Tekken(Box::new(tekken)));
    let grammars = Grammars::new(tokenizer.clone(), tiny().config.vocab_size).unwrap();
    let mut constrained = requests(|i| SamplingParams { temperature: if i % 3 == 0 { 0.0 } else { 0.9 }, seed: 5 + i as u64, ..SamplingParams::default() });
    for (i, r) in constrained.iter_mut().enumerate() {
        r.grammar = constraint(i).map(|c| grammars.compile(&c).unwrap());
        r.max_tokens = r.max_tokens.max(24);
    }
    batched_run_matches_solo(constrained.clone(), Admission::Optimistic);

    // Not vacuous: what the grammars let through is what they describe.
    let full_regex = fancy_regex::Regex::new(&format!("^(?:{REGEX})$")).unwrap();
    let mut completed = 0;
    for (i, r) in constrained.iter().enumerate() {
        let (tokens, _, reason) = solo_run(tiny(), r);
        let text = tokenizer.decode(&tokens, SpecialTokenPolicy::Ignore).unwrap();
        let Some(c) = constraint(i) else { continue };
        if reason != FinishReason::Stop {
            continue;
        }
        completed += 1;
        match c {
            Constraint::Regex(_) => assert!(full_regex.is_match(&text).unwrap(), "request {i}: {text:?}"),
            Constraint::Choice(_) => assert!(CHOICES.contains(&text.as_str()), "request {i}: {text:?}"),
            _ => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("request {i}: {e}: {text:?}"));
                assert_eq!(v.as_object().map(|o| o.len()), Some(3), "request {i}: {text:?}");
            }
        }
    }
    assert!(completed >= 6, "only {completed} of 9 constrained requests completed their grammar");
}
