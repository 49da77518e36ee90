//! What the model resolution, the chat template and `nemo tokenize` / `nemo chat` refuse: a
//! non-zero exit, nothing on stdout, one `error:` line that says what to do, never a panic.
//! The GGUF cases use the demo model (scripts/setup.sh); the tokenizer cases Nemo's tekken.json.

mod cli_support;

use std::path::PathBuf;

use cli_support::{assert_refused, fixture_dir, nemo, nemo_with};

const RUNTIME: i32 = 1;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tekken() -> String {
    root().join("models/tekken/tekken.json").to_str().unwrap().to_string()
}

#[test]
fn a_missing_demo_model_says_to_run_setup() {
    let env = [("NEMO_DEMO_MODEL", "/nonexistent/demo.gguf")];
    for args in [
        &["generate", "--chat", "--prompt", "Hi", "--device", "cpu"][..],
        &["chat", "--device", "cpu"][..],
        &["inspect"][..],
        &["tokenize", "--text", "Hi"][..],
    ] {
        let run = nemo_with(args, &env, Some("Hi\n"));
        assert_refused(&run, RUNTIME, &["demo model", "/nonexistent/demo.gguf", "run scripts/setup.sh"]);
    }
}

#[test]
fn tools_need_the_mistral_template() {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.json");
    std::fs::write(&tools, r#"[{"type": "function", "function": {"name": "ping"}}]"#).unwrap();
    let run = nemo(&["generate", "--chat", "--prompt", "Hi", "--tools", tools.to_str().unwrap(), "--device", "cpu"]);
    assert_refused(&run, RUNTIME, &["--tools needs a model with Mistral's chat template", "Jinja"]);

    let request = r#"{"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function", "function": {"name": "ping"}}]}"#;
    let run = nemo_with(&["tokenize", "--chat", "-"], &[], Some(request));
    assert_refused(&run, RUNTIME, &["tools need Mistral's chat template"]);
    let calls = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [{"id": "abcdefghi", "function": {"name": "ping", "arguments": "{}"}}]}]}"#;
    let run = nemo_with(&["tokenize", "--chat", "-"], &[], Some(calls));
    assert_refused(&run, RUNTIME, &["without tool calls"]);
}

#[test]
fn bad_tools_and_request_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"messages": "not a list"}"#).unwrap();
    let run = nemo(&["generate", "--chat", "--prompt", "Hi", "--tools", bad.to_str().unwrap()]);
    assert_refused(&run, RUNTIME, &["bad.json", "expected a JSON list of tools"]);

    let tekken = tekken();
    for (content, needle) in [
        (r#"{"messages": "not a list"}"#, "not an OpenAI-style chat request"),
        ("{\"messages\": [", "not an OpenAI-style chat request"),
        (r#"{"messages": []}"#, "at least one message"),
    ] {
        std::fs::write(&bad, content).unwrap();
        let run = nemo(&["tokenize", "--model", &tekken, "--chat", bad.to_str().unwrap(), "--json"]);
        assert_refused(&run, RUNTIME, &[needle]);
    }
    let run = nemo(&["tokenize", "--model", &tekken, "--chat", "/nonexistent/request.json"]);
    assert_refused(&run, RUNTIME, &["reading the chat request /nonexistent/request.json"]);
}

#[test]
fn model_paths_that_are_not_models() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello").unwrap();
    let run = nemo(&["inspect", "--model", notes.to_str().unwrap()]);
    assert_refused(&run, RUNTIME, &["notes.txt", "not a GGUF model"]);

    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, "GGUX and more bytes to read").unwrap();
    let run = nemo(&["generate", "--model", dir.path().to_str().unwrap(), "--prompt", "Hi", "--device", "cpu"]);
    assert_refused(&run, RUNTIME, &["fake.gguf", "not a GGUF file"]);

    std::fs::write(dir.path().join("other.gguf"), "GGUF").unwrap();
    let run = nemo(&["inspect", "--model", dir.path().to_str().unwrap()]);
    assert_refused(&run, RUNTIME, &["2 .gguf files (fake.gguf, other.gguf)", "pass one of them"]);
}

#[test]
fn chat_needs_a_template() {
    // The tiny fixture checkpoint has no tokenizer at all.
    let model = fixture_dir().join("mistral");
    let model = model.to_str().unwrap();
    let run = nemo(&["generate", "--model", model, "--chat", "--prompt", "Hi", "--device", "cpu"]);
    assert_refused(&run, RUNTIME, &["has no tokenizer", "no chat template"]);
    let run = nemo_with(&["chat", "--model", model, "--device", "cpu"], &[], Some("Hi\n"));
    assert_refused(&run, RUNTIME, &["has no tokenizer"]);
    let run = nemo(&["chat", "--preset", "nemo-12b", "--dummy-weights"]);
    assert_refused(&run, RUNTIME, &["not --preset"]);
}

#[test]
fn a_chat_turn_past_the_context_is_reported_and_the_exit_status_says_so() {
    // ~9,000 tokens in one line: more than the demo model's 8192-token context.
    let long = "word ".repeat(9_000);
    let input = format!("{long}\nWhat is the capital of France?\n");
    let run = nemo_with(&["chat", "--temperature", "0", "--max-tokens", "16", "--device", "cpu"], &[], Some(&input));
    let d = run.describe();
    assert_eq!(run.code, Some(RUNTIME), "{d}");
    assert!(run.stderr.contains("turn failed") && run.stderr.contains("context 8192: /reset"), "{d}");
    // The chat went on: the next turn was answered.
    assert!(run.stdout.contains("Paris"), "{d}");
    assert_eq!(run.stderr.lines().last(), Some("error: 1 turn(s) failed (see above)"), "{d}");
}
