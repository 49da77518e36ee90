//! The acceptance of issue 2 through the real binary: `nemo generate ... --temperature 0
//! --max-tokens 32 --logprobs 5 --json --device cpu` reproduces transformers' greedy tokens and
//! logprobs within 1e-3, for both layouts. Plus what the JSON and streaming outputs promise.
//!
//! The oracle is tests/fixtures/tiny-s0 unless NEMO_ACCEPTANCE_FIXTURE names another model made
//! by the same recipe (a held-out seed). NEMO_CLI_DEVICE=cuda runs the same comparison on the
//! GPU (NEMO_BIN points at a bundled binary where cargo is absent).

mod cli_support;

use cli_support::{
    acceptance_device, ids, nemo, oracle_dir, parse_json, GenerateJson, Reference, Step,
};

const TOLERANCE: f64 = 1e-3;

fn greedy_json(layout: &str, prompt: &[u32], extra: &[&str]) -> GenerateJson {
    let model = oracle_dir().join(layout);
    let prompt = ids(prompt);
    let device = acceptance_device();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-tokens",
        &prompt,
        "--temperature",
        "0",
        "--max-tokens",
        "32",
        "--logprobs",
        "5",
        "--json",
        "--device",
        &device,
    ];
    args.extend_from_slice(extra);
    parse_json(&nemo(&args))
}

/// Compares one step's logprobs with transformers'; returns the largest difference seen.
/// Top entries are compared rank by rank; where two of transformers' entries are within the
/// tolerance of each other their order may legitimately differ, so a different token is
/// accepted only at such a near-tie.
fn compare_step(what: &str, ours: &Step, want: &Step) -> f64 {
    assert_eq!(ours.token, want.token, "{what}: chosen token");
    let mut worst = (ours.logprob - want.logprob).abs();
    assert_eq!(ours.top.len(), want.top.len(), "{what}: top length");
    for (rank, (o, w)) in ours.top.iter().zip(&want.top).enumerate() {
        worst = worst.max((o.logprob - w.logprob).abs());
        if o.token != w.token {
            let tie = want
                .top
                .iter()
                .any(|x| x.token == o.token && (x.logprob - w.logprob).abs() <= TOLERANCE)
                || (rank == want.top.len() - 1 && (o.logprob - w.logprob).abs() <= TOLERANCE);
            assert!(
                tie,
                "{what}: top[{rank}] is {} ({}), transformers has {} ({})",
                o.token, o.logprob, w.token, w.logprob
            );
        }
    }
    assert!(
        worst <= TOLERANCE,
        "{what}: logprob error {worst:e} > {TOLERANCE:e}"
    );
    worst
}

fn acceptance(prompt_name: &str) {
    let reference = Reference::load(&oracle_dir());
    let prompt = &reference.prompt(prompt_name).tokens;
    let greedy = reference.greedy(prompt_name);
    // transformers' tokens are only determined where the top-2 margin exceeds the tolerance:
    // compare the steps before the first one below it (expected: none in seed 0). At that step
    // either token is right, and the runs may part there.
    let n = greedy
        .margins
        .iter()
        .position(|&m| (m as f64) < TOLERANCE)
        .unwrap_or(greedy.tokens.len());
    let mut worst = 0f64;
    for layout in ["hf", "mistral"] {
        let out = greedy_json(layout, prompt, &["--ignore-eos"]);
        assert_eq!(&out.prompt_tokens, prompt);
        assert_eq!(out.finish_reason, "length");
        assert_eq!(out.tokens.len(), 32);
        assert_eq!(out.text, None, "the fixtures have no tokenizer");
        assert_eq!(
            out.tokens[..n],
            greedy.tokens[..n],
            "{layout} {prompt_name}"
        );
        let logprobs = out.logprobs.expect("--logprobs 5 gives logprobs");
        assert_eq!(logprobs.len(), 32);
        for (step, (ours, want)) in logprobs.iter().zip(&greedy.logprobs).enumerate().take(n) {
            assert_eq!(ours.token, out.tokens[step]);
            assert_eq!(ours.top.len(), 5);
            let what = format!("{layout} {prompt_name} step {step}");
            worst = worst.max(compare_step(&what, ours, want));
        }
        eprintln!(
            "{layout} {prompt_name}: {n} of 32 steps compared, max logprob error so far {worst:.2e}"
        );
    }
}

#[test]
fn greedy_tokens_and_logprobs_match_transformers_p7() {
    acceptance("p7");
}

#[test]
fn greedy_tokens_and_logprobs_match_transformers_p64() {
    acceptance("p64");
}

#[test]
fn greedy_tokens_and_logprobs_match_transformers_p300() {
    acceptance("p300");
}

/// Without --ignore-eos the acceptance command line itself (as the issue writes it) gives the
/// same result: the fixtures' greedy runs never produce EOS (2).
#[test]
fn the_literal_acceptance_command_matches_too() {
    let reference = Reference::load(&oracle_dir());
    let greedy = reference.greedy("p7");
    if greedy.tokens.contains(&2) {
        eprintln!("skipped: this oracle's greedy run produces EOS, where nemo rightly stops");
        return;
    }
    for layout in ["hf", "mistral"] {
        let out = greedy_json(layout, &reference.prompt("p7").tokens, &[]);
        assert_eq!(out.finish_reason, "length");
        assert_eq!(out.tokens.len(), 32);
    }
}

