//! The endpoints' normal behaviour over the in-process server: shapes, streaming equal to
//! non-streaming, logprobs, stop strings, tool calls from a real `[TOOL_CALLS]` output, usage.

use serde_json::{json, Value};

use crate::harness::{chat_body, tekken, Options, TestServer, TOOL_CALLS};
use crate::http_client::*;

/// The content of a streamed chat answer, its finish reason and the usage chunk (if any).
fn stream_chat(s: &TestServer, body: &Value) -> (String, String, Option<Value>, Vec<Value>) {
    let r = post_json(s.addr, "/v1/chat/completions", body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let payloads = sse_payloads(&r.text());
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{payloads:?}");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut content = String::new();
    let mut finish = String::new();
    let mut usage = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk", "{c}");
        assert_eq!(c["id"], chunks[0]["id"]);
        if let Some(choice) = c["choices"].get(0) {
            content += choice["delta"]["content"].as_str().unwrap_or("");
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        if c["usage"].is_object() {
            assert_eq!(c["choices"], json!([]), "the usage chunk has no choices");
            usage = Some(c["usage"].clone());
        }
    }
    (content, finish, usage, chunks)
}

#[test]
fn chat_answers_whole_and_streamed_alike_at_temperature_zero() {
    let s = TestServer::start(Options::default());
    let body = chat_body("Tell me a story.", json!({"temperature": 0, "max_tokens": 24}));
    let r = post_json(s.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "test-model");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "length");
    let content = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(!content.is_empty());
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 5);
    assert_eq!(v["usage"]["completion_tokens"], 24);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 24);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (text, finish, usage, _) = stream_chat(&s, &streamed);
    assert_eq!(text, content);
    assert_eq!(finish, "length");
    // The same prompt again: its whole 16-token blocks (all but the last token) come from the
    // prefix cache; the rest of the usage is the same.
    let mut usage = usage.unwrap();
    let cached = prompt_tokens.saturating_sub(1) / 16 * 16;
    assert_eq!(v["usage"]["prompt_tokens_details"], json!({"cached_tokens": 0}));
    assert_eq!(usage["prompt_tokens_details"], json!({"cached_tokens": cached}));
    usage["prompt_tokens_details"]["cached_tokens"] = json!(0);
    assert_eq!(usage, v["usage"]);
    // Without include_usage there is no usage chunk.
    streamed.as_object_mut().unwrap().remove("stream_options");
    let (text, _, usage, _) = stream_chat(&s, &streamed);
    assert_eq!((text, usage), (content, None));
    assert_eq!(s.metric("nemo_prefix_cache_hit_tokens_total"), 2.0 * cached as f64);
    assert!(s.metric("nemo_kv_blocks_cached") >= (cached / 16) as f64);
}

#[test]
fn a_seed_makes_sampling_reproducible() {
    let s = TestServer::start(Options::default());
    let ask = |seed: u64| {
        let body = chat_body("hi", json!({"temperature": 1.0, "max_tokens": 16, "seed": seed}));
        post_json(s.addr, "/v1/chat/completions", &body).json()["choices"][0]["message"]["content"].clone()
    };
    assert_eq!(ask(5), ask(5));
    assert_ne!(ask(5), ask(6));
}

#[test]
fn logprobs_come_with_every_token_whole_and_streamed() {
    let s = TestServer::start(Options::default());
    let body = chat_body("hi", json!({"temperature": 0, "max_tokens": 6, "logprobs": true, "top_logprobs": 3}));
    let v = post_json(s.addr, "/v1/chat/completions", &body).json();
    let entries = v["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 6);
    let mut joined = Vec::new();
    for e in &entries {
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{e}");
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most probable one.
        assert_eq!(top[0]["token"], e["token"]);
        assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-6);
        assert!(top.windows(2).all(|w| w[0]["logprob"].as_f64() >= w[1]["logprob"].as_f64()));
        joined.extend(e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8));
    }
    // The tokens' bytes spell the answer.
    assert_eq!(String::from_utf8_lossy(&joined), v["choices"][0]["message"]["content"].as_str().unwrap());

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (_, _, _, chunks) = stream_chat(&s, &streamed);
    let streamed_entries: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(streamed_entries, entries);
}

