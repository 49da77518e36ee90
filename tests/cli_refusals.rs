//! Every way `nemo` is given something it cannot run: a non-zero exit, nothing on stdout, and
//! one `error: ...` line that names the problem (and the file), never a panic.

mod cli_support;

use std::fs::OpenOptions;
use std::path::Path;

use cli_support::{assert_refused, copy_model, fixture_dir, nemo};

const RUNTIME: i32 = 1;
const USAGE: i32 = 2;

fn generate(model: &str, extra: &[&str]) -> cli_support::Run {
    let mut args = vec!["generate", "--model", model, "--device", "cpu"];
    args.extend_from_slice(extra);
    nemo(&args)
}

fn hf() -> String {
    fixture_dir().join("hf").to_str().unwrap().to_string()
}

#[test]
fn missing_model_directory() {
    let run = generate("/nonexistent/model", &["--prompt-tokens", "1,2"]);
    assert_refused(&run, RUNTIME, &["/nonexistent/model", "not found"]);
    let run = nemo(&["inspect", "--model", "/nonexistent/model"]);
    assert_refused(&run, RUNTIME, &["/nonexistent/model", "not found"]);
}

#[test]
fn truncated_safetensors_file() {
    let dir = copy_model(&fixture_dir().join("mistral"));
    let file = dir.path().join("consolidated.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 1000)
        .unwrap();
    for run in [
        generate(dir.path().to_str().unwrap(), &["--prompt-tokens", "1"]),
        nemo(&["inspect", "--model", dir.path().to_str().unwrap()]),
    ] {
        assert_refused(&run, RUNTIME, &["consolidated.safetensors", "truncated"]);
    }
}

#[test]
fn malformed_config_json() {
    let dir = copy_model(&fixture_dir().join("hf"));
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 256,").unwrap();
    for run in [
        generate(dir.path().to_str().unwrap(), &["--prompt-tokens", "1"]),
        nemo(&["inspect", "--model", dir.path().to_str().unwrap()]),
    ] {
        assert_refused(&run, RUNTIME, &["config.json", "not valid JSON"]);
    }
}

#[test]
fn out_of_vocabulary_prompt_token() {
    let run = generate(&hf(), &["--prompt-tokens", "1,1024,3"]);
    assert_refused(
        &run,
        RUNTIME,
        &[
            "token 1024 at index 1",
            "outside the vocabulary (size 1024)",
        ],
    );
}

#[test]
fn out_of_vocabulary_stop_token() {
    let run = generate(&hf(), &["--prompt-tokens", "1", "--stop-token", "5000"]);
    assert_refused(
        &run,
        RUNTIME,
        &["--stop-token 5000", "outside the vocabulary"],
    );
}

#[test]
fn malformed_token_list() {
    let run = generate(&hf(), &["--prompt-tokens", "1,x,3"]);
    assert_refused(&run, USAGE, &["--prompt-tokens", "`x` is not a token id"]);
}

#[test]
fn bad_sampling_values() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--temperature", "-1"],
            "temperature must be a finite number >= 0",
        ),
        (
            &["--temperature", "nan"],
            "temperature must be a finite number >= 0",
        ),
        (&["--top-p", "1.5"], "top_p must be in (0, 1]"),
        (&["--min-p", "-0.1"], "min_p must be in [0, 1]"),
        (&["--max-tokens", "0"], "--max-tokens must be at least 1"),
    ];
    for (flags, needle) in cases {
        let run = generate(&hf(), &[&["--prompt-tokens", "1"], flags].concat());
        assert_refused(&run, RUNTIME, &[needle]);
    }
    let run = generate(&hf(), &["--prompt-tokens", "1", "--top-k", "-3"]);
    assert_refused(&run, USAGE, &["--top-k", "-3"]);
}

#[test]
fn bad_penalties_and_logit_biases() {
    let cases: [(&[&str], &str); 5] = [
        (&["--repetition-penalty", "0"], "repetition_penalty must be in [0.01, 100]"),
        (&["--frequency-penalty", "-2.5"], "frequency_penalty must be in [-2, 2]"),
        (&["--presence-penalty", "nan"], "presence_penalty must be in [-2, 2]"),
        (&["--logit-bias", "5=101"], "logit_bias must be in [-100, 100]"),
        (&["--logit-bias", "5=1", "--logit-bias", "5=-1"], "--logit-bias names token 5 twice"),
    ];
    for (flags, needle) in cases {
        let run = generate(&hf(), &[&["--prompt-tokens", "1"], flags].concat());
        assert_refused(&run, RUNTIME, &[needle]);
    }
    let run = generate(&hf(), &["--prompt-tokens", "1", "--logit-bias", "99999=1"]);
    assert_refused(&run, RUNTIME, &["logit_bias names token 99999, outside the vocabulary"]);
    for bad in ["5", "x=1", "5=big"] {
        let run = generate(&hf(), &["--prompt-tokens", "1", "--logit-bias", bad]);
        assert_refused(&run, USAGE, &["--logit-bias"]);
    }
}

#[test]
fn prompt_text_without_a_tokenizer() {
    let run = generate(&hf(), &["--prompt", "hello"]);
    assert_refused(&run, RUNTIME, &["--prompt", "tokenizer", "--prompt-tokens"]);
}

