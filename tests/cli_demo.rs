//! The demo model (SmolLM2-135M-Instruct from scripts/setup.sh) through the real binary,
//! without --model: the README's first command answers "Paris", greedy output is pinned against
//! transformers (tests/fixtures/smollm2/logits.json), `nemo inspect` and `nemo tokenize` show
//! the GGUF, and `nemo chat` holds a piped conversation that really uses its history.
//!
//! Needs the demo model and fails (not skips) without it. NEMO_CLI_DEVICE=cuda runs the
//! generation checks on the GPU.

mod cli_support;

use std::path::PathBuf;

use cli_support::{acceptance_device, ids, nemo, nemo_with, parse_json, GenerateJson, Run};
use serde::Deserialize;

const QUESTION: &str = "What is the capital of France?";
/// SmolLM2's greedy answer (transformers' greedy_ids up to and including <|im_end|> = 2).
const ANSWER: &str = "The capital of France is Paris.";
const ANSWER_IDS: [u32; 8] = [504, 3575, 282, 4649, 314, 7042, 30, 2];

#[derive(Deserialize)]
struct Logits {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
}

fn fixture() -> Logits {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2/logits.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn demo_generate(device: &str, extra: &[&str]) -> Run {
    let mut args = vec!["generate", "--chat", "--prompt", QUESTION, "--temperature", "0", "--device", device];
    args.extend_from_slice(extra);
    nemo(&args)
}

#[test]
fn the_readme_command_answers_paris_from_the_demo_model() {
    let run = demo_generate(&acceptance_device(), &["--max-tokens", "32"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.stdout, format!("{ANSWER}\n"), "{}", run.describe());
    assert!(run.stderr.contains("using the demo model SmolLM2-135M-Instruct"), "{}", run.stderr);
    assert!(run.stderr.contains("finish_reason stop"), "{}", run.stderr);

    let out = parse_json(&demo_generate(&acceptance_device(), &["--max-tokens", "32", "--json"]));
    let fx = fixture();
    assert_eq!(out.prompt_tokens, fx.prompt_ids, "the ChatML prompt transformers encodes");
    assert_eq!(out.tokens, ANSWER_IDS);
    assert_eq!(out.text.as_deref(), Some(ANSWER));
    assert_eq!(out.finish_reason, "stop");
    assert!(out.tool_calls.is_none());
}

#[test]
fn greedy_tokens_past_the_end_of_turn_match_transformers() {
    // The f32 CPU path pinned to transformers' f32 greedy run (on the GPU, bf16 may flip a
    // near-tie past the answer).
    let fx = fixture();
    let max = fx.greedy_ids.len().to_string();
    let out = parse_json(&demo_generate("cpu", &["--max-tokens", &max, "--ignore-eos", "--json"]));
    assert_eq!(out.tokens, fx.greedy_ids);
    assert_eq!(out.finish_reason, "length");
}

#[test]
fn sampling_defaults_to_temperature_0_3_and_says_so() {
    let device = acceptance_device();
    let run = nemo(&["generate", "--chat", "--prompt", QUESTION, "--max-tokens", "4", "--device", &device, "--json"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stderr.contains("sampling: temperature 0.3"), "{}", run.stderr);
}

#[test]
fn inspect_without_model_shows_the_gguf() {
    let run = nemo(&["inspect"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let field = |label: &str| {
        run.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}:")))
            .unwrap_or_else(|| panic!("no {label}: in\n{}", run.stdout))
            .trim()
            .to_string()
    };
    assert!(field("layout").starts_with("GGUF v3"), "{}", run.stdout);
    assert_eq!(field("tensors"), "272 (61 F32, 210 Q4_1, 1 Q8_0)");
    assert_eq!(field("heads"), "9 query, 3 KV, head_dim 64");
    assert_eq!(field("dim"), "576");
    assert_eq!(field("layers"), "30");
    assert_eq!(field("vocab"), "49152");
    assert_eq!(field("stop ids"), "2 <|im_end|>");
    assert!(field("chat").contains("Jinja"), "{}", run.stdout);
    assert!(field("context").starts_with("8192 tokens"), "{}", run.stdout);
}

#[derive(Deserialize)]
struct TokenizeJson {
    ids: Vec<u32>,
    text: String,
}

fn tokenize_chat(messages: serde_json::Value) -> TokenizeJson {
    let request = serde_json::json!({ "messages": messages }).to_string();
    let run = nemo_with(&["tokenize", "--chat", "-", "--json"], &[], Some(&request));
    assert_eq!(run.code, Some(0), "{}", run.describe());
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn tokenize_renders_the_jinja_template_as_transformers() {
    let fx = fixture();
    let out = tokenize_chat(serde_json::json!([{"role": "user", "content": QUESTION}]));
    assert_eq!(out.ids, fx.prompt_ids);
    assert_eq!(out.text, fx.prompt);
    // Plain text: special-token text stays text.
    let run = nemo(&["tokenize", "--text", "<|im_end|>", "--json"]);
    let plain: TokenizeJson = serde_json::from_str(&run.stdout).unwrap();
    assert!(!plain.ids.contains(&2), "{:?}", plain.ids);
    assert_eq!(plain.text, "<|im_end|>");
}

/// The answers of a piped `nemo chat`, one line each.
fn chat(lines: &[&str]) -> (Vec<String>, Run) {
    let device = acceptance_device();
    let input = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let run = nemo_with(
        &["chat", "--temperature", "0", "--max-tokens", "48", "--device", &device],
        &[],
        Some(&input),
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    (run.stdout.lines().map(str::to_string).collect(), run)
}

#[test]
fn piped_chat_keeps_the_history() {
    let q2 = "What is its population?";
    let (answers, run) = chat(&[QUESTION, q2, "/reset", q2]);
    assert_eq!(answers.len(), 3, "one line per answer\n{}", run.describe());
    assert_eq!(answers[0], ANSWER);
    // "its" is France only with the history: the second answer speaks of it, the same question
    // after /reset does not.
    assert!(answers[1].contains("France"), "{}", run.describe());
    assert!(!answers[2].contains("France"), "{}", run.describe());
    assert!(run.stderr.contains("conversation reset"), "{}", run.stderr);

    // The second turn's prompt is exactly the template's rendering of the whole conversation;
    // its prefix was reused from the first turn, and the answer is what a fresh run of that
    // prompt gives.
    let prompt = tokenize_chat(serde_json::json!([
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": q2},
    ]));
    let device = acceptance_device();
    let fresh: GenerateJson = parse_json(&nemo(&[
        "generate", "--prompt-tokens", &ids(&prompt.ids), "--temperature", "0", "--max-tokens", "48",
        "--device", &device, "--json",
    ]));
    assert_eq!(fresh.text.as_deref(), Some(answers[1].as_str()));
    let reused = ANSWER_IDS.len() - 1 + fixture().prompt_ids.len();
    let second_turn = format!("prefill {} tokens ({reused} more reused", prompt.ids.len() - reused);
    assert!(run.stderr.contains(&second_turn), "expected `{second_turn}`\n{}", run.stderr);
}

#[test]
fn chat_commands_and_blank_lines() {
    // /exit ends the conversation before the last line; blank lines are skipped.
    let (answers, run) = chat(&["", QUESTION, "   ", "/exit", "Never answered"]);
    assert_eq!(answers, [ANSWER], "{}", run.describe());
    assert!(run.stderr.contains("1 turns in the conversation"), "{}", run.stderr);
}
