//! `nemo generate` with a structured-output flag on the demo model (SmolLM2-135M-Instruct): a
//! real model writes JSON that follows a schema, one of a list of choices, text a regex matches,
//! greedy and sampled; bad constraints fail before generation with the reason. Needs the demo
//! model (scripts/setup.sh). NEMO_CLI_DEVICE=cuda runs the generations on the GPU. `nemo chat`
//! takes the same flags: every turn's answer follows the constraint.

mod cli_support;

use cli_support::{acceptance_device, nemo, nemo_with, Run};
use serde_json::Value;

fn generate(prompt: &str, extra: &[&str]) -> Run {
    let device = acceptance_device();
    let mut args = vec!["generate", "--chat", "--prompt", prompt, "--max-tokens", "80", "--device", &device];
    args.extend_from_slice(extra);
    let run = nemo(&args);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stderr.contains("finish_reason stop"), "the constraint completes: {}", run.describe());
    run
}

#[test]
fn a_json_schema_gives_json_that_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("person.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}, "city": {"enum": ["Paris", "Rome", "Oslo"]}},
            "required": ["name", "age", "city"], "additionalProperties": false}"#,
    )
    .unwrap();
    let schema = schema.to_str().unwrap();
    for extra in [&["--temperature", "0"][..], &["--temperature", "0.9", "--seed", "3"], &["--temperature", "1.2", "--seed", "8"]] {
        let run = generate("Describe a person as JSON.", &[&["--json-schema", schema][..], extra].concat());
        let v: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.describe()));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{v}");
        assert!(o["name"].as_str().unwrap().chars().count() <= 24, "{v}");
        assert!((0..=120).contains(&o["age"].as_i64().unwrap()), "{v}");
        assert!(["Paris", "Rome", "Oslo"].contains(&o["city"].as_str().unwrap()), "{v}");
    }
}

#[test]
fn a_choice_and_a_regex_constrain_the_answer() {
    let run = generate("What is the capital of France?", &["--temperature", "0", "--choice", "London", "--choice", "Paris", "--choice", "Berlin"]);
    // (A 135M model: which city it picks is its business; that it picks exactly one is ours.)
    assert!(["London\n", "Paris\n", "Berlin\n"].contains(&run.stdout.as_str()), "{}", run.describe());
    let run = generate("In which year did World War II end?", &["--temperature", "0", "--regex", "[0-9]{4}"]);
    let year = run.stdout.trim();
    assert!(year.len() == 4 && year.chars().all(|c| c.is_ascii_digit()), "{}", run.describe());
}

#[test]
fn bad_constraints_fail_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "{type: object").unwrap();
    let bad_type = dir.path().join("type.json");
    std::fs::write(&bad_type, r#"{"type": "bogus"}"#).unwrap();
    let missing = dir.path().join("missing.json");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for (args, says) in [
        (vec!["--regex".to_string(), "(".into()], "invalid regex constraint"),
        (vec!["--json-schema".into(), path(&not_json)], "not JSON"),
        (vec!["--json-schema".into(), path(&bad_type)], "invalid json_schema constraint"),
        (vec!["--json-schema".into(), path(&missing)], "missing.json"),
        (vec!["--grammar".into(), path(&missing)], "missing.json"),
        (vec!["--regex".into(), "a".into(), "--json-object".into()], "cannot be used with"),
    ] {
        let mut all = vec!["generate".to_string(), "--prompt".into(), "hi".into(), "--device".into(), "cpu".into()];
        all.extend(args.iter().cloned());
        let run = nemo(&all);
        assert_ne!(run.code, Some(0), "{args:?}: {}", run.describe());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.describe());
        assert!(run.stdout.is_empty(), "nothing generated: {}", run.describe());
    }
}

#[test]
fn every_chat_turn_follows_the_constraint() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("city.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]}, "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["city", "stars"], "additionalProperties": false}"#,
    )
    .unwrap();
    let device = acceptance_device();
    let turns = "Pick a city and rate it as JSON.\nNow another one.\nAnd a third.\n";
    let chat = |extra: &[&str]| {
        let mut args = vec!["chat", "--max-tokens", "60", "--device", &device];
        args.extend_from_slice(extra);
        let run = nemo_with(&args, &[], Some(turns));
        assert_eq!(run.code, Some(0), "{}", run.describe());
        assert_eq!(run.stderr.matches("finish_reason stop").count(), 3, "each turn completes its constraint: {}", run.describe());
        assert!(run.stderr.contains("3 turns in the conversation"), "{}", run.describe());
        run
    };
    // Answers are pretty-printed JSON over several lines: read them as a stream of values.
    let run = chat(&["--temperature", "0.9", "--seed", "11", "--json-schema", schema.to_str().unwrap()]);
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&run.stdout).into_iter().map(|v| v.unwrap_or_else(|e| panic!("{e}: {}", run.describe()))).collect();
    assert_eq!(answers.len(), 3, "{}", run.describe());
    for v in &answers {
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 2, "{v}");
        assert!(["Paris", "Rome", "Oslo"].contains(&o["city"].as_str().unwrap()), "{v}");
        assert!((1..=5).contains(&o["stars"].as_i64().unwrap()), "{v}");
    }
    let run = chat(&["--temperature", "0", "--choice", "yes", "--choice", "no"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines.len() == 3 && lines.iter().all(|l| ["yes", "no"].contains(l)), "{}", run.describe());
    let bad = nemo_with(&["chat", "--device", "cpu", "--regex", "("], &[], Some("hi\n"));
    assert_ne!(bad.code, Some(0), "{}", bad.describe());
    assert!(bad.stderr.contains("invalid regex constraint") && bad.stdout.is_empty(), "{}", bad.describe());
}
