//! Tool calls out of generated ids: whole outputs against mistral_common's parser, streamed
//! outputs against the whole-output result, malformed outputs kept as text.

use nemo_engine::tokenizer::json_py::PyJson;
use nemo_engine::tokenizer::{parse_tool_calls, AssistantOutput, ToolCallStreamParser, ToolStreamEvent};

use crate::{fixture, ids_of, tekken};

fn is_call_id(s: &str) -> bool {
    s.len() == 9 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[test]
fn complete_outputs_match_mistral_common() {
    let tok = tekken();
    let f = fixture("tool_calls.json");
    assert_eq!(tok.special_id("[TOOL_CALLS]").map(u64::from), f["tool_calls_id"].as_u64());
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        let out = parse_tool_calls(tok, &ids).unwrap();
        match case.get("calls") {
            Some(want) => {
                assert!(out.malformed.is_none(), "{name}: {:?}", out.malformed);
                assert_eq!(out.content, case["content"].as_str().unwrap(), "{name} content");
                let want = want.as_array().unwrap();
                assert_eq!(out.tool_calls.len(), want.len(), "{name}");
                for (got, want) in out.tool_calls.iter().zip(want) {
                    assert_eq!(got.name, want["name"].as_str().unwrap(), "{name}");
                    let got_args: serde_json::Value = serde_json::from_str(&got.arguments.dumps()).unwrap();
                    assert_eq!(got_args, want["arguments"], "{name}");
                    match want["id"].as_str().unwrap() {
                        "null" => assert!(is_call_id(&got.id), "{name}: generated id {:?}", got.id),
                        id => assert_eq!(got.id, id, "{name}: the model's own id is kept"),
                    }
                }
            }
            None => {
                // mistral_common raises; we return everything as text with the reason.
                assert!(out.tool_calls.is_empty(), "{name}");
                assert!(out.malformed.is_some(), "{name}: should be flagged malformed");
                let text = case["text"].as_str().unwrap();
                assert_eq!(out.content, format!("{}{text}", case["content"].as_str().unwrap()), "{name}: nothing lost");
            }
        }
    }
}

fn stream(ids: &[u32]) -> (Vec<ToolStreamEvent>, AssistantOutput) {
    let tok = tekken();
    let mut p = ToolCallStreamParser::new(tok);
    let mut events = Vec::new();
    for &id in ids {
        events.extend(p.push(id).unwrap());
    }
    (events, p.finish().unwrap())
}

#[test]
fn streamed_outputs_report_calls_as_they_form_and_agree_with_the_whole_parse() {
    let tok = tekken();
    let f = fixture("tool_calls.json");
    for case in f["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        let whole = parse_tool_calls(tok, &ids).unwrap();
        let (events, fin) = stream(&ids);
        assert_eq!(fin.content, whole.content, "{name}");
        assert_eq!(fin.malformed.is_some(), whole.malformed.is_some(), "{name}");
        assert_eq!(fin.tool_calls.len(), whole.tool_calls.len(), "{name}");
        let content: String = events
            .iter()
            .filter_map(|e| match e {
                ToolStreamEvent::Content(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert!(whole.content.starts_with(&content), "{name}: streamed content {content:?}");
        for (k, call) in fin.tool_calls.iter().enumerate() {
            assert_eq!(call.name, whole.tool_calls[k].name, "{name}");
            assert_eq!(call.arguments, whole.tool_calls[k].arguments, "{name}");
            let started = events.iter().find_map(|e| match e {
                ToolStreamEvent::CallStarted { index, id, name } if *index == k => Some((id.clone(), name.clone())),
                _ => None,
            });
            let (id, started_name) = started.unwrap_or_else(|| panic!("{name}: no CallStarted for call {k}"));
            assert_eq!(started_name, call.name);
            assert_eq!(id, call.id, "{name}: finish() keeps the id announced while streaming");
            let args: String = events
                .iter()
                .filter_map(|e| match e {
                    ToolStreamEvent::ArgumentsDelta { index, delta } if *index == k => Some(delta.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                PyJson::parse(&args).unwrap(),
                call.arguments,
                "{name}: streamed arguments text parses to the call's arguments"
            );
            assert!(
                events.iter().any(
                    |e| matches!(e, ToolStreamEvent::CallCompleted { index, call: c } if *index == k && c == call)
                ),
                "{name}"
            );
        }
    }
}

#[test]
fn partial_output_reports_what_is_known_so_far() {
    let tok = tekken();
    let mut ids = vec![tok.special_id("[TOOL_CALLS]").unwrap()];
    ids.extend(tok.encode(r#"[{"name": "get_current_weather", "arguments": {"location": "Par"#).unwrap());
    let (events, fin) = stream(&ids);
    assert!(events
        .iter()
        .any(|e| matches!(e, ToolStreamEvent::CallStarted { index: 0, name, .. } if name == "get_current_weather")));
    let args: String = events
        .iter()
        .filter_map(|e| match e {
            ToolStreamEvent::ArgumentsDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(args, r#"{"location": "Par"#);
    assert!(!events.iter().any(|e| matches!(e, ToolStreamEvent::CallCompleted { .. })));
    // Cut off mid-call (max_tokens): flagged, text kept.
    assert!(fin.tool_calls.is_empty() && fin.malformed.is_some());
    assert!(fin.content.contains("get_current_weather"));
}

#[test]
fn garbage_after_the_marker_never_panics() {
    let tok = tekken();
    let marker = tok.special_id("[TOOL_CALLS]").unwrap();
    for text in [
        "",
        "]",
        "}}}]]]",
        "[{\"name\": 5, \"arguments\": {}}]",
        "[{\"name\": \"f\", \"arguments\": [1]}]",
        "[\"a\", 1, null]",
        "[{\"a\": {\"b\": \"\\\"}\"}}]",
        "\u{0}\u{ffff}",
    ] {
        let mut ids = tok.encode("pre ").unwrap();
        ids.push(marker);
        ids.extend(tok.encode(text).unwrap());
        ids.push(marker);
        ids.push(tok.eos_id());
        let whole = parse_tool_calls(tok, &ids).unwrap();
        let (_, fin) = stream(&ids);
        assert!(whole.malformed.is_some(), "{text:?}");
        assert_eq!(fin.content, whole.content);
        assert!(whole.content.starts_with("pre "));
    }
}
