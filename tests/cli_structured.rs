//! `nemo generate` with a structured-output flag on the demo model (SmolLM2-135M-Instruct): a
//! real model writes JSON that follows a schema, one of a list of choices, text a regex matches,
//! greedy and sampled; bad constraints fail before generation with the reason. Needs the demo
//! model (scripts/setup.sh). NEMO_CLI_DEVICE=cuda runs the generations on the GPU.

mod cli_support;

use cli_support::{acceptance_device, nemo, Run};
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
