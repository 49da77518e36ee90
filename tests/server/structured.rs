//! Structured outputs over HTTP: `response_format` and vLLM's guided fields constrain what the
//! (random) fake model writes, whole and streamed, for every choice; bad constraints are 400s
//! naming their field.

use serde_json::{json, Value};

use crate::harness::{chat_body, tekken, Options, TestServer};
use crate::http_client::*;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "minimum": 1, "maximum": 9},
                       "unit": {"enum": ["C", "F"]}},
        "required": ["city", "days", "unit"], "additionalProperties": false,
        "x-guidance": {"whitespace_flexible": false}
    })
}

fn follows_schema(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let o = v.as_object().unwrap_or_else(|| panic!("not an object: {text:?}"));
    assert_eq!(o.len(), 3, "{text:?}");
    assert!(o["city"].as_str().unwrap().chars().count() <= 10, "{text:?}");
    assert!((1..=9).contains(&o["days"].as_i64().unwrap()), "{text:?}");
    assert!(["C", "F"].contains(&o["unit"].as_str().unwrap()), "{text:?}");
}

#[test]
fn a_json_schema_response_format_gives_json_that_follows_it_whole_and_streamed() {
    let s = TestServer::start(Options::default());
    let format = json!({"type": "json_schema", "json_schema": {"name": "weather", "schema": schema(), "strict": true}});
    let body = chat_body("Weather?", json!({"temperature": 0.8, "seed": 4, "n": 3, "max_tokens": 200, "response_format": format}));
    let r = post_json(s.addr, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    for choice in v["choices"].as_array().unwrap() {
        assert_eq!(choice["finish_reason"], "stop", "{choice}");
        follows_schema(choice["message"]["content"].as_str().unwrap());
    }
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = post_json(s.addr, "/v1/chat/completions", &streamed);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut content = vec![String::new(); 3];
    for p in sse_payloads(&r.text()).iter().filter(|p| *p != "[DONE]") {
        let c: Value = serde_json::from_str(p).unwrap();
        for choice in c["choices"].as_array().unwrap() {
            content[choice["index"].as_u64().unwrap() as usize] += choice["delta"]["content"].as_str().unwrap_or("");
        }
    }
    for (i, text) in content.iter().enumerate() {
        follows_schema(text);
        assert_eq!(text, v["choices"][i]["message"]["content"].as_str().unwrap(), "choice {i}: streamed differs from whole");
    }
    // The streamed request's schema came from the compiled-grammar cache (shared by the tests'
    // servers, so only a lower bound can be asserted here; tests/structured.rs checks the rest).
    assert!(s.metric("nemo_grammar_cache_hits_total") >= 1.0);
    assert!(s.metric("nemo_grammar_cache_misses_total") >= 1.0);
}

#[test]
fn vllm_guided_fields_constrain_completions() {
    let s = TestServer::start(Options::default());
    let completion = |extra: Value| {
        let mut body = json!({"model": "test-model", "prompt": "Answer:", "max_tokens": 40, "temperature": 1.0, "seed": 9, "n": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = post_json(s.addr, "/v1/completions", &body);
        assert_eq!(r.status, 200, "{extra}: {}", r.text());
        let v = r.json();
        v["choices"].as_array().unwrap().iter().map(|c| (c["text"].as_str().unwrap().to_string(), c["finish_reason"].clone())).collect::<Vec<_>>()
    };
    let choices = ["yes", "no", "maybe later"];
    for (text, finish) in completion(json!({"guided_choice": choices})) {
        assert!(choices.contains(&text.as_str()) && finish == "stop", "{text:?} {finish}");
    }
    let full = fancy_regex::Regex::new(r"^[A-Z]{3}-[0-9]{2,4}$").unwrap();
    for (text, finish) in completion(json!({"guided_regex": "[A-Z]{3}-[0-9]{2,4}"})) {
        assert!(full.is_match(&text).unwrap() && finish == "stop", "{text:?} {finish}");
    }
    for (text, _) in completion(json!({"structured_outputs": {"json": schema()}, "max_tokens": 200})) {
        follows_schema(&text);
    }
    let lark = "start: \"go \" DIR\nDIR: \"north\" | \"south\"\n";
    for (text, finish) in completion(json!({"guided_grammar": lark})) {
        assert!(["go north", "go south"].contains(&text.as_str()) && finish == "stop", "{text:?}");
    }
    // json_object: whatever comes must open an object (the random model rarely closes one).
    for (text, _) in completion(json!({"response_format": {"type": "json_object"}})) {
        assert!(text.trim_start().starts_with('{'), "{text:?}");
    }
}

#[test]
fn bad_constraints_are_refused_naming_the_field() {
    let s = TestServer::start(Options::default());
    let cases = [
        (json!({"response_format": {"type": "xml"}}), "response_format"),
        (json!({"response_format": {"type": "json_schema"}}), "response_format"),
        (json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}}), "response_format"),
        (json!({"guided_json": "{not json"}), "guided_json"),
        (json!({"guided_json": 7}), "guided_json"),
        (json!({"guided_regex": "(unclosed"}), "guided_regex"),
        (json!({"guided_regex": ""}), "guided_regex"),
        (json!({"guided_choice": []}), "guided_choice"),
        (json!({"guided_choice": ["a", 3]}), "guided_choice"),
        (json!({"guided_grammar": "start: nowhere"}), "guided_grammar"),
        (json!({"guided_regex": "a+", "guided_choice": ["a"]}), "guided_choice"),
        (json!({"structured_outputs": {"regex": "a", "choice": ["b"]}}), "structured_outputs"),
        (json!({"structured_outputs": {"xml": "<a/>"}}), "structured_outputs"),
        (json!({"structured_outputs": "json"}), "structured_outputs"),
    ];
    for (extra, field) in cases {
        let r = post_json(s.addr, "/v1/chat/completions", &chat_body("Hi", extra.clone()));
        assert_eq!(r.status, 400, "{extra}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], field, "{extra}: {}", r.text());
    }
    // The server still serves.
    let r = post_json(s.addr, "/v1/chat/completions", &chat_body("Hi", json!({"max_tokens": 2, "response_format": {"type": "text"}})));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A forced tool call is generated under its grammar: the scripted model writes a malformed call
/// (a wrong key, a number for a string, no closing bracket), and what comes back is a call whose
/// arguments follow the tool's schema, named or `required`.
#[test]
fn a_forced_tool_call_follows_the_tool_schema_even_when_the_model_does_not() {
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"enum": ["Oslo", "Paris"]}}, "required": ["city"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
            "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": false}}}
    ]);
    let malformed = tekken().encode(r#" {"town": 5, "#).unwrap();
    let s = TestServer::start(Options { script: Some(malformed.repeat(4)), ..Options::default() });
    // `parallel_tool_calls: false` bounds `required` to one call (this model would go on).
    for (choice, names) in [
        (json!({"type": "function", "function": {"name": "get_time"}}), &["get_time"][..]),
        (json!("required"), &["get_weather", "get_time"][..]),
    ] {
        let body = chat_body("Weather?", json!({"tools": tools, "tool_choice": choice, "max_tokens": 60, "parallel_tool_calls": false}));
        let v = post_json(s.addr, "/v1/chat/completions", &body).json();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{choice}: {v}");
        let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(calls.len(), 1, "{v}");
        for call in calls {
            let name = call["function"]["name"].as_str().unwrap();
            assert!(names.contains(&name), "{choice}: {call}");
            let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            let (key, allowed) = if name == "get_time" { ("zone", ["UTC", "CET"]) } else { ("city", ["Oslo", "Paris"]) };
            assert_eq!(args.as_object().unwrap().len(), 1, "{call}");
            assert!(allowed.contains(&args[key].as_str().unwrap()), "{call}");
        }
    }
    // A constraint of the client's own cannot be combined with a forced call.
    let body = chat_body("Hi", json!({"tools": tools, "tool_choice": "required", "guided_regex": "a"}));
    let r = post_json(s.addr, "/v1/chat/completions", &body);
    assert_eq!((r.status, r.json()["error"]["param"].clone()), (400, json!("guided_regex")), "{}", r.text());
}

