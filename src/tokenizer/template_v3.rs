//! Nemo's chat template: mistral_common's `InstructRequestNormalizer` + `InstructTokenizerV3`,
//! written natively (no Jinja) and checked token for token against it (tests/fixtures/tokenizer).
//!
//! Rendering, after [`super::validate`]:
//! 1. System prompt: the text of every non-empty system message, joined with "\n\n"; system
//!    messages are otherwise dropped from the conversation.
//! 2. Runs of consecutive messages with the same role are merged (a system message between two
//!    user messages breaks the run: they stay two `[INST]` blocks). Texts join with "\n\n".
//!    Tool messages are never merged. If the first remaining message is not a user message, an
//!    empty user message is put first.
//! 3. `<s>`, then per message:
//!    - user: `[INST]` text `[/INST]`; the last user message gets `system_prompt + "\n\n"`
//!      before its text and, when tools are given (non-empty), `[AVAILABLE_TOOLS]` + tools
//!      JSON + `[/AVAILABLE_TOOLS]` before its `[INST]`.
//!    - assistant: its text with trailing spaces (only U+0020) removed, or `[TOOL_CALLS]` + JSON
//!      list of `{"name", "arguments", "id"}`; then `</s>` unless it is the prefix being
//!      continued (`continue_final_message`).
//!    - tool: `[TOOL_RESULTS]` + `{"content": ..., "call_id": ...}` + `[/TOOL_RESULTS]`, the
//!      content parsed as JSON when it is JSON ("" becomes `{}`).
//!
//! All JSON is Python's `json.dumps(..., ensure_ascii=False)` ([`super::json_py`]).

use super::error::ChatError;
use super::json_py::PyJson;
use super::request::ChatRequest;
use super::validate::{read_and_validate, Call, Chunk, Msg, MsgContent, ToolDef, R};
use super::Tokenizer;

const JOIN: &str = "\n\n";

/// A merged message, ready to render.
#[derive(Debug)]
enum Turn {
    User { text: String, has_non_text: bool },
    Assistant { text: String, calls: Vec<Call>, prefix: bool },
    Tool { content: PyJson, call_id: String },
}

/// Renders a chat request to token ids exactly as mistral_common 1.13.1 does for Nemo
/// (`MistralTokenizer.from_file(tekken).encode_chat_completion(request).tokens`).
pub fn encode_chat(tok: &Tokenizer, req: &ChatRequest) -> Result<Vec<u32>, ChatError> {
    if let Some(v) = tok.tekken_version() {
        if v != "v3" {
            return Err(ChatError::UnsupportedVersion(v.to_string()));
        }
    }
    let (msgs, tools) = read_and_validate(req)?;
    let system_prompt = collect_system_prompt(&msgs);
    let turns = merge_turns(&msgs)?;
    render(tok, &turns, system_prompt.as_deref(), tools.as_deref())
}

/// mistral_common's `_aggregate_content_chunks_impl` with both separators "\n\n": the text of
/// several contents joined; the flag says a non-text chunk was present.
fn aggregate(contents: &[&MsgContent]) -> (String, bool) {
    let mut parts: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut has_non_text = false;
    for content in contents {
        match content {
            MsgContent::None => {}
            MsgContent::Text(s) if s.is_empty() => {}
            MsgContent::Text(s) => {
                if !parts.is_empty() {
                    parts.push(JOIN.to_string());
                }
                parts.push(s.clone());
            }
            MsgContent::Chunks(chunks) => {
                for c in chunks {
                    match c {
                        Chunk::Text(t) if t.is_empty() => {}
                        Chunk::Text(t) => {
                            if !parts.is_empty() {
                                parts.push(JOIN.to_string());
                            }
                            parts.push(t.clone());
                        }
                        Chunk::Other(_) => {
                            has_non_text = true;
                            text.push_str(&parts.concat());
                            parts.clear();
                        }
                    }
                }
            }
        }
    }
    text.push_str(&parts.concat());
    (text, has_non_text)
}

fn collect_system_prompt(msgs: &[Msg]) -> Option<String> {
    let prompts: Vec<String> = msgs
        .iter()
        .filter(|m| m.role == R::System && m.content.is_truthy())
        .map(|m| aggregate(&[&m.content]).0)
        .collect();
    if prompts.is_empty() {
        None
    } else {
        Some(prompts.join(JOIN))
    }
}

