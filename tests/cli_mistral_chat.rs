//! The Mistral side of `--chat`, `--tools` and `nemo chat`, through the real binary, on tiny
//! "scripted" models that carry Nemo's tekken.json (vocabulary 131072) and whose greedy output
//! is known in advance: attention and FFN write nothing (wo = w2 = 0), so the logits depend on
//! the last token only; each token of a chain gets its own embedding direction and the LM head
//! maps it to the next one. After `[/INST]` such a model writes its script, then `</s>`.
//!
//! So the prompt ids can be compared with mistral_common's (tests/fixtures/tokenizer/chat.json)
//! and a real `[TOOL_CALLS]` output goes through the CLI's tool-call parser. Needs tekken.json
//! (scripts/setup.sh).

mod cli_support;
mod common;

use std::path::{Path, PathBuf};

use cli_support::{nemo, nemo_with, parse_json, Run};
use common::{write_bf16, Named};
use half::bf16;
use serde::Deserialize;
use serde_json::value::RawValue;

const DIM: usize = 32;
const VOCAB: usize = 131_072;
const INST_END: u32 = 4; // [/INST]
const TOOL_CALLS: u32 = 9;
const EOS: u32 = 2;
/// Compact JSON whose 17 tokens are all distinct (a chain cannot revisit a token).
const CALL_JSON: &str = r#"[{"name":"get_current_weather","arguments":{"location": "Paris"}}]"#;
const ANSWER: &str = "Bonjour! Paris is the capital.";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tekken() -> PathBuf {
    let path = std::env::var_os("NEMO_TEKKEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/tekken/tekken.json"));
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    path
}

fn tokenize(text: &str) -> Vec<u32> {
    #[derive(Deserialize)]
    struct Out {
        ids: Vec<u32>,
    }
    let arg = format!("--text={text}");
    let run = nemo(&["tokenize", "--model", tekken().to_str().unwrap(), &arg, "--json"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    serde_json::from_str::<Out>(&run.stdout).unwrap().ids
}

/// A Mistral-layout model that answers any `[INST]...[/INST]` with `script`, then `</s>`.
fn scripted_model(script: &[u32]) -> tempfile::TempDir {
    let chain: Vec<u32> = [&[INST_END][..], script].concat();
    let mut seen = std::collections::HashSet::new();
    assert!(chain.iter().all(|t| seen.insert(*t)), "a chain token repeats: {chain:?}");
    assert!(chain.len() <= DIM);
    let mut embedding = vec![bf16::ZERO; VOCAB * DIM];
    let mut output = vec![bf16::ZERO; VOCAB * DIM];
    for (k, &token) in chain.iter().enumerate() {
        embedding[token as usize * DIM + k] = bf16::ONE;
        let next = chain.get(k + 1).copied().unwrap_or(EOS);
        // After RMSNorm the direction has length sqrt(DIM): the next token's logit is ~23.
        output[next as usize * DIM + k] = bf16::from_f32(4.0);
    }
    let named = |name: &str, shape: Vec<usize>, data: Vec<bf16>| Named { name: name.into(), shape, data };
    let fill = |n: usize, v: f32| vec![bf16::from_f32(v); n];
    let (head_dim, hidden) = (16, 32);
    let l = |s: &str| format!("layers.0.{s}.weight");
    let tensors = vec![
        named("tok_embeddings.weight", vec![VOCAB, DIM], embedding),
        named(&l("attention_norm"), vec![DIM], fill(DIM, 1.0)),
        named(&l("attention.wq"), vec![2 * head_dim, DIM], common::random(1, 2 * head_dim * DIM, 0.1)),
        named(&l("attention.wk"), vec![head_dim, DIM], common::random(2, head_dim * DIM, 0.1)),
        named(&l("attention.wv"), vec![head_dim, DIM], common::random(3, head_dim * DIM, 0.1)),
        named(&l("attention.wo"), vec![DIM, 2 * head_dim], fill(DIM * 2 * head_dim, 0.0)),
        named(&l("ffn_norm"), vec![DIM], fill(DIM, 1.0)),
        named(&l("feed_forward.w1"), vec![hidden, DIM], common::random(4, hidden * DIM, 0.1)),
        named(&l("feed_forward.w2"), vec![DIM, hidden], fill(DIM * hidden, 0.0)),
        named(&l("feed_forward.w3"), vec![hidden, DIM], common::random(5, hidden * DIM, 0.1)),
        named("norm.weight", vec![DIM], fill(DIM, 1.0)),
        named("output.weight", vec![VOCAB, DIM], output),
    ];
    let dir = tempfile::tempdir().unwrap();
    let params = format!(
        r#"{{"dim": {DIM}, "n_layers": 1, "head_dim": {head_dim}, "hidden_dim": {hidden}, "n_heads": 2,
            "n_kv_heads": 1, "norm_eps": 1e-05, "vocab_size": {VOCAB}, "rope_theta": 1000000.0}}"#
    );
    std::fs::write(dir.path().join("params.json"), params).unwrap();
    write_bf16(&dir.path().join("consolidated.safetensors"), &tensors);
    std::os::unix::fs::symlink(tekken(), dir.path().join("tekken.json")).unwrap();
    dir
}

