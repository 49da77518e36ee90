use super::*;
use crate::server::openai::parse::read_json;

fn params(json: &str) -> Result<GenerationParams, ApiError> {
    let f: SharedFields = read_json(json)?;
    generation_params(&f, f.max_tokens.map(|n| ("max_tokens", n)), SamplingDefaults::default())
}

fn refused(json: &str) -> ApiError {
    params(json).expect_err(json)
}

#[test]
fn omitted_values_come_from_the_model_defaults() {
    let p = params(r#"{"model": "m", "seed": 7}"#).unwrap();
    assert_eq!(p.sampling, SamplingParams { temperature: 0.3, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 7 });
    assert_eq!((p.max_tokens, p.stream, p.include_usage, p.ignore_eos), (None, false, false, false));
    // No seed: each request draws its own.
    let a = params(r#"{"model": "m"}"#).unwrap().sampling.seed;
    let b = params(r#"{"model": "m"}"#).unwrap().sampling.seed;
    assert_ne!(a, b);
}

#[test]
fn given_values_are_used() {
    let p = params(
        r#"{"model": "m", "temperature": 0, "top_p": 0.5, "top_k": 40, "min_p": 0.1, "max_tokens": 9,
            "stop": ["a", "b"], "seed": -1, "stream": true, "stream_options": {"include_usage": true}}"#,
    )
    .unwrap();
    assert_eq!(p.sampling, SamplingParams { temperature: 0.0, top_k: 40, top_p: 0.5, min_p: 0.1, seed: u64::MAX });
    assert_eq!((p.max_tokens, p.stop_strings.len(), p.stream, p.include_usage), (Some(9), 2, true, true));
    assert_eq!(params(r#"{"model": "m", "top_k": -1, "stop": "x"}"#).unwrap().stop_strings, ["x"]);
}

#[test]
fn out_of_range_values_are_refused_by_name() {
    for (json, param, says) in [
        (r#"{"model": "m", "temperature": -0.1}"#, "temperature", "[0, 2]"),
        (r#"{"model": "m", "temperature": 2.5}"#, "temperature", "[0, 2]"),
        (r#"{"model": "m", "top_p": 0}"#, "top_p", "(0, 1]"),
        (r#"{"model": "m", "top_p": 1.01}"#, "top_p", "(0, 1]"),
        (r#"{"model": "m", "top_k": -2}"#, "top_k", "positive"),
        (r#"{"model": "m", "min_p": -1}"#, "min_p", "[0, 1]"),
        (r#"{"model": "m", "max_tokens": 0}"#, "max_tokens", "at least 1"),
        (r#"{"model": "m", "max_tokens": -5}"#, "max_tokens", "at least 1"),
        (r#"{"model": "m", "n": 0}"#, "n", "n must be in [1, 128]"),
        (r#"{"model": "m", "n": 129}"#, "n", "n must be in [1, 128]"),
        (r#"{"model": "m", "frequency_penalty": 2.5}"#, "frequency_penalty", "[-2, 2]"),
        (r#"{"model": "m", "presence_penalty": -3}"#, "presence_penalty", "[-2, 2]"),
        (r#"{"model": "m", "repetition_penalty": 0}"#, "repetition_penalty", "[0.01, 100]"),
        (r#"{"model": "m", "repetition_penalty": 1000}"#, "repetition_penalty", "[0.01, 100]"),
        (r#"{"model": "m", "logit_bias": {"1": 101}}"#, "logit_bias", "[-100, 100]"),
        (r#"{"model": "m", "logit_bias": {"1": "5"}}"#, "logit_bias", "a number"),
        (r#"{"model": "m", "logit_bias": {"x": 5}}"#, "logit_bias", "token ids"),
        (r#"{"model": "m", "logit_bias": {"-1": 5}}"#, "logit_bias", "token ids"),
        (r#"{"model": "m", "logit_bias": {"7": 1, "07": 2}}"#, "logit_bias", "token 7 twice"),
        (r#"{"model": "m", "stream_options": {"include_usage": true}}"#, "stream_options", "stream is true"),
        (r#"{"model": "m", "stop": ["ok", ""]}"#, "stop[1]", "must not be empty"),
    ] {
        let e = refused(json);
        assert_eq!((e.status.as_u16(), e.param.as_deref()), (400, Some(param)), "{json}: {e}");
        assert!(e.message.contains(says), "{json}: {e}");
    }
    // NaN and infinities cannot be written in JSON: the body is refused as malformed.
    assert!(refused(r#"{"model": "m", "temperature": NaN}"#).message.contains("not valid JSON"));
    assert!(refused(r#"{"model": "m", "temperature": 1e999}"#).message.contains("not valid JSON"));
}

#[test]
fn thousands_of_stop_strings_or_huge_ones_are_refused() {
    let many: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
    let json = serde_json::json!({"model": "m", "stop": many}).to_string();
    let e = refused(&json);
    assert!(e.message.contains("at most 32 stop strings") && e.message.contains("5000"), "{e}");
    let json = serde_json::json!({"model": "m", "stop": ["x".repeat(300)]}).to_string();
    assert!(refused(&json).message.contains("at most 256 bytes"));
}

#[test]
fn max_tokens_is_checked_against_the_context_and_the_cache() {
    let limits = Limits { vocab_size: 100, max_context: 100, block_size: 4, num_blocks: 10 };
    assert_eq!(resolve_max_tokens(Some(10), 20, &limits), Ok(10));
    let e = resolve_max_tokens(Some(90), 20, &limits).unwrap_err();
    assert_eq!(e.code, Some("context_length_exceeded"));
    assert!(e.message.contains("context is 100 tokens") && e.message.contains("110 in all"), "{e}");
    // 40 cache positions: prompt 20 + max_tokens 21 needs 40 positions and fits; 22 does not.
    assert_eq!(resolve_max_tokens(Some(21), 20, &limits), Ok(21));
    let e = resolve_max_tokens(Some(22), 20, &limits).unwrap_err();
    assert!(e.message.contains("--kv-tokens"), "{e}");
    // Omitted: whatever fits.
    assert_eq!(resolve_max_tokens(None, 20, &limits), Ok(21));
    let roomy = Limits { num_blocks: 1000, ..limits };
    assert_eq!(resolve_max_tokens(None, 20, &roomy), Ok(80));
    assert!(resolve_max_tokens(None, 100, &roomy).is_err());
    assert_eq!(resolve_max_tokens(Some(usize::MAX), 20, &roomy).unwrap_err().code, Some("context_length_exceeded"));
}

#[test]
fn penalties_and_logit_bias_are_taken_sorted_by_token() {
    let p = params(
        r#"{"model": "m", "frequency_penalty": -2, "presence_penalty": 1.5, "repetition_penalty": 1.2,
            "logit_bias": {"30": -100, "2": 100, "11": 0.5}}"#,
    )
    .unwrap();
    let want = Penalties { repetition: 1.2, frequency: -2.0, presence: 1.5, logit_bias: vec![(2, 100.0), (11, 0.5), (30, -100.0)] };
    assert_eq!(p.penalties, want);
    let neutral = params(r#"{"model": "m", "frequency_penalty": 0, "repetition_penalty": 1, "logit_bias": {}}"#).unwrap();
    assert!(neutral.penalties.is_neutral());
    assert!(params(r#"{"model": "m"}"#).unwrap().penalties.is_neutral());
    let many: String = (0..=MAX_LOGIT_BIAS).map(|t| format!("\"{t}\": 1")).collect::<Vec<_>>().join(", ");
    let e = refused(&format!(r#"{{"model": "m", "logit_bias": {{{many}}}}}"#));
    assert!(e.message.contains("at most 1024 tokens"), "{e}");
}