fn merge_turns(msgs: &[Msg]) -> Result<Vec<Turn>, ChatError> {
    let mut turns = Vec::new();
    for run in msgs.chunk_by(|a, b| a.role == b.role) {
        match run[0].role {
            R::System => {}
            R::User => {
                let contents: Vec<&MsgContent> = run.iter().map(|m| &m.content).collect();
                let (text, has_non_text) = aggregate(&contents);
                turns.push(Turn::User { text, has_non_text });
            }
            R::Tool => {
                for m in run {
                    let (text, _) = aggregate(&[&m.content]);
                    // `_normalize_json_content`: "" -> "{}", JSON re-dumped; then parsed again
                    // when rendered. Parsing once gives the same value.
                    let content = if text.is_empty() { PyJson::Object(vec![]) } else { PyJson::parse_or_string(&text) };
                    let call_id = m.tool_call_id.clone().unwrap_or_default();
                    turns.push(Turn::Tool { content, call_id });
                }
            }
            R::Assistant => {
                let contents: Vec<&MsgContent> = run.iter().map(|m| &m.content).collect();
                let (text, _) = aggregate(&contents);
                let mut calls = Vec::new();
                let mut prefix = false;
                for m in run {
                    let own_calls = m.tool_calls.as_deref().unwrap_or(&[]);
                    if !own_calls.is_empty() && m.content.is_truthy() {
                        return Err(ChatError::ContentAndToolCalls(
                            "Tool calls and content cannot be used together in the same message.".into(),
                        ));
                    }
                    calls.extend(own_calls.iter().cloned());
                    prefix |= m.prefix;
                }
                turns.push(Turn::Assistant { text, calls, prefix });
            }
        }
    }
    if !matches!(turns.first(), Some(Turn::User { .. })) {
        turns.insert(0, Turn::User { text: String::new(), has_non_text: false });
    }
    Ok(turns)
}

fn tools_json(tools: &[ToolDef]) -> String {
    let list = tools
        .iter()
        .map(|t| {
            let function = PyJson::Object(vec![
                ("name".into(), PyJson::Str(t.name.clone())),
                ("description".into(), PyJson::Str(t.description.clone())),
                ("parameters".into(), t.parameters.clone()),
            ]);
            PyJson::Object(vec![("type".into(), PyJson::Str("function".into())), ("function".into(), function)])
        })
        .collect();
    PyJson::Array(list).dumps()
}

fn calls_json(calls: &[Call]) -> String {
    let list = calls
        .iter()
        .map(|c| {
            let mut obj = vec![("name".into(), PyJson::Str(c.name.clone())), ("arguments".into(), c.arguments.clone())];
            if !c.id.is_empty() && c.id != "null" {
                obj.push(("id".into(), PyJson::Str(c.id.clone())));
            }
            PyJson::Object(obj)
        })
        .collect();
    PyJson::Array(list).dumps()
}

fn render(
    tok: &Tokenizer,
    turns: &[Turn],
    system_prompt: Option<&str>,
    tools: Option<&[ToolDef]>,
) -> Result<Vec<u32>, ChatError> {
    let special = |s: &str| tok.require_special(s);
    let (inst, inst_end) = (special("[INST]")?, special("[/INST]")?);
    let last_user = turns.iter().rposition(|t| matches!(t, Turn::User { .. }));
    let mut ids = vec![tok.bos_id()];
    for (i, turn) in turns.iter().enumerate() {
        match turn {
            Turn::User { text, has_non_text } => {
                if *has_non_text {
                    return Err(ChatError::Unsupported(
                        "images and audio cannot be encoded for this model (mistral_common: \
                         \"Make sure to define a image encoder at init\")"
                            .into(),
                    ));
                }
                let is_last = Some(i) == last_user;
                if is_last {
                    if let Some(tools) = tools.filter(|t| !t.is_empty()) {
                        ids.push(special("[AVAILABLE_TOOLS]")?);
                        ids.extend(tok.encode(&tools_json(tools))?);
                        ids.push(special("[/AVAILABLE_TOOLS]")?);
                    }
                }
                ids.push(inst);
                match system_prompt.filter(|s| is_last && !s.is_empty()) {
                    Some(sp) => ids.extend(tok.encode(&format!("{sp}{JOIN}{text}"))?),
                    None => ids.extend(tok.encode(text)?),
                }
                ids.push(inst_end);
            }
            Turn::Assistant { text, calls, prefix } => {
                if !calls.is_empty() && !text.is_empty() {
                    return Err(ChatError::ContentAndToolCalls(
                        "Cannot have tool calls and content defined in the same assistant message".into(),
                    ));
                }
                if !calls.is_empty() {
                    ids.push(special("[TOOL_CALLS]")?);
                    ids.extend(tok.encode(&calls_json(calls))?);
                } else if !text.is_empty() {
                    ids.extend(tok.encode(text.trim_end_matches(' '))?);
                } else {
                    return Err(ChatError::Render("Invalid assistant message: no content and no tool calls".into()));
                }
                if !prefix {
                    ids.push(tok.eos_id());
                }
            }
            Turn::Tool { content, call_id } => {
                let result = PyJson::Object(vec![
                    ("content".into(), content.clone()),
                    ("call_id".into(), PyJson::Str(call_id.clone())),
                ]);
                ids.push(special("[TOOL_RESULTS]")?);
                ids.extend(tok.encode(&result.dumps())?);
                ids.push(special("[/TOOL_RESULTS]")?);
            }
        }
    }
    Ok(ids)
}