fn tool_model() -> tempfile::TempDir {
    scripted_model(&[&[TOOL_CALLS][..], &tokenize(CALL_JSON)].concat())
}

/// mistral_common's rendering of `name` in the chat fixtures, with the request's exact text.
fn chat_fixture(name: &str) -> (serde_json::Value, String, Vec<u32>) {
    #[derive(Deserialize)]
    struct Case {
        name: String,
        request: Box<RawValue>,
        ids: Option<Vec<u32>>,
    }
    #[derive(Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }
    let text = std::fs::read_to_string(root().join("tests/fixtures/tokenizer/chat.json")).unwrap();
    let fx: Fixture = serde_json::from_str(&text).unwrap();
    let case = fx.cases.into_iter().find(|c| c.name == name).unwrap();
    let raw = case.request.get().to_string();
    (serde_json::from_str(&raw).unwrap(), raw, case.ids.unwrap())
}

/// `tools_with_system`'s tools as a --tools file (exact text: key order is rendered).
fn write_tools(dir: &Path, raw_request: &str) -> PathBuf {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        tools: &'a RawValue,
    }
    let req: Request = serde_json::from_str(raw_request).unwrap();
    let path = dir.join("tools.json");
    std::fs::write(&path, req.tools.get()).unwrap();
    path
}

fn generate_with_tools(model: &Path, tools: &Path, request: &serde_json::Value, json: bool) -> Run {
    let messages = request["messages"].as_array().unwrap();
    let (system, user) = (messages[0]["content"].as_str().unwrap(), messages[1]["content"].as_str().unwrap());
    let mut args = vec![
        "generate", "--model", model.to_str().unwrap(), "--chat", "--system", system, "--prompt", user,
        "--tools", tools.to_str().unwrap(), "--temperature", "0", "--max-tokens", "40", "--device", "cpu",
    ];
    if json {
        args.push("--json");
    }
    nemo(&args)
}

