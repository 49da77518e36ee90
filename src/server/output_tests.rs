use super::*;
use crate::server::test_support::tekken;

fn ids(text: &str) -> Vec<u32> {
    tekken().encode(text).unwrap()
}

/// Runs `tokens` through a processor; returns every piece (final ones included), whether a
/// stop string ended it, and the final output.
fn run(spec: &OutputSpec, tokens: &[u32]) -> (Vec<Piece>, bool, FinalOutput) {
    let mut p = OutputProcessor::new(tekken(), spec);
    let mut pieces = Vec::new();
    for &t in tokens {
        let (mut new, stopped) = p.push(t).unwrap();
        pieces.append(&mut new);
        if stopped {
            return (pieces, true, p.finish().unwrap());
        }
    }
    let fin = p.finish().unwrap();
    pieces.extend(fin.pieces.iter().cloned());
    (pieces, false, fin)
}

fn text_of(pieces: &[Piece]) -> String {
    pieces.iter().filter_map(|p| if let Piece::Text(t) = p { Some(t.as_str()) } else { None }).collect()
}

#[test]
fn text_is_decoded_and_special_tokens_are_dropped() {
    let mut tokens = ids("Hello, wörld 🙂!");
    tokens.push(tekken().eos_id());
    let (pieces, stopped, _) = run(&OutputSpec::default(), &tokens);
    assert!(!stopped);
    assert_eq!(text_of(&pieces), "Hello, wörld 🙂!");
}

#[test]
fn a_stop_string_cuts_the_text_and_reports_the_stop() {
    let spec = OutputSpec { stop_strings: vec!["wor".into()], tool_calls: false, min_tokens: 0, prefix: Vec::new() };
    let (pieces, stopped, fin) = run(&spec, &ids("Hello, world and more"));
    assert!(stopped);
    assert_eq!(text_of(&pieces), "Hello, ");
    assert_eq!(fin, FinalOutput::default());
}

/// vLLM's min_tokens: a stop string in the text of the first min_tokens tokens does not stop;
/// the same string later does.
#[test]
fn stop_strings_are_looked_for_only_after_min_tokens() {
    let tokens = ids("ab ab ab ab ab ab ab ab");
    let whole = run(&OutputSpec::default(), &tokens).0;
    let first_ab = run(&OutputSpec { stop_strings: vec!["ab".into()], tool_calls: false, min_tokens: 0, prefix: Vec::new() }, &tokens);
    assert!(first_ab.1 && text_of(&first_ab.0).is_empty(), "without min_tokens the first `ab` stops");
    let spec = OutputSpec { stop_strings: vec!["ab".into()], tool_calls: false, min_tokens: 3, prefix: Vec::new() };
    let (pieces, stopped, _) = run(&spec, &tokens);
    assert!(stopped, "an `ab` after the first 3 tokens stops");
    let text = text_of(&pieces);
    assert!(!text.is_empty() && text.len() < text_of(&whole).len(), "{text:?}");
    assert!(text_of(&whole).starts_with(&text));
    let spec = OutputSpec { stop_strings: vec!["ab".into()], tool_calls: false, min_tokens: tokens.len(), prefix: Vec::new() };
    let (pieces, stopped, _) = run(&spec, &tokens);
    assert!(!stopped);
    assert_eq!(text_of(&pieces), text_of(&whole));
}

#[test]
fn tool_calls_stream_as_pieces_and_parse_at_the_end() {
    let spec = OutputSpec { stop_strings: vec!["never".into()], tool_calls: true, min_tokens: 0, prefix: Vec::new() };
    let mut tokens = ids("Let me check.");
    tokens.push(tekken().special_id("[TOOL_CALLS]").unwrap());
    tokens.extend(ids(r#"[{"name": "get_weather", "arguments": {"city": "Paris"}}]"#));
    tokens.push(tekken().eos_id());
    let (pieces, stopped, fin) = run(&spec, &tokens);
    assert!(!stopped);
    assert_eq!(text_of(&pieces), "Let me check.");
    let started: Vec<_> = pieces.iter().filter(|p| matches!(p, Piece::ToolCallStarted { .. })).collect();
    assert_eq!(started.len(), 1);
    let Piece::ToolCallStarted { index: 0, id, name } = started[0] else { panic!("{started:?}") };
    assert_eq!(name, "get_weather");
    let args: String = pieces
        .iter()
        .filter_map(|p| if let Piece::ToolArguments { delta, .. } = p { Some(delta.as_str()) } else { None })
        .collect();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&args).unwrap(), serde_json::json!({"city": "Paris"}));
    assert_eq!(fin.tool_calls.len(), 1);
    assert_eq!((&fin.tool_calls[0].id, fin.tool_calls[0].arguments_json()), (id, r#"{"city": "Paris"}"#.to_string()));
    assert_eq!(fin.malformed, None);
}

#[test]
fn malformed_tool_calls_come_back_as_text() {
    let spec = OutputSpec { stop_strings: vec![], tool_calls: true, min_tokens: 0, prefix: Vec::new() };
    let mut tokens = ids("Hi");
    tokens.push(tekken().special_id("[TOOL_CALLS]").unwrap());
    tokens.extend(ids("not json"));
    let (pieces, _, fin) = run(&spec, &tokens);
    assert!(fin.malformed.is_some());
    assert!(fin.tool_calls.is_empty());
    assert_eq!(text_of(&pieces), "Hinot json");
}

#[test]
fn stop_strings_do_not_search_tool_call_json() {
    let spec = OutputSpec { stop_strings: vec!["Paris".into()], tool_calls: true, min_tokens: 0, prefix: Vec::new() };
    let mut tokens = vec![tekken().special_id("[TOOL_CALLS]").unwrap()];
    tokens.extend(ids(r#"[{"name": "f", "arguments": {"city": "Paris"}}]"#));
    let (_, stopped, fin) = run(&spec, &tokens);
    assert!(!stopped);
    assert_eq!(fin.tool_calls.len(), 1);
}

#[test]
fn an_unfinished_character_at_the_end_becomes_a_replacement_character() {
    let bytes_of_smile = ids("🙂");
    assert!(bytes_of_smile.len() > 1, "the emoji should span several byte tokens");
    for spec in [OutputSpec::default(), OutputSpec { stop_strings: vec![], tool_calls: true, min_tokens: 0, prefix: Vec::new() }] {
        let (pieces, _, _) = run(&spec, &bytes_of_smile[..1]);
        assert_eq!(text_of(&pieces), "\u{FFFD}", "{spec:?}");
    }
}