#[test]
fn a_stop_string_cuts_the_answer_and_ends_generation() {
    let s = TestServer::start(Options::default());
    let body = chat_body("hi", json!({"temperature": 0, "max_tokens": 40}));
    let full = post_json(s.addr, "/v1/chat/completions", &body).json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    // A stop string taken from the middle of the answer.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "{full:?}");
    let stop: String = chars[8..11].iter().collect();
    let cut = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut b = body.clone();
        b["stop"] = json!([stop.clone()]);
        b["stream"] = json!(stream);
        let (text, finish) = if stream {
            let (text, finish, _, _) = stream_chat(&s, &b);
            (text, finish)
        } else {
            let v = post_json(s.addr, "/v1/chat/completions", &b).json();
            let usage = v["usage"]["completion_tokens"].as_u64().unwrap();
            assert!(usage < 40, "generation went on past the stop string: {v}");
            (v["choices"][0]["message"]["content"].as_str().unwrap().to_string(), v["choices"][0]["finish_reason"].as_str().unwrap().to_string())
        };
        assert_eq!((text.as_str(), finish.as_str()), (cut, "stop"), "stream {stream}");
    }
}

const CALL: &str = r#"[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]"#;

fn tool_server() -> TestServer {
    let mut script = tekken().encode("Checking.").unwrap();
    script.push(TOOL_CALLS);
    script.extend(tekken().encode(CALL).unwrap());
    TestServer::start(Options { script: Some(script), ..Options::default() })
}

fn tool_body() -> Value {
    chat_body(
        "What is the weather in Paris?",
        json!({"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}}]}),
    )
}

#[test]
fn tool_calls_come_back_as_openai_tool_calls() {
    let s = tool_server();
    let v = post_json(s.addr, "/v1/chat/completions", &tool_body()).json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["content"], "Checking.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let id = calls[0]["id"].as_str().unwrap();
    assert!(id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));

    // Sending the call and its result back renders and runs (the id is the form Nemo needs).
    let mut next = tool_body();
    let messages = next["messages"].as_array_mut().unwrap();
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "{\"temp\": 21}"}));
    let r = post_json(s.addr, "/v1/chat/completions", &next);
    assert_eq!(r.status, 200, "{}", r.text());

    // With tool_choice "none" the tools are not shown and the output is plain text.
    let mut none = tool_body();
    none["tool_choice"] = json!("none");
    let v = post_json(s.addr, "/v1/chat/completions", &none).json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
}

#[test]
fn tool_calls_stream_as_deltas() {
    let s = tool_server();
    let mut body = tool_body();
    body["stream"] = json!(true);
    let (content, finish, _, chunks) = stream_chat(&s, &body);
    assert_eq!((content.as_str(), finish.as_str()), ("Checking.", "tool_calls"));
    let deltas: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert!(deltas.len() > 2, "arguments arrive in several deltas: {deltas:?}");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert_eq!(deltas[0]["type"], "function");
    assert!(deltas[0]["id"].is_string());
    assert!(deltas[1..].iter().all(|d| d["index"] == 0 && d.get("id").is_none()));
    let args: String = deltas.iter().map(|d| d["function"]["arguments"].as_str().unwrap_or("")).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris", "unit": "celsius"}));
}

