//! Hostile and malformed requests (issue 9 item 2): each gets a clear 4xx in OpenAI's error
//! shape, and the server keeps serving (a valid request succeeds after every bad one).

use std::io::BufReader;

use serde_json::json;

use crate::harness::{chat_body, Options, TestServer};
use crate::http_client::*;

fn expect_error(r: &Response, status: u16, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let message = r.error_message();
    assert!(message.contains(says), "expected {says:?} in {message:?}");
}

fn still_serves(s: &TestServer) {
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"max_tokens": 2})));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn malformed_bodies_get_400_and_the_server_keeps_serving() {
    let s = TestServer::start(Options::default());
    let path = "/v1/chat/completions";
    let raw = |body: &[u8]| request(s.addr, "POST", path, &[("Content-Type", "application/json")], body);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"model\": \"test-model\", ".to_vec(), "not valid JSON"),
        (b"not json at all".to_vec(), "not valid JSON"),
        (b"".to_vec(), "not valid JSON"),
        (b"[1, 2]".to_vec(), "invalid request"),
        (b"{\"model\": \"test-model\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(), "not valid UTF-8"),
        (b"{\"model\": \"test-model\", \"messages\": [], \"temperature\": NaN}".to_vec(), "not valid JSON"),
        (b"[\"test-model\", 1]".to_vec(), "invalid request"),
        // Deep nesting: refused where the type is wrong, or at serde_json's recursion limit
        // where any JSON is allowed; never a stack overflow.
        (format!("{{\"model\": \"test-model\", \"messages\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "invalid request field `messages[0][0]`"),
        (format!("{{\"model\": \"test-model\", \"messages\": [], \"tool_choice\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "recursion limit exceeded"),
    ];
    for (body, says) in cases {
        expect_error(&raw(&body), 400, says);
    }
    still_serves(&s);
}

#[test]
fn wrong_types_and_missing_fields_name_the_field() {
    let s = TestServer::start(Options::default());
    let path = "/v1/chat/completions";
    for (body, param) in [
        (json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}), "temperature"),
        (json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}), "max_tokens"),
        (json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}), "stream"),
        (json!({"model": "test-model", "messages": [{"role": "user", "content": 42}]}), "messages[0].content"),
        (json!({"model": "test-model", "messages": "hi"}), "messages"),
        (json!({"model": 7, "messages": []}), "model"),
    ] {
        let r = post_json(s.addr, path, &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}: {}", r.text());
    }
    expect_error(&post_json(s.addr, path, &json!({"messages": []})), 400, "missing field `model`");
    expect_error(&post_json(s.addr, path, &json!({"model": "test-model"})), 400, "missing field `messages`");
    still_serves(&s);
}

#[test]
fn out_of_range_sampling_values_and_unsupported_features_are_refused() {
    let s = TestServer::start(Options::default());
    for (extra, says) in [
        (json!({"temperature": -1}), "temperature must be in [0, 2]"),
        (json!({"temperature": 1e9}), "temperature must be in [0, 2]"),
        (json!({"top_p": 0}), "top_p must be in (0, 1]"),
        (json!({"top_p": -0.5}), "top_p must be in (0, 1]"),
        (json!({"max_tokens": 0}), "max_tokens must be at least 1"),
        (json!({"max_completion_tokens": -3}), "max_completion_tokens must be at least 1"),
        (json!({"n": 0}), "n must be in [1, 128]"),
        (json!({"n": 1000}), "n must be in [1, 128]"),
        (json!({"top_logprobs": 50, "logprobs": true}), "top_logprobs must be in [0, 20]"),
        (json!({"top_logprobs": 3}), "needs logprobs set to true"),
        (json!({"presence_penalty": 2.5}), "presence_penalty must be in [-2, 2]"),
        (json!({"repetition_penalty": -1}), "repetition_penalty must be in [0.01, 100]"),
        (json!({"logit_bias": {"5": -101}}), "logit_bias[\"5\"] must be a number in [-100, 100]"),
        (json!({"logit_bias": {"five": 1}}), "logit_bias keys must be token ids"),
        (json!({"logit_bias": {"999999999": 1}}), "outside the vocabulary"),
        (json!({"response_format": {"type": "json_object", "x": 1}, "guided_regex": "a"}), "give one structured-output constraint"),
        (json!({"tool_choice": "required"}), "needs `tools`"),
        (json!({"tool_choice": {"type": "function", "function": {"name": "f"}}}), "needs `tools`"),
        (json!({"tool_choice": {"type": "function"}}), "a named tool_choice is"),
        (json!({"tool_choice": "always"}), "tool_choice must be"),
        (json!({"functions": [{"name": "f"}]}), "use `tools`"),
        (json!({"stream_options": {"include_usage": true}}), "only allowed when stream is true"),
    ] {
        let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", extra.clone()));
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        let message = r.error_message();
        assert!(message.contains(says), "{extra}: {message}");
    }
    still_serves(&s);
}

