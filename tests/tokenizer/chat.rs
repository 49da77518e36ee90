//! The v3 chat template, token for token with mistral_common's `encode_chat_completion`, and
//! the same exception class wherever mistral_common refuses a request.

use nemo_engine::tokenizer::json_py::PyJson;
use nemo_engine::tokenizer::{encode_chat, ChatRequest, SpecialTokenPolicy, Tokenizer};

use crate::{fixture, ids_of, tekken};

/// Runs every chat fixture; returns how many rendered and how many were refused.
pub fn check_chat_fixtures(tok: &Tokenizer) -> (usize, usize) {
    let f = fixture("chat.json");
    // The requests as written (key order, 1.0 vs 1, big ints): serde_json::Value would lose that.
    let text = std::fs::read_to_string(crate::fixture_path("chat.json")).unwrap();
    let exact = PyJson::parse(&text).unwrap();
    let Some(PyJson::Array(exact_cases)) = exact.get("cases") else { panic!("chat.json has no cases") };
    let mut failures = Vec::new();
    let (mut rendered, mut refused) = (0, 0);
    for (case, exact_case) in f["cases"].as_array().unwrap().iter().zip(exact_cases) {
        let name = case["name"].as_str().unwrap();
        let request_json = exact_case.get("request").unwrap().dumps();
        let parsed: Result<ChatRequest, _> = serde_json::from_str(&request_json);
        let result = match parsed {
            Ok(req) => encode_chat(tok, &req).map_err(|e| (e.oracle_class().to_string(), e.to_string())),
            Err(e) => Err(("request does not deserialize".to_string(), e.to_string())),
        };
        match (&case.get("ids"), result) {
            (Some(want), Ok(got)) => {
                let want = ids_of(want);
                if got != want {
                    let text = tok.decode(&got, SpecialTokenPolicy::Keep).unwrap();
                    failures.push(format!(
                        "{name}: ids differ\n  got  {text:?}\n  want {:?}",
                        case["text"].as_str().unwrap()
                    ));
                }
                rendered += 1;
            }
            (Some(_), Err((class, msg))) => {
                failures.push(format!("{name}: refused ({class}: {msg}), mistral_common renders it"))
            }
            (None, Ok(_)) => failures.push(format!("{name}: rendered, mistral_common refuses: {}", case["error"])),
            (None, Err((class, msg))) => {
                let want = case["error"]["type"].as_str().unwrap();
                if class != want {
                    failures.push(format!(
                        "{name}: refused as {class} ({msg}), mistral_common raises {want}: {}",
                        case["error"]["message"]
                    ));
                }
                refused += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{} chat cases differ:\n{}", failures.len(), failures.join("\n"));
    (rendered, refused)
}

#[test]
fn chat_template_matches_mistral_common() {
    let (rendered, refused) = check_chat_fixtures(tekken());
    assert!(rendered >= 50 && refused >= 20, "{rendered} rendered, {refused} refused");
}

#[test]
fn chat_request_builds_in_code_and_round_trips_through_serde() {
    use nemo_engine::tokenizer::ChatMessage;
    let tok = tekken();
    let req = ChatRequest {
        messages: vec![ChatMessage::system("Be brief."), ChatMessage::user("Hi [INST] <s>")],
        ..Default::default()
    };
    let ids = encode_chat(tok, &req).unwrap();
    assert_eq!(tok.decode(&ids, SpecialTokenPolicy::Keep).unwrap(), "<s>[INST]Be brief.\n\nHi [INST] <s>[/INST]");
    assert_eq!(ids.iter().filter(|&&i| i == tok.special_id("[INST]").unwrap()).count(), 1, "literal [INST] stays text");
    let json = serde_json::to_string(&req).unwrap();
    let back: ChatRequest = serde_json::from_str(&json).unwrap();
    assert_eq!(encode_chat(tok, &back).unwrap(), ids);
}
