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
    let grammars = Grammars::new(tokenizer.clone(), tiny().config.vocab_size, &[]).unwrap();
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

/// A grammar completed by the last token `max_tokens` allows ends with `Stop`, not `Length`:
/// the output is whole.
#[test]
fn a_grammar_completed_on_the_last_allowed_token_is_a_stop() {
    use nemo_engine::engine::{CpuBatchBackend, CpuBatchOptions};
    use nemo_engine::scheduler::{Engine, EngineOptions, Event, Request};
    let tekken = Tekken::from_slice(tiny_tekken_json().as_bytes()).unwrap();
    let tokenizer = Arc::new(Tokenizer::Tekken(Box::new(tekken)));
    let grammars = Grammars::new(tokenizer.clone(), tiny().config.vocab_size, &[]).unwrap();
    // One choice: the grammar forces its canonical tokens, so their count is the answer's length.
    let exact = tokenizer.encode("alpha beta").unwrap().len();
    let backend = CpuBatchBackend::new(tiny(), CpuBatchOptions { block_size: 16, num_blocks: 8, max_step_tokens: 64 });
    let mut engine = Engine::new(backend, EngineOptions { max_running: 2, max_step_tokens: 64, prefix_caching: false, admission: Admission::Optimistic }).unwrap();
    for max_tokens in [exact, exact + 3] {
        let grammar = grammars.compile(&Constraint::Choice(vec!["alpha beta".into()])).unwrap();
        let id = engine.add_request(Request { stop_token_ids: vec![2], grammar: Some(grammar), ..Request::new(vec![20, 21, 22], max_tokens) }).unwrap();
        let mut tokens = Vec::new();
        let mut reason = None;
        while engine.has_work() {
            for event in engine.step() {
                match event {
                    Event::Token { id: i, token, .. } if i == id => tokens.push(token),
                    Event::Finished { id: i, reason: r, .. } if i == id => reason = Some(r),
                    _ => {}
                }
            }
        }
        assert_eq!(tokenizer.decode(&tokens, SpecialTokenPolicy::Ignore).unwrap(), "alpha beta", "max_tokens {max_tokens}");
        assert_eq!((tokens.len(), reason), (exact, Some(FinishReason::Stop)), "max_tokens {max_tokens}");
    }
}