/// Tool schemas as pydantic writes them (`$defs` with `$ref`s, `uniqueItems`) can be forced,
/// named or `required` (each tool's `$defs` are rebased into the list's schema), and the call
/// follows them.
#[test]
fn forced_calls_take_tool_schemas_with_refs_and_keywords_llguidance_does_not_check() {
    let tools = json!([{"type": "function", "function": {"name": "book", "parameters": {
        "$defs": {"Place": {"type": "object", "properties": {"city": {"enum": ["Oslo", "Rome"]}}, "required": ["city"], "additionalProperties": false}},
        "type": "object",
        "properties": {"to": {"$ref": "#/$defs/Place"}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true, "maxItems": 2}},
        "required": ["to", "tags"], "additionalProperties": false}}}]);
    let s = TestServer::start(Options { script: Some(tekken().encode("xyz").unwrap().repeat(30)), ..Options::default() });
    for choice in [json!("required"), json!({"type": "function", "function": {"name": "book"}})] {
        let body = chat_body("Book.", json!({"tools": tools, "tool_choice": choice, "max_tokens": 80, "parallel_tool_calls": false}));
        let r = post_json(s.addr, "/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{choice}: {}", r.text());
        let v = r.json();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{choice}: {v}");
        let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "book");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert!(["Oslo", "Rome"].contains(&args["to"]["city"].as_str().unwrap_or("")), "{choice}: {args}");
        assert!(args["tags"].as_array().is_some_and(|t| t.len() <= 2), "{choice}: {args}");
    }
}

#[test]
fn a_constraint_cannot_continue_a_final_assistant_message() {
    let s = TestServer::start(Options::default());
    let body = json!({"model": "test-model", "continue_final_message": true, "guided_regex": "[a-z]+",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]});
    let r = post_json(s.addr, "/v1/chat/completions", &body);
    assert_eq!((r.status, r.json()["error"]["param"].clone()), (400, json!("guided_regex")), "{}", r.text());
}
