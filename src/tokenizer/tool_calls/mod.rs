//! Tool calls out of generated ids: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
//!
//! The `[TOOL_CALLS]` marker is a special id (9 for Nemo), so detection works on ids, never on
//! decoded text (vLLM #16190 lost calls by stripping the special before parsing).
//!
//! Whole outputs ([`parse_tool_calls`]) follow mistral_common's
//! `_split_content_and_tool_calls` + `_decode_tool_calls_v2_up_to_v7`: content is what comes
//! before the first marker; each marker starts a segment that must decode (special ids
//! dropped) to a JSON list of objects with a `name` and an object `arguments`. Where
//! mistral_common raises, we do not: the output is returned as text, nothing lost, with
//! [`AssistantOutput::malformed`] saying why (decision recorded in docs/tokenizer.md).
//!
//! Ids: a call keeps the model's own `id` when it is 9 letters/digits (as mistral_common keeps
//! it); otherwise it gets a fresh 9-character alphanumeric id, the form Nemo's template needs
//! when the call is sent back.
//!
//! Streaming ([`ToolCallStreamParser`]) reports content as it comes, then each call as soon as
//! its name is known, its arguments text as it arrives, and the parsed call when its object
//! closes; `finish` gives the authoritative whole-output result with the same ids.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

mod scan;

use scan::{ListScanner, ScanEvent};

use super::json_py::PyJson;
use super::stream::StreamDecoder;
use super::{SpecialTokenPolicy, Tokenizer, TokenizerError};

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedToolCall {
    pub id: String,
    pub name: String,
    /// Always a JSON object.
    pub arguments: PyJson,
}

impl ParsedToolCall {
    /// The arguments as the JSON string OpenAI's API carries (Python-style separators).
    pub fn arguments_json(&self) -> String {
        self.arguments.dumps()
    }
}

/// A generated assistant message, split into text and tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssistantOutput {
    /// Text before the first `[TOOL_CALLS]`; when the calls are malformed, followed by their
    /// raw text so nothing the model wrote is lost.
    pub content: String,
    pub tool_calls: Vec<ParsedToolCall>,
    /// Set when the output had `[TOOL_CALLS]` but not a valid call list: why it was refused.
    pub malformed: Option<String>,
}

static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh tool call id: 9 characters from [a-zA-Z0-9], random per process and call.
pub fn new_tool_call_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(ID_COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    let mut x = h.finish();
    (0..9)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn is_call_id(s: &str) -> bool {
    s.len() == 9 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One call object of the list, checked as mistral_common checks it.
fn call_from_value(v: &PyJson, preset_id: Option<&String>) -> Result<ParsedToolCall, String> {
    let PyJson::Object(_) = v else { return Err("expected a dict with a name".into()) };
    let name = match v.get("name") {
        Some(PyJson::Str(s)) => s.clone(),
        Some(_) => return Err("the call's name is not a string".into()),
        None => return Err("expected a dict with a name".into()),
    };
    let arguments = match v.get("arguments") {
        Some(a @ PyJson::Object(_)) => a.clone(),
        _ => return Err("invalid tool call arguments: expected a dict".into()),
    };
    let id = match (v.get("id"), preset_id) {
        (Some(PyJson::Str(s)), _) if is_call_id(s) => s.clone(),
        (_, Some(p)) => p.clone(),
        _ => new_tool_call_id(),
    };
    Ok(ParsedToolCall { id, name, arguments })
}

/// Parses one segment's text (after its marker) into calls.
fn parse_segment(text: &str, preset: &[String], first_index: usize) -> Result<Vec<ParsedToolCall>, String> {
    let v = PyJson::parse(text).map_err(|e| format!("expected a JSON list of tool calls: {e}"))?;
    let PyJson::Array(items) = v else { return Err("expected a list of tool calls".into()) };
    items.iter().enumerate().map(|(k, item)| call_from_value(item, preset.get(first_index + k))).collect()
}

/// Splits generated ids into content and tool calls (see the module doc).
pub fn parse_tool_calls(tok: &Tokenizer, ids: &[u32]) -> Result<AssistantOutput, TokenizerError> {
    parse_with_ids(tok, ids, &[])
}

fn parse_with_ids(tok: &Tokenizer, ids: &[u32], preset: &[String]) -> Result<AssistantOutput, TokenizerError> {
    let marker = tok.special_id("[TOOL_CALLS]");
    let first = marker.and_then(|m| ids.iter().position(|&i| i == m));
    let Some(first) = first else {
        return Ok(AssistantOutput { content: tok.decode(ids, SpecialTokenPolicy::Ignore)?, ..Default::default() });
    };
    let marker = marker.expect("found above");
    let content = tok.decode(&ids[..first], SpecialTokenPolicy::Ignore)?;
    let mut segments: Vec<&[u32]> = Vec::new();
    let mut start = first;
    for (k, &id) in ids.iter().enumerate().skip(first + 1) {
        if id == marker {
            segments.push(&ids[start + 1..k]);
            start = k;
        }
    }
    segments.push(&ids[start + 1..]);
    let mut calls = Vec::new();
    let mut raw = String::new();
    let mut error = None;
    for seg in segments {
        let text = tok.decode(seg, SpecialTokenPolicy::Ignore)?;
        if error.is_none() {
            match parse_segment(&text, preset, calls.len()) {
                Ok(c) => calls.extend(c),
                Err(e) => error = Some(e),
            }
        }
        raw.push_str(&text);
    }
    Ok(match error {
        None => AssistantOutput { content, tool_calls: calls, malformed: None },
        Some(e) => AssistantOutput { content: content + &raw, tool_calls: vec![], malformed: Some(e) },
    })
}

/// What [`ToolCallStreamParser::push`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolStreamEvent {
    /// Assistant text (before any `[TOOL_CALLS]`).
    Content(String),
    /// A call's name is known; `id` is the id it will carry.
    CallStarted { index: usize, id: String, name: String },
    /// More of the call's arguments JSON text, as the model writes it.
    ArgumentsDelta { index: usize, delta: String },
    /// The call's object closed and parsed.
    CallCompleted { index: usize, call: ParsedToolCall },
}

/// Incremental form of [`parse_tool_calls`] for streamed generation.
#[derive(Debug)]
pub struct ToolCallStreamParser<'t> {
    tok: &'t Tokenizer,
    marker: Option<u32>,
    ids: Vec<u32>,
    content: StreamDecoder<'t>,
    calls_text: StreamDecoder<'t>,
    in_calls: bool,
    scan: ListScanner,
    /// Ids announced so far, by call index.
    announced: Vec<String>,
}