#[test]
fn a_stop_token_ends_the_run_with_stop() {
    let reference = Reference::load(&oracle_dir());
    let greedy = reference.greedy("p7");
    // The first token whose first occurrence is at step >= 3.
    let at = (3..greedy.tokens.len())
        .find(|&i| !greedy.tokens[..i].contains(&greedy.tokens[i]))
        .unwrap();
    let stop = greedy.tokens[at].to_string();
    let out = greedy_json(
        "mistral",
        &reference.prompt("p7").tokens,
        &["--stop-token", "1023", "--stop-token", &stop],
    );
    assert_eq!(out.finish_reason, "stop");
    assert_eq!(out.tokens, greedy.tokens[..=at]);
    assert_eq!(out.logprobs.unwrap().len(), at + 1);
}

#[test]
fn without_logprobs_the_key_is_absent_and_streaming_prints_the_same_tokens() {
    let model = oracle_dir().join("hf");
    let prompt = ids(&Reference::load(&oracle_dir()).prompt("p7").tokens);
    let base = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-tokens",
        &prompt,
        "--temperature",
        "0.8",
        "--top-k",
        "50",
        "--top-p",
        "0.9",
        "--min-p",
        "0.01",
        "--seed",
        "7",
        "--max-tokens",
        "12",
        "--device",
        "cpu",
        "--ignore-eos",
    ];
    let json_run = nemo(&[&base[..], &["--json"]].concat());
    assert!(!json_run.stdout.contains("logprobs"), "{}", json_run.stdout);
    let out = parse_json(&json_run);
    assert_eq!(out.tokens.len(), 12);
    assert!(
        json_run.stderr.contains("tokens/s"),
        "timing goes to stderr: {}",
        json_run.stderr
    );

    // Same seed, same tokens; streamed without --json as ids separated by spaces.
    let streamed = nemo(&base);
    assert_eq!(streamed.code, Some(0), "{}", streamed.describe());
    let printed: Vec<u32> = streamed
        .stdout
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(printed, out.tokens);

    // Another seed draws another sequence.
    let mut other: Vec<&str> = base.to_vec();
    let seed = other.iter().position(|a| *a == "7").unwrap();
    other[seed] = "8";
    let other = parse_json(&nemo(&[&other[..], &["--json"]].concat()));
    assert_ne!(other.tokens, out.tokens);
}

#[test]
fn device_auto_falls_back_to_the_cpu_with_a_notice_when_there_is_no_gpu() {
    if nemo_engine::gpu::probe().is_ok() {
        eprintln!("skipped: this machine has a GPU, so --device auto does not fall back");
        return;
    }
    let model = oracle_dir().join("mistral");
    let run = nemo(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt-tokens",
        "1,2,3",
        "--temperature",
        "0",
        "--max-tokens",
        "3",
        "--json",
    ]);
    let out = parse_json(&run);
    assert_eq!(out.tokens.len(), 3);
    assert!(
        run.stderr.contains("notice: no usable CUDA GPU"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("running on the CPU"), "{}", run.stderr);
}

/// `--kv-cache-dtype fp8`: the cache rounds K and V through e4m3 (docs/fp8-kv.md), so the
/// logprobs move off the f32 run's, but by no more than that rounding explains (the tiny model's
/// worst logit error with an fp8 cache is 0.41, tests/fp8_kv_cache.rs). On the CPU, and on the
/// GPU with NEMO_CLI_DEVICE=cuda.
#[test]
fn an_fp8_kv_cache_moves_the_logprobs_by_its_rounding_only() {
    let reference = Reference::load(&oracle_dir());
    let prompt = &reference.prompt("p64").tokens;
    let plain = greedy_json("hf", prompt, &[]);
    let fp8 = greedy_json("hf", prompt, &["--kv-cache-dtype", "fp8"]);
    let (a, b) = (&plain.logprobs.unwrap()[0], &fp8.logprobs.unwrap()[0]);
    assert_eq!(a.token, b.token, "the first greedy token");
    let moved = a.top.iter().zip(&b.top).map(|(x, y)| (x.logprob - y.logprob).abs()).fold(0f64, f64::max);
    assert!(moved > 1e-5, "the fp8 cache changed nothing: the flag did not reach the cache");
    assert!(moved < 0.5, "top logprobs moved by {moved}");
}

/// `--logit-bias ID=100` forces its token at every step while the logprobs stay the model's
/// (raw logits); `--repetition-penalty` changes the greedy answer.
#[test]
fn a_logit_bias_forces_its_token_and_logprobs_stay_raw() {
    let reference = Reference::load(&oracle_dir());
    let prompt = &reference.prompt("p7").tokens;
    let greedy = reference.greedy("p7");
    let forced = (3..1000).find(|t| !greedy.tokens.contains(t)).unwrap();
    let out = greedy_json("mistral", prompt, &["--logit-bias", &format!("{forced}=100")]);
    assert!(out.tokens.iter().all(|&t| t == forced), "{:?}", out.tokens);
    let first = &out.logprobs.unwrap()[0];
    let want = greedy.logprobs[0].top.iter().find(|e| e.token == forced).map(|e| e.logprob);
    assert!(first.logprob < first.top[0].logprob, "raw logprobs: the forced token is not the model's first choice");
    if let Some(want) = want {
        assert!((first.logprob - want).abs() < TOLERANCE, "forced token's logprob {} vs transformers' {want}", first.logprob);
    }
    let penalised = greedy_json("mistral", prompt, &["--repetition-penalty", "3", "--presence-penalty", "2"]);
    assert_ne!(penalised.tokens, greedy.tokens, "the penalties changed nothing");
}