#[test]
fn completions_answer_text_and_token_prompts_whole_and_streamed() {
    let s = TestServer::start(Options::default());
    for prompt in [json!("Once upon a time"), json!([1, 22_000, 1_500]), json!(["Once upon a time"])] {
        let body = json!({"model": "test-model", "prompt": prompt, "temperature": 0, "max_tokens": 12, "logprobs": 2});
        let v = post_json(s.addr, "/v1/completions", &body).json();
        assert_eq!(v["object"], "text_completion", "{v}");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], 12);
        let text = choice["text"].as_str().unwrap();
        let lp = &choice["logprobs"];
        assert_eq!(lp["tokens"].as_array().unwrap().len(), 12);
        // Two alternatives per token (fewer only when two tokens print alike).
        let top = lp["top_logprobs"][0].as_object().unwrap().len();
        assert!((1..=2).contains(&top), "{lp}");
        assert_eq!(lp["text_offset"][0], 0);

        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let r = post_json(s.addr, "/v1/completions", &streamed);
        let payloads = sse_payloads(&r.text());
        assert_eq!(payloads.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = payloads[..payloads.len() - 1].iter().map(|p| serde_json::from_str(p).unwrap()).collect();
        let joined: String = chunks.iter().map(|c| c["choices"][0]["text"].as_str().unwrap_or("")).collect();
        assert_eq!(joined, text);
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
    }
    // The default max_tokens is 16, as OpenAI's.
    let v = post_json(s.addr, "/v1/completions", &json!({"model": "test-model", "prompt": "x", "ignore_eos": true})).json();
    assert_eq!(v["usage"]["completion_tokens"], 16, "{v}");
}

#[test]
fn models_health_and_metrics() {
    let s = TestServer::start(Options::default());
    let v = get(s.addr, "/v1/models").json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "test-model");
    assert_eq!(v["data"][0]["max_model_len"], 4096);
    assert_eq!(get(s.addr, "/health").status, 200);
    let body = chat_body("hi", json!({"max_tokens": 5, "ignore_eos": true}));
    for _ in 0..3 {
        assert_eq!(post_json(s.addr, "/v1/chat/completions", &body).status, 200);
    }
    let text = get(s.addr, "/metrics").text();
    for needle in [
        "nemo_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 3",
        "nemo_requests_finished_total{reason=\"length\"} 3",
        "nemo_generation_tokens_total 15",
        "nemo_time_to_first_token_seconds_count 3",
        "nemo_inter_token_latency_seconds_count 12",
        "nemo_kv_blocks_total 256",
        "nemo_kv_blocks_used 0",
        "nemo_requests_running 0",
        "nemo_requests_waiting 0",
    ] {
        assert!(text.lines().any(|l| l == needle), "missing {needle:?} in\n{text}");
    }
    assert!(s.metric("process_resident_memory_bytes") > 1e6);
}

/// `logit_bias` +100 forces its token at every step, and the logprobs reported are the model's
/// (raw logits, as vLLM reports them), not the biased ones; penalties are taken; a bias on a
/// token outside the vocabulary is a 400 naming it.
#[test]
fn logit_bias_forces_its_token_and_penalties_are_taken() {
    let s = TestServer::start(Options::default());
    let body = json!({"model": "test-model", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 4,
                      "logprobs": 1, "logit_bias": {"1234": 100}});
    let v = post_json(s.addr, "/v1/completions", &body).json();
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 4, "{v}");
    assert!(tokens.iter().all(|t| t == &tokens[0]), "one forced token: {tokens:?}");
    for l in lp["token_logprobs"].as_array().unwrap() {
        assert!(l.as_f64().unwrap() < -1.0, "raw logprobs expected, got {l}");
    }
    let unbiased = post_json(s.addr, "/v1/completions", &json!({"model": "test-model", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 4})).json();
    assert_ne!(unbiased["choices"][0]["text"], v["choices"][0]["text"], "the bias changed nothing");

    let penalised = chat_body("Tell me a story.", json!({"temperature": 0, "max_tokens": 8, "repetition_penalty": 1.3,
                                                       "frequency_penalty": 0.5, "presence_penalty": -0.5}));
    let r = post_json(s.addr, "/v1/chat/completions", &penalised);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 8);

    let r = post_json(s.addr, "/v1/completions", &json!({"model": "test-model", "prompt": "x", "logit_bias": {"131072": 5}}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("logit_bias names token 131072, outside the vocabulary of 131072"), "{}", r.text());
}

