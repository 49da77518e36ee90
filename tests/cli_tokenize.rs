//! `nemo tokenize --json` through the real binary against mistral_common's fixtures
//! (tests/fixtures/tokenizer, scripts/fixtures/make_tokenizer_fixtures.py): every chat case
//! (tools, calls, results, prefixes, and the 27 requests mistral_common refuses), and a third of
//! the text cases plus every BOS/EOS variant. NEMO_TOKENIZER_FIXTURES=DIR runs a held-out set
//! made by scripts/fixtures/make_tokenizer_heldout.py instead.
//!
//! Needs Nemo's tekken.json (scripts/setup.sh, or $NEMO_TEKKEN) and fails without it.

mod cli_support;

use std::path::PathBuf;

use cli_support::{assert_refused, nemo, Run};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tekken() -> String {
    let path = std::env::var_os("NEMO_TEKKEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/tekken/tekken.json"));
    assert!(path.is_file(), "{} is missing: run scripts/setup.sh", path.display());
    path.to_str().unwrap().to_string()
}

fn fixture_text(name: &str) -> String {
    let dir = std::env::var_os("NEMO_TOKENIZER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/fixtures/tokenizer"));
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).unwrap()
}

#[derive(Deserialize)]
struct Output {
    ids: Vec<u32>,
    text: String,
}

fn parse(run: &Run) -> Output {
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.describe());
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.describe()))
}

/// Runs `check` over `items` on a few threads (each item starts a process).
fn in_parallel<T: Sync>(items: &[T], check: impl Fn(&T) + Sync) {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match items.get(i) {
                    Some(item) => check(item),
                    None => break,
                }
            });
        }
    });
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn text_cases_match_mistral_common() {
    let tekken = tekken();
    let fx = fixture("encode.json");
    let cases: Vec<&Value> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, c)| i % 3 == 0 || c["bos"].as_bool().unwrap() || c["eos"].as_bool().unwrap())
        .map(|(_, c)| c)
        // A command-line argument holds no NUL byte and at most 128 KiB.
        .filter(|c| {
            let t = c["text"].as_str().unwrap();
            !t.contains('\0') && t.len() < 100_000
        })
        .collect();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    in_parallel(&cases, |case| {
        let name = case["name"].as_str().unwrap();
        // `--text=...`: a text that starts with '-' must not read as a flag.
        let text_arg = format!("--text={}", case["text"].as_str().unwrap());
        let mut args = vec!["tokenize", "--model", &tekken, &text_arg, "--json"];
        if case["bos"].as_bool().unwrap() {
            args.push("--bos");
        }
        if case["eos"].as_bool().unwrap() {
            args.push("--eos");
        }
        let out = parse(&nemo(&args));
        assert_eq!(out.ids, ids(&case["ids"]), "{name}");
        // Ordinary text decodes back to itself; BOS / EOS show as <s> / </s>.
        let text = case["text"].as_str().unwrap();
        if !out.text.contains('\u{FFFD}') {
            assert!(out.text.contains(text), "{name}: {:?}", out.text);
        }
    });
}

/// A chat case with its request as the fixture's exact text (key order and number forms
/// matter: they are rendered into the prompt).
#[derive(Deserialize)]
struct ChatCase {
    name: String,
    request: Box<RawValue>,
    ids: Option<Vec<u32>>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct ChatFixture {
    cases: Vec<ChatCase>,
}

#[test]
fn chat_cases_match_mistral_common_including_refusals() {
    let tekken = tekken();
    let fx: ChatFixture = serde_json::from_str(&fixture_text("chat.json")).unwrap();
    let cases = &fx.cases;
    assert!(cases.iter().any(|c| c.request.get().contains("\"tools\"") && c.ids.is_some()));
    let dir = tempfile::tempdir().unwrap();
    in_parallel(cases, |case| {
        let name = &case.name;
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, case.request.get()).unwrap();
        let run = nemo(&["tokenize", "--model", &tekken, "--chat", file.to_str().unwrap(), "--json"]);
        match &case.ids {
            Some(want) => {
                let out = parse(&run);
                assert_eq!(&out.ids, want, "{name}");
                assert_eq!(Some(&out.text), case.text.as_ref(), "{name}");
            }
            None => {
                let line = assert_refused(&run, 1, &[]);
                assert!(
                    line.contains("rendering the chat request") || line.contains("not an OpenAI-style chat request"),
                    "{name}: {line}"
                );
            }
        }
    });
}

#[test]
fn ids_alone_are_comma_separated_and_a_directory_finds_tekken() {
    let tekken = PathBuf::from(tekken());
    let dir = tekken.parent().unwrap().to_str().unwrap();
    let run = nemo(&["tokenize", "--model", dir, "--text", "Hello!", "--bos"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(run.stdout, "1,22177,1033\n");
}