#[test]
fn thousands_of_stop_strings_and_unknown_models_are_refused() {
    let s = TestServer::start(Options::default());
    let stops: Vec<String> = (0..5000).map(|i| format!("stop{i}")).collect();
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"stop": stops})));
    expect_error(&r, 400, "at most 32 stop strings");
    let r = post_json(s.addr, "/v1/chat/completions", &json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}));
    expect_error(&r, 404, "the model `gpt-4` does not exist");
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    expect_error(&get(s.addr, "/v1/nothing"), 404, "no route GET /v1/nothing");
    expect_error(&get(s.addr, "/v1/chat/completions"), 405, "not allowed");
    still_serves(&s);
}

#[test]
fn prompts_beyond_the_context_or_the_cache_are_refused_up_front() {
    let opts = Options { max_context: 256, ..Options::default() };
    let s = TestServer::start(opts);
    let long = "word ".repeat(400);
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body(&long, json!({"max_tokens": 1})));
    expect_error(&r, 400, "context is 256 tokens");
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    // "hi" is 4 prompt tokens (<s>[INST]hi[/INST]): 4 + 253 is one past the context.
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"max_tokens": 252})));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"max_tokens": 253})));
    expect_error(&r, 400, "shorten the prompt or lower max_tokens");
    // The cache holds 256 blocks of 16 = 4096 positions; a small context hides that, so try a
    // server whose cache is smaller than its context.
    drop(s);
    let small = Options {
        shape: nemo_engine::engine::CacheShape { block_size: 16, num_blocks: 4, max_step_tokens: 512 },
        ..Options::default()
    };
    let s = TestServer::start(small);
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"max_tokens": 100})));
    expect_error(&r, 400, "--kv-tokens");
    still_serves(&s);
}