/// OpenAI's `n`: several choices, each seeded with the seed + its index (vLLM's rule), whole and
/// streamed alike; usage counts the prompt once and sums the completions.
#[test]
fn n_choices_whole_and_streamed_alike_with_the_prompt_counted_once() {
    let s = TestServer::start(Options::default());
    let body = chat_body("Tell me a story.", json!({"temperature": 1.0, "seed": 5, "max_tokens": 6, "n": 3, "logprobs": true}));
    let v = post_json(s.addr, "/v1/chat/completions", &body).json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    let texts: Vec<&str> = choices.iter().map(|c| c["message"]["content"].as_str().unwrap()).collect();
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
        assert_eq!(c["logprobs"]["content"].as_array().unwrap().len(), 6);
    }
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "three seeds gave one answer: {texts:?}");
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 18);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 18);
    // Choice i is the single answer seeded with 5 + i.
    let single = |seed: u64| {
        let one = chat_body("Tell me a story.", json!({"temperature": 1.0, "seed": seed, "max_tokens": 6}));
        post_json(s.addr, "/v1/chat/completions", &one).json()["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    assert_eq!(single(7), texts[2]);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (_, _, usage, chunks) = stream_chat(&s, &streamed);
    let mut joined = vec![String::new(); 3];
    let mut finished = [0; 3];
    for c in &chunks {
        if let Some(choice) = c["choices"].get(0) {
            let i = choice["index"].as_u64().unwrap() as usize;
            joined[i] += choice["delta"]["content"].as_str().unwrap_or("");
            finished[i] += choice["finish_reason"].is_string() as usize;
        }
    }
    assert_eq!(joined, texts, "streamed choices equal the whole ones");
    assert_eq!(finished, [1, 1, 1], "one finish_reason per choice");
    let roles = chunks.iter().filter(|c| c["choices"].get(0).is_some_and(|ch| ch["delta"]["role"] == "assistant")).count();
    assert_eq!(roles, 3, "a role chunk per choice");
    assert_eq!(usage.unwrap()["completion_tokens"], 18);

    let v = post_json(s.addr, "/v1/completions", &json!({"model": "test-model", "prompt": "Once upon a time", "temperature": 1.0,
                                                         "seed": 1, "max_tokens": 4, "n": 2, "logprobs": 1})).json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!((choices.len(), &choices[1]["index"]), (2, &json!(1)), "{v}");
    assert_eq!(choices[1]["logprobs"]["tokens"].as_array().unwrap().len(), 4);
    assert_eq!(v["usage"]["completion_tokens"], 8);
}

/// vLLM's `min_tokens`: a stop string in the first min_tokens tokens does not end the answer;
/// min_tokens above max_tokens, or negative, is refused.
#[test]
fn min_tokens_holds_off_stop_strings() {
    let s = TestServer::start(Options::default());
    let ask = |extra: Value| {
        let mut body = json!({"model": "test-model", "prompt": "Once upon a time", "temperature": 0, "max_tokens": 12, "logprobs": 0});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post_json(s.addr, "/v1/completions", &body)
    };
    let v = ask(json!({})).json();
    let first = v["choices"][0]["logprobs"]["tokens"][0].as_str().unwrap().to_string();
    assert!(!first.is_empty(), "{v}");
    let stopped = ask(json!({"stop": [first.clone()]})).json();
    assert_eq!(stopped["usage"]["completion_tokens"], 1, "the first token's text stops: {stopped}");
    let held = ask(json!({"stop": [first], "min_tokens": 6})).json();
    let n = held["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(n >= 6, "min_tokens 6 held the stop string off for {n} tokens: {held}");
    let r = ask(json!({"min_tokens": 13}));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("min_tokens 13 exceeds max_tokens 12"), "{}", r.text());
    let r = ask(json!({"min_tokens": -1}));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("min_tokens must be >= 0"), "{}", r.text());
}