#[test]
fn prompt_forms_are_exclusive_and_required() {
    let run = generate(&hf(), &[]);
    assert_refused(&run, USAGE, &["required"]);
    let run = generate(&hf(), &["--prompt", "a", "--prompt-tokens", "1"]);
    assert_refused(&run, USAGE, &["cannot be used with"]);
}

#[test]
fn prompt_plus_max_tokens_beyond_the_context() {
    // Refused before any compute, as vLLM does: a run never fails half-way for lack of room.
    let run = generate(&hf(), &["--prompt-tokens", "1,2", "--max-tokens", "131071"]);
    assert_refused(
        &run,
        RUNTIME,
        &[
            "2-token prompt plus --max-tokens 131071",
            "131072-token context",
        ],
    );
}

#[test]
fn device_cuda_without_a_gpu() {
    if nemo_engine::gpu::probe().is_ok() {
        eprintln!("skipped: this machine has a usable GPU");
        return;
    }
    let run = nemo(&[
        "generate",
        "--model",
        &hf(),
        "--prompt-tokens",
        "1",
        "--device",
        "cuda",
    ]);
    assert_refused(&run, RUNTIME, &["--device cuda", "no usable CUDA GPU"]);
}

#[test]
fn kv_tokens_max_on_the_cpu_and_junk_kv_tokens() {
    // `max` sizes a GPU's cache to its free memory: on the CPU it is refused, not guessed.
    let run = nemo(&["bench", "--mode", "throughput", "--device", "cpu", "--model", &hf(), "--kv-tokens", "max", "--requests", "1", "--io", "8/8"]);
    assert_refused(&run, RUNTIME, &["--kv-tokens max", "on the CPU give a number of tokens"]);
    for junk in ["0", "lots", "-3"] {
        let run = generate(&hf(), &["--prompt-tokens", "1", "--kv-tokens", junk]);
        assert_refused(&run, USAGE, &["--kv-tokens", "is not a positive number of tokens or `max`"]);
    }
}

// ---- hostile files: the fuzz seed corpus through `nemo` ----
//
// Every `bad-*` seed of fuzz/seeds (made by fuzz/seeds/make_seeds.py, one defect each) put in
// place of the file it imitates in a copy of the tiny model: `generate` and `inspect` refuse
// with one `error:` line naming that file and the same field as the parser's own test
// (tests/hostile/expected.rs). Tokenizer files are read by `generate` only: `inspect` lists
// the tokenizer but does not load it.

#[path = "hostile/expected.rs"]
mod expected;

/// Each bad seed of `target`, written as `file_name` into a copy of the `layout` model.
fn refuse_seeds(target: &str, layout: &str, file_name: &str, commands: &[&str]) {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut tried = 0;
    for (t, stem, needles) in expected::EXPECTED {
        if *t != target {
            continue;
        }
        let dir = copy_model(&fixture_dir().join(layout));
        let ext = if target == "safetensors" { "safetensors" } else { "json" };
        std::fs::copy(seeds.join(format!("{stem}.{ext}")), dir.path().join(file_name)).unwrap();
        let model = dir.path().to_str().unwrap();
        for command in commands {
            let run = match *command {
                "generate" => generate(model, &["--prompt-tokens", "1,2"]),
                _ => nemo(&[command, "--model", model]),
            };
            let line = assert_refused(&run, RUNTIME, &[file_name]);
            for needle in *needles {
                assert!(line.contains(needle), "{target}/{stem} via nemo {command}: `{needle}` missing from {line}");
            }
        }
        tried += 1;
    }
    assert!(tried >= 9, "{target}: only {tried} bad seeds");
}

#[test]
fn hostile_safetensors_files() {
    refuse_seeds("safetensors", "mistral", "consolidated.safetensors", &["generate", "inspect"]);
}

#[test]
fn hostile_params_json() {
    refuse_seeds("params_json", "mistral", "params.json", &["generate", "inspect"]);
}

#[test]
fn hostile_config_json() {
    refuse_seeds("hf_config_json", "hf", "config.json", &["generate", "inspect"]);
}

#[test]
fn hostile_tekken_json() {
    refuse_seeds("tekken_json", "mistral", "tekken.json", &["generate"]);
}

#[test]
fn hostile_tokenizer_json() {
    refuse_seeds("tokenizer_json", "hf", "tokenizer.json", &["generate"]);
}

/// A GGUF file is the model itself: each bad seed is passed as `--model` directly.
#[test]
fn hostile_gguf_files() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/gguf");
    let mut tried = 0;
    for (t, stem, needles) in expected::EXPECTED {
        if *t != "gguf" {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{stem}.gguf"));
        std::fs::copy(seeds.join(format!("{stem}.gguf")), &file).unwrap();
        let model = file.to_str().unwrap();
        for run in [generate(model, &["--prompt-tokens", "1,2"]), nemo(&["inspect", "--model", model])] {
            let line = assert_refused(&run, RUNTIME, &[&format!("{stem}.gguf")]);
            for needle in *needles {
                assert!(line.contains(needle), "gguf/{stem}: `{needle}` missing from {line}");
            }
        }
        tried += 1;
    }
    assert!(tried >= 9, "gguf: only {tried} bad seeds");
}