impl<'t> ToolCallStreamParser<'t> {
    pub fn new(tok: &'t Tokenizer) -> Self {
        ToolCallStreamParser {
            tok,
            marker: tok.special_id("[TOOL_CALLS]"),
            ids: Vec::new(),
            content: StreamDecoder::new(tok, SpecialTokenPolicy::Ignore),
            calls_text: StreamDecoder::new(tok, SpecialTokenPolicy::Ignore),
            in_calls: false,
            scan: ListScanner::default(),
            announced: Vec::new(),
        }
    }

    /// True once a `[TOOL_CALLS]` id has been seen.
    pub fn in_tool_calls(&self) -> bool {
        self.in_calls
    }

    pub fn push(&mut self, id: u32) -> Result<Vec<ToolStreamEvent>, TokenizerError> {
        self.ids.push(id);
        let mut events = Vec::new();
        if Some(id) == self.marker {
            if !self.in_calls {
                let tail = self.content.finish();
                if !tail.is_empty() {
                    events.push(ToolStreamEvent::Content(tail));
                }
                self.in_calls = true;
            } else {
                let tail = self.calls_text.finish();
                self.feed_calls(&tail, &mut events);
                self.scan.new_segment();
            }
            return Ok(events);
        }
        if !self.in_calls {
            let text = self.content.push(id)?;
            if !text.is_empty() {
                events.push(ToolStreamEvent::Content(text));
            }
        } else {
            let text = self.calls_text.push(id)?;
            self.feed_calls(&text, &mut events);
        }
        Ok(events)
    }

    fn feed_calls(&mut self, text: &str, events: &mut Vec<ToolStreamEvent>) {
        for ev in self.scan.feed(text) {
            match ev {
                ScanEvent::Name { index, name } => {
                    let id = new_tool_call_id();
                    self.announced.push(id.clone());
                    debug_assert_eq!(self.announced.len(), index + 1);
                    events.push(ToolStreamEvent::CallStarted { index, id, name });
                }
                ScanEvent::Args { index, delta } => events.push(ToolStreamEvent::ArgumentsDelta { index, delta }),
                ScanEvent::ObjectClosed { index, text } => {
                    if let Ok(v) = PyJson::parse(&text) {
                        if let Ok(mut call) = call_from_value(&v, self.announced.get(index)) {
                            if let Some(id) = self.announced.get(index) {
                                call.id = id.clone();
                            }
                            events.push(ToolStreamEvent::CallCompleted { index, call });
                        }
                    }
                }
            }
        }
    }

    /// End of generation: the whole output parsed, calls carrying the ids announced while
    /// streaming.
    pub fn finish(&mut self) -> Result<AssistantOutput, TokenizerError> {
        let mut out = parse_with_ids(self.tok, &self.ids, &self.announced)?;
        for (call, id) in out.tool_calls.iter_mut().zip(&self.announced) {
            call.id = id.clone();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nine_alphanumerics_and_differ() {
        let a = new_tool_call_id();
        let b = new_tool_call_id();
        assert!(is_call_id(&a) && is_call_id(&b), "{a} {b}");
        assert_ne!(a, b);
    }
}