#[test]
fn malformed_tool_schemas_and_histories_are_refused() {
    let s = TestServer::start(Options::default());
    let tool = |name: &str, parameters: serde_json::Value| {
        json!([{"type": "function", "function": {"name": name, "parameters": parameters}}])
    };
    let user = |c: &str| json!({"role": "user", "content": c});
    let cases = [
        // A tool name mistral_common refuses, and a schema that is not a JSON schema.
        json!({"messages": [user("hi")], "tools": tool("bad name!", json!({}))}),
        json!({"messages": [user("hi")], "tools": tool("f", json!({"type": 12}))}),
        json!({"messages": [user("hi")], "tools": [{"type": "function"}]}),
        // A call id of the wrong shape; a tool result with no call id; an answer after
        // unanswered calls; a role Nemo does not know.
        json!({"messages": [user("hi"), {"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "x", "content": "1"}]}),
        json!({"messages": [user("hi"), {"role": "tool", "content": "1"}]}),
        json!({"messages": [user("hi"), {"role": "assistant", "tool_calls": [{"id": "abcdefghi", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "assistant", "content": "x"}, user("y")]}),
        json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        json!({"messages": []}),
    ];
    for mut body in cases {
        body["model"] = json!("test-model");
        let r = post_json(s.addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        r.error_message();
    }
    still_serves(&s);
}

#[test]
fn oversized_bodies_and_headers_are_refused() {
    let mut opts = Options::default();
    opts.config.max_body_bytes = 64 << 10;
    let s = TestServer::start(opts);
    // Declared too large: refused before the body is read.
    let big = chat_body(&"a".repeat(100 << 10), json!({}));
    expect_error(&post_json(s.addr, "/v1/chat/completions", &big), 413, "limit of 65536 bytes");
    // Chunked with no length: refused while reading.
    let mut stream = connect(s.addr);
    let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
    for _ in 0..20 {
        let chunk = format!("{:x}\r\n{}\r\n", 8192, "b".repeat(8192));
        if std::io::Write::write_all(&mut stream, chunk.as_bytes()).is_err() {
            break;
        }
    }
    let r = read_response(&mut BufReader::new(stream));
    expect_error(&r, 413, "limit of 65536 bytes");
    // Headers beyond the limit: hyper answers 431 (or closes the connection).
    let huge = "x".repeat(100 << 10);
    let mut stream = connect(s.addr);
    send(&mut stream, "GET", "/health", &[("X-Big", &huge)], b"");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    assert!(line.is_empty() || line.contains(" 431 "), "{line:?}");
    let many: Vec<(String, String)> = (0..200).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut stream = connect(s.addr);
    send(&mut stream, "GET", "/health", &many, b"");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    assert!(line.is_empty() || line.contains(" 431 "), "{line:?}");
    still_serves(&s);
}

/// `max_connections`: one connection more than the limit is answered 503 in OpenAI's shape and
/// closed; once a connection closes, the next one is served.
#[test]
fn connections_past_the_limit_get_503_and_a_closed_one_frees_its_place() {
    let mut opts = Options::default();
    opts.config.max_connections = 2;
    let s = TestServer::start(opts);
    let first = connect(s.addr);
    let second = connect(s.addr);
    let mut third = connect(s.addr);
    send(&mut third, "GET", "/health", &[], b"");
    let r = read_response(&mut BufReader::new(third));
    expect_error(&r, 503, "too many open connections (the limit is 2); retry later");
    drop(first);
    // Served once the server has seen the close (each request here uses a new connection).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let metrics = loop {
        let r = get(s.addr, "/metrics");
        if r.status == 200 {
            break r.text();
        }
        assert!(std::time::Instant::now() < deadline, "a closed connection never freed its place");
    };
    assert!(metrics.contains("nemo_http_requests_total{route=\"(connection limit)\",status=\"503\"}"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "nemo_http_connections_open 2"), "the idle one and this one:\n{metrics}");
    drop(second);
}

#[test]
fn the_api_key_is_required_on_v1_only() {
    let mut opts = Options::default();
    opts.config.api_key = Some("sekret-key".into());
    let s = TestServer::start(opts);
    let body = chat_body("hi", json!({"max_tokens": 2})).to_string();
    let post = |headers: &[(&str, &str)]| request(s.addr, "POST", "/v1/chat/completions", headers, body.as_bytes());
    let r = post(&[]);
    expect_error(&r, 401, "missing API key");
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    expect_error(&post(&[("Authorization", "Bearer wrong")]), 401, "invalid API key");
    expect_error(&post(&[("Authorization", "Bearer sekret-key-and-more")]), 401, "invalid API key");
    expect_error(&post(&[("Authorization", "sekret-key")]), 401, "missing API key");
    expect_error(&request(s.addr, "GET", "/v1/models", &[], b""), 401, "missing API key");
    assert_eq!(post(&[("Authorization", "Bearer sekret-key")]).status, 200);
    assert_eq!(get(s.addr, "/health").status, 200);
    assert_eq!(get(s.addr, "/metrics").status, 200);
    let text = get(s.addr, "/metrics").text();
    assert!(text.contains("nemo_http_requests_total{route=\"/v1/chat/completions\",status=\"401\"} 4"), "{text}");
}

#[test]
fn completions_refuse_bad_prompts() {
    let s = TestServer::start(Options::default());
    let post = |extra: serde_json::Value| {
        let mut body = json!({"model": "test-model", "max_tokens": 2});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post_json(s.addr, "/v1/completions", &body)
    };
    expect_error(&post(json!({})), 400, "missing field `prompt`");
    expect_error(&post(json!({"prompt": [1, 2, -3]})), 400, "-3 is not a token id");
    expect_error(&post(json!({"prompt": [1, 5_000_000]})), 400, "outside the vocabulary");
    expect_error(&post(json!({"prompt": []})), 400, "the prompt is empty");
    expect_error(&post(json!({"prompt": [[1, 2], []]})), 400, "the prompt is empty");
    expect_error(&post(json!({"prompt": [[1, 2], [-1]]})), 400, "-1 is not a token id");
    let many: Vec<&str> = vec!["a"; 600];
    expect_error(&post(json!({"prompt": many, "n": 2})), 400, "600 prompts x n = 2 make 1200 choices; at most 1024");
    expect_error(&post(json!({"prompt": "a", "echo": true})), 400, "echo");
    expect_error(&post(json!({"prompt": "a", "logprobs": 99})), 400, "logprobs must be in [0, 20]");
    assert_eq!(post(json!({"prompt": "hello"})).status, 200);
    assert_eq!(post(json!({"prompt": [1, 1500, 1600]})).status, 200);
}

/// A flood of valid requests: beyond `--max-waiting` queued ones each gets 429 in OpenAI's
/// shape (`rate_limit_exceeded`), nothing already queued is lost, and the server serves again
/// once the queue drains.
#[test]
fn a_full_queue_gets_429_and_the_server_keeps_serving() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let s = TestServer::start(Options { max_running: 1, max_waiting: 1, ..Options::default() });
    s.knobs.step_delay_us.store(10_000, Ordering::SeqCst);
    let long = chat_body("hi", json!({"max_tokens": 2000, "ignore_eos": true, "stream": true}));
    let mut running = connect(s.addr);
    send(&mut running, "POST", "/v1/chat/completions", &[], long.to_string().as_bytes());
    s.wait_metric("nemo_requests_running", 1.0, Duration::from_secs(5));
    let mut queued = connect(s.addr);
    send(&mut queued, "POST", "/v1/chat/completions", &[], long.to_string().as_bytes());
    s.wait_metric("nemo_requests_waiting", 1.0, Duration::from_secs(5));
    for _ in 0..3 {
        let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"max_tokens": 2})));
        expect_error(&r, 429, "already waiting (the limit is 1); retry later");
        assert!(r.text().contains("\"code\":\"rate_limit_exceeded\"") && r.text().contains("rate_limit_error"), "{}", r.text());
    }
    assert_eq!(s.metric("nemo_requests_waiting"), 1.0, "the queued request is still there");
    assert_eq!(s.metric("nemo_http_requests_total{route=\"/v1/chat/completions\",status=\"429\"}"), 3.0);
    drop(running);
    drop(queued);
    s.wait_metric("nemo_requests_running", 0.0, Duration::from_secs(5));
    s.wait_metric("nemo_requests_waiting", 0.0, Duration::from_secs(5));
    s.knobs.step_delay_us.store(0, Ordering::SeqCst);
    still_serves(&s);
}

/// More choices than requests may wait could never all be queued: a 400 naming the limit, not a
/// 429 that invites a retry.
#[test]
fn more_choices_than_may_wait_is_a_400() {
    let s = TestServer::start(Options { max_waiting: 2, ..Options::default() });
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"n": 3, "max_tokens": 2})));
    expect_error(&r, 400, "n = 3 choices exceed the 2 requests this server lets wait (--max-waiting)");
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("hi", json!({"n": 2, "max_tokens": 2})));
    assert_eq!(r.status, 200, "{}", r.text());
    still_serves(&s);
}