/// `tool_choice: required` and a named function: the answer is made to start with
/// `[TOOL_CALLS]` (and the name), appended to the prompt and read by the parser first. The
/// scripted model writes by position after `[/INST]`, so the forced tokens take the place of
/// its first ones: with `auto` it writes text, with the forced start the same script is a call.
#[test]
fn a_required_or_named_tool_choice_starts_the_answer_with_the_call() {
    let x = tekken().encode("x").unwrap();
    let s = TestServer::start(Options { script: Some([&x[..], &tekken().encode(CALL).unwrap()].concat()), ..Options::default() });
    let auto = post_json(s.addr, "/v1/chat/completions", &tool_body()).json();
    assert_eq!(auto["choices"][0]["finish_reason"], "stop", "{auto}");
    let mut required = tool_body();
    required["tool_choice"] = json!("required");
    let v = post_json(s.addr, "/v1/chat/completions", &required).json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather");
    assert!(v["choices"][0]["message"]["content"].is_null(), "{v}");
    let forced = v["usage"]["prompt_tokens"].as_u64().unwrap() - auto["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(forced, 1, "[TOOL_CALLS] is appended to the prompt");

    // Named: the scripted model writes what follows `"arguments":`.
    let head = 1 + tekken().encode(r#"[{"name": "get_weather", "arguments":"#).unwrap().len();
    let script = [x.repeat(head), tekken().encode(r#" {"city": "Oslo"}}]"#).unwrap()].concat();
    let s = TestServer::start(Options { script: Some(script), ..Options::default() });
    let auto = post_json(s.addr, "/v1/chat/completions", &tool_body()).json();
    assert_eq!(auto["choices"][0]["finish_reason"], "stop", "{auto}");
    for stream in [false, true] {
        let mut named = tool_body();
        named["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
        named["stream"] = json!(stream);
        let (name, args) = if stream {
            let (_, finish, _, chunks) = stream_chat(&s, &named);
            assert_eq!(finish, "tool_calls");
            let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
            let args: String = deltas.iter().map(|d| d["function"]["arguments"].as_str().unwrap_or("")).collect();
            (deltas[0]["function"]["name"].clone(), args)
        } else {
            let v = post_json(s.addr, "/v1/chat/completions", &named).json();
            let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
            (call["name"].clone(), call["arguments"].as_str().unwrap().to_string())
        };
        assert_eq!(name, "get_weather", "stream {stream}");
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Oslo"}), "stream {stream}");
    }
    let mut unknown = tool_body();
    unknown["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let r = post_json(s.addr, "/v1/chat/completions", &unknown);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("`get_time`, which is not among the tools"), "{}", r.text());
}

/// vLLM's `/tokenize` and `/detokenize`: a prompt or a conversation to the ids a generation
/// request runs (its usage says as many), and ids back to text; bad input is a 400.
#[test]
fn tokenize_and_detokenize_agree_with_the_generation_endpoints() {
    let s = TestServer::start(Options::default());
    let v = post_json(s.addr, "/tokenize", &json!({"model": "test-model", "prompt": "Once upon a time"})).json();
    let tokens: Vec<u64> = v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
    assert_eq!(v["count"], tokens.len());
    assert_eq!(tokens[0], 1, "BOS first, as /v1/completions encodes it");
    assert!(v["max_model_len"].as_u64().unwrap() > 0);
    let done = post_json(s.addr, "/v1/completions", &json!({"model": "test-model", "prompt": "Once upon a time", "max_tokens": 1})).json();
    assert_eq!(done["usage"]["prompt_tokens"], tokens.len());
    let bare = post_json(s.addr, "/tokenize", &json!({"prompt": "Once upon a time", "add_special_tokens": false})).json();
    assert_eq!(bare["tokens"].as_array().unwrap()[..], v["tokens"].as_array().unwrap()[1..]);
    let text = post_json(s.addr, "/detokenize", &json!({"tokens": tokens})).json();
    assert_eq!(text["prompt"], "<s>Once upon a time");

    let chat = chat_body("Hello there", json!({}));
    let v = post_json(s.addr, "/tokenize", &chat).json();
    let done = post_json(s.addr, "/v1/chat/completions", &chat_body("Hello there", json!({"max_tokens": 1}))).json();
    assert_eq!(v["count"], done["usage"]["prompt_tokens"], "{v}");
    // With tools, `tool_choice` shapes the prompt as the chat endpoint builds it: `none` hides
    // the tools, `required` and a named function start the answer with the call.
    let mut counts = Vec::new();
    for choice in [json!("auto"), json!("none"), json!("required"), json!({"type": "function", "function": {"name": "get_weather"}})] {
        let mut body = tool_body();
        body["tool_choice"] = choice.clone();
        let v = post_json(s.addr, "/tokenize", &body).json();
        body["max_tokens"] = json!(1);
        let done = post_json(s.addr, "/v1/chat/completions", &body).json();
        assert_eq!(v["count"], done["usage"]["prompt_tokens"], "tool_choice {choice}: {v} / {done}");
        counts.push(v["count"].as_u64().unwrap());
    }
    assert!(counts[1] < counts[0] && counts[2] == counts[0] + 1 && counts[3] > counts[2], "{counts:?}");

    for (path, body, says) in [
        ("/tokenize", json!({"prompt": "x", "messages": []}), "not both"),
        ("/tokenize", json!({}), "give `prompt`"),
        ("/tokenize", json!({"model": "gpt-4", "prompt": "x"}), "does not exist"),
        ("/detokenize", json!({"tokens": [1, -5]}), "tokens[1]"),
        ("/detokenize", json!({"tokens": [131072]}), "not a token id"),
    ] {
        let r = post_json(s.addr, path, &body);
        assert!(r.status == 400 || r.status == 404, "{path} {body}: {}", r.status);
        assert!(r.text().contains(says), "{path} {body}: {}", r.text());
    }
}

/// `/v1/completions` with a list of prompts (as evaluation harnesses send them): `n` choices
/// of each, prompt p's choice i at index p * n + i, each equal to that prompt asked alone, and
/// the usage counting each prompt once.
#[test]
fn a_list_of_prompts_gets_n_choices_each() {
    let s = TestServer::start(Options::default());
    let ask = |prompt: Value, n: usize, stream: bool| {
        let body = json!({"model": "test-model", "prompt": prompt, "n": n, "temperature": 0.8, "seed": 4, "max_tokens": 3,
                          "ignore_eos": true, "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { json!(null) }});
        post_json(s.addr, "/v1/completions", &body)
    };
    let prompts = ["Once upon a time", "The capital of France is"];
    let v = ask(json!(prompts), 2, false).json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4, "{v}");
    let texts: Vec<String> = choices.iter().map(|c| c["text"].as_str().unwrap().to_string()).collect();
    let mut prompt_tokens = 0;
    for (p, prompt) in prompts.iter().enumerate() {
        let alone = ask(json!(prompt), 2, false).json();
        prompt_tokens += alone["usage"]["prompt_tokens"].as_u64().unwrap();
        for i in 0..2 {
            assert_eq!(choices[p * 2 + i]["index"], p * 2 + i);
            assert_eq!(alone["choices"][i]["text"].as_str().unwrap(), texts[p * 2 + i], "prompt {p} choice {i}");
        }
    }
    assert_eq!(v["usage"]["prompt_tokens"].as_u64().unwrap(), prompt_tokens, "each prompt counted once");
    assert_eq!(v["usage"]["completion_tokens"], 12);

    let r = ask(json!(prompts), 2, true);
    let payloads = sse_payloads(&r.text());
    let mut joined = vec![String::new(); 4];
    let mut usage = None;
    for p in &payloads[..payloads.len() - 1] {
        let c: Value = serde_json::from_str(p).unwrap();
        if let Some(choice) = c["choices"].get(0) {
            joined[choice["index"].as_u64().unwrap() as usize] += choice["text"].as_str().unwrap_or("");
        }
        if c["usage"].is_object() {
            usage = Some(c["usage"].clone());
        }
    }
    assert_eq!(joined, texts, "streamed equal to whole");
    assert_eq!(usage.unwrap()["prompt_tokens"], v["usage"]["prompt_tokens"]);
}