#[test]
fn generate_with_tools_encodes_as_mistral_common_and_parses_the_call() {
    let model = tool_model();
    let (request, raw, want_ids) = chat_fixture("tools_with_system");
    let tools = write_tools(model.path(), &raw);
    let out = parse_json(&generate_with_tools(model.path(), &tools, &request, true));
    assert_eq!(out.prompt_tokens, want_ids, "system + user + tools as mistral_common renders them");
    assert_eq!(out.finish_reason, "stop");
    assert_eq!(out.tokens.first(), Some(&TOOL_CALLS));
    assert_eq!(out.tokens.last(), Some(&EOS));
    assert_eq!(out.text.as_deref(), Some(""), "no content before the call");
    assert!(out.tool_calls_error.is_none());
    let calls = out.tool_calls.expect("--tools gives a tool_calls field");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!((call.kind.as_str(), call.function.name.as_str()), ("function", "get_current_weather"));
    assert_eq!(call.function.arguments, r#"{"location": "Paris"}"#);
    assert!(call.id.len() == 9 && call.id.bytes().all(|b| b.is_ascii_alphanumeric()), "{}", call.id);

    // Streamed: the call is printed on its own line after the (empty) content.
    let run = generate_with_tools(model.path(), &tools, &request, false);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let line = run.stdout.trim_end();
    assert!(line.starts_with("[tool call ") && line.ends_with(r#"] get_current_weather({"location": "Paris"})"#), "{}", run.describe());
}

#[test]
fn without_tools_the_call_is_plain_text_and_other_models_answer_plainly() {
    // No --tools: no tool_calls field; the text is the call's JSON ([TOOL_CALLS] is special).
    let model = tool_model();
    let out = parse_json(&nemo(&[
        "generate", "--model", model.path().to_str().unwrap(), "--chat", "--prompt", "Weather?",
        "--temperature", "0", "--max-tokens", "40", "--device", "cpu", "--json",
    ]));
    assert!(out.tool_calls.is_none());
    assert_eq!(out.text.as_deref(), Some(CALL_JSON));
    // With --tools but a plain answer: an empty list.
    let plain = scripted_model(&tokenize(ANSWER));
    let (request, raw, _) = chat_fixture("tools_with_system");
    let tools = write_tools(plain.path(), &raw);
    let out = parse_json(&generate_with_tools(plain.path(), &tools, &request, true));
    assert_eq!(out.text.as_deref(), Some(ANSWER));
    assert_eq!(out.tool_calls.map(|c| c.len()), Some(0));
}

/// The answers of a piped `nemo chat` on `model`.
fn chat(model: &Path, extra: &[&str], lines: &[&str]) -> (Vec<String>, Run) {
    let mut args = vec!["chat", "--model", model.to_str().unwrap(), "--temperature", "0", "--device", "cpu"];
    args.extend_from_slice(extra);
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let run = nemo_with(&args, &[], Some(&input));
    assert_eq!(run.code, Some(0), "{}", run.describe());
    (run.stdout.lines().map(str::to_string).collect(), run)
}

fn tokenize_chat(request: serde_json::Value) -> Vec<u32> {
    #[derive(Deserialize)]
    struct Out {
        ids: Vec<u32>,
    }
    let run = nemo_with(
        &["tokenize", "--model", tekken().to_str().unwrap(), "--chat", "-", "--json"],
        &[],
        Some(&request.to_string()),
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    serde_json::from_str::<Out>(&run.stdout).unwrap().ids
}

#[test]
fn chat_with_the_v3_template_reuses_the_previous_turn() {
    let model = scripted_model(&tokenize(ANSWER));
    let (answers, run) = chat(model.path(), &[], &["Hello", "And the capital?", "Thanks"]);
    assert_eq!(answers, [ANSWER; 3], "{}", run.describe());
    // Turn 3's prompt is the whole conversation as mistral_common renders it; turns 2 and 3
    // extend the held tokens (the answer re-encodes to the generated ids), so only the new
    // `</s>[INST]...[/INST]` is prefilled.
    let turn3 = tokenize_chat(serde_json::json!({"messages": [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "And the capital?"}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Thanks"},
    ]}));
    let answer_len = tokenize(ANSWER).len();
    let turn2_len = tokenize_chat(serde_json::json!({"messages": [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "And the capital?"},
    ]}))
    .len();
    let held = turn2_len + answer_len;
    let want = format!("prefill {} tokens ({held} more reused", turn3.len() - held);
    assert!(run.stderr.contains(&want), "expected `{want}`\n{}", run.stderr);
    assert!(run.stderr.contains("3 turns in the conversation"), "{}", run.stderr);
}

#[test]
fn chat_with_a_system_prompt_reencodes_each_turn_whole() {
    // v3 puts the system prompt before the last user message, so turn 2 does not extend
    // turn 1 and is prefilled whole: still exactly the template's rendering.
    let model = scripted_model(&tokenize(ANSWER));
    let (answers, run) = chat(model.path(), &["--system", "Be brief."], &["Hello", "Again"]);
    assert_eq!(answers, [ANSWER; 2], "{}", run.describe());
    let turn2 = tokenize_chat(serde_json::json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Again"},
    ]}));
    let want = format!("prefill {} tokens in", turn2.len());
    assert!(run.stderr.contains(&want), "expected `{want}`\n{}", run.stderr);
    assert!(!run.stderr.contains("reused"), "{}", run.stderr);
}