/// The sampling fields with values of every JSON kind and size, in random mixes on both
/// endpoints: each request is answered 200 or 4xx with an OpenAI error, never a 5xx or a
/// dropped connection, and the server keeps serving. Seeded from the clock unless
/// NEMO_TEST_SEED is set; the seed is printed.
#[test]
fn random_sampling_fields_never_get_a_5xx() {
    let seed = std::env::var("NEMO_TEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("random_sampling_fields_never_get_a_5xx: NEMO_TEST_SEED={seed}");
    let mut state = seed;
    let mut next = move |n: u64| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    };
    let values = [
        json!(null), json!(true), json!(0), json!(1), json!(-1), json!(2), json!(3), json!(0.5), json!(-2.5), json!(1e300),
        json!(-1e300), json!(9_223_372_036_854_775_807i64), json!(131_072), json!("1"), json!(""), json!([]), json!([1, 2]),
        json!({}), json!({"5": 100}), json!({"5": -100, "131071": 1}), json!({"x": 1}), json!({"-1": 1}), json!({"5": "a"}),
        json!({"5": 1e10}), json!("required"), json!("none"), json!({"type": "function", "function": {"name": "f"}}),
        json!({"type": "json_object"}), json!({"type": "json_schema", "json_schema": {"schema": {"type": "integer"}}}),
        json!({"type": "string", "maxLength": 3}), json!("[a-c]{1,3}"), json!(["a", "b"]), json!("(("), json!({"regex": "x?"}),
        json!("start: \"a\""),
    ];
    let fields = [
        "temperature", "top_p", "top_k", "min_p", "seed", "n", "max_tokens", "min_tokens", "logit_bias", "frequency_penalty",
        "presence_penalty", "repetition_penalty", "logprobs", "top_logprobs", "tool_choice", "ignore_eos", "stop", "stream",
        "response_format", "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs",
    ];
    let s = TestServer::start(Options::default());
    let mut by_status = std::collections::BTreeMap::new();
    for case in 0..400 {
        let chat = next(2) == 0;
        let mut body = if chat { chat_body("hi", json!({})) } else { json!({"model": "test-model", "prompt": "hi"}) };
        body["max_tokens"] = json!(3);
        for _ in 0..1 + next(4) {
            let field = fields[next(fields.len() as u64) as usize];
            body[field] = values[next(values.len() as u64) as usize].clone();
        }
        let path = if chat { "/v1/chat/completions" } else { "/v1/completions" };
        let r = post_json(s.addr, path, &body);
        assert!(r.status == 200 || (400..500).contains(&r.status), "case {case} (seed {seed}): {body} -> {} {}", r.status, r.text());
        if r.status != 200 {
            assert!(!r.error_message().is_empty(), "case {case}: {body} -> {}", r.text());
        }
        *by_status.entry(r.status).or_insert(0) += 1;
    }
    eprintln!("random sampling fields: {by_status:?}");
    assert!(by_status.get(&200).is_some_and(|&n| n >= 10) && by_status.get(&400).is_some_and(|&n| n >= 100), "{by_status:?}");
    still_serves(&s);
}
