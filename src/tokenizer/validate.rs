//! Reading and checking a [`ChatRequest`] as mistral_common does before it renders anything:
//! `ChatCompletionRequest.from_openai` (shapes, defaults), then `MistralRequestValidatorV3` in
//! its `test` mode, the mode `MistralTokenizer.from_file` (and so `mistral-chat`) uses. Every
//! refusal is a [`ChatError`] naming the exception mistral_common raises.
//!
//! The result is a flat list of [`Msg`] with defaults applied, which the template normalises
//! (merging runs, collecting system prompts) and renders.

use super::error::ChatError;
use super::json_py::PyJson;
use super::json_schema::check_draft7_schema;
use super::request::{ChatRequest, Content, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum R {
    System,
    User,
    Assistant,
    Tool,
}

impl R {
    pub fn name(self) -> &'static str {
        match self {
            R::System => "system",
            R::User => "user",
            R::Assistant => "assistant",
            R::Tool => "tool",
        }
    }
}

/// A content chunk: text, or another kind (image, audio, thinking) named by its type.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Text(String),
    Other(String),
}

/// Message content after `from_openai`: absent, a string, or chunks.
#[derive(Debug, Clone, PartialEq)]
pub enum MsgContent {
    None,
    Text(String),
    Chunks(Vec<Chunk>),
}

impl MsgContent {
    /// Python's `bool(content)`.
    pub fn is_truthy(&self) -> bool {
        match self {
            MsgContent::None => false,
            MsgContent::Text(s) => !s.is_empty(),
            MsgContent::Chunks(c) => !c.is_empty(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    /// "null" when the request gave none (mistral_common's default).
    pub id: String,
    pub name: String,
    /// The arguments as they will be rendered: the parsed JSON of a string argument (or the
    /// string itself when it is not JSON), an object given as such, `{}` for none or "".
    pub arguments: PyJson,
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub role: R,
    pub content: MsgContent,
    pub tool_calls: Option<Vec<Call>>,
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
    pub prefix: bool,
}

#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub parameters: PyJson,
}

/// `from_openai` + validation. Returns the messages and the tools (None when not given).
pub fn read_and_validate(req: &ChatRequest) -> Result<(Vec<Msg>, Option<Vec<ToolDef>>), ChatError> {
    let mut msgs = req.messages.iter().map(convert_message).collect::<Result<Vec<_>, _>>()?;
    if req.continue_final_message {
        match msgs.last_mut() {
            Some(last) if last.role == R::Assistant => last.prefix = true,
            _ => {
                return Err(ChatError::MessageStructure(
                    "continue_final_message=True requires final message to be an assistant.".into(),
                ))
            }
        }
    }
    let tools =
        req.tools.as_ref().map(|tools| tools.iter().map(convert_tool).collect::<Result<Vec<_>, _>>()).transpose()?;
    validate_structure(&msgs)?;
    for (i, m) in msgs.iter().enumerate() {
        validate_content(m, i + 1 == msgs.len())?;
    }
    for t in tools.iter().flatten() {
        check_draft7_schema(&t.parameters).map_err(|e| ChatError::ToolSchema(format!("Invalid tool schema: {e}")))?;
        if !is_function_name(&t.name) {
            return Err(ChatError::Tool(bad_name_message(&t.name)));
        }
    }
    Ok((msgs, tools))
}

fn convert_message(m: &super::request::ChatMessage) -> Result<Msg, ChatError> {
    let role = match &m.role {
        Role::System => R::System,
        Role::User => R::User,
        Role::Assistant => R::Assistant,
        Role::Tool => R::Tool,
        Role::Unknown(s) => return Err(ChatError::UnknownRole(s.clone())),
    };
    let content = match &m.content {
        None if role == R::Assistant => MsgContent::None,
        None => return Err(ChatError::MissingField("content")),
        Some(Content::Text(s)) => MsgContent::Text(s.clone()),
        Some(Content::Parts(parts)) => {
            let mut chunks = Vec::with_capacity(parts.len());
            for p in parts {
                let kind = p
                    .kind
                    .as_deref()
                    .ok_or_else(|| ChatError::ContentPart("Content chunk must have a type field.".into()))?;
                chunks.push(match kind {
                    "text" => Chunk::Text(
                        p.text.clone().ok_or_else(|| ChatError::Validation("text chunk without \"text\"".into()))?,
                    ),
                    "image_url" | "image" | "input_audio" | "audio_url" | "thinking" => Chunk::Other(kind.to_string()),
                    other => return Err(ChatError::ContentPart(format!("{other:?} is not a valid ChunkTypes"))),
                });
            }
            // pydantic's per-role allow-list (`_allowed_content_chunks`).
            let allowed: &[&str] = match role {
                R::User | R::Tool => &["image_url", "image", "input_audio", "audio_url"],
                R::System => &["input_audio", "thinking"],
                R::Assistant => &["thinking"],
            };
            if let Some(Chunk::Other(k)) =
                chunks.iter().find(|c| matches!(c, Chunk::Other(k) if !allowed.contains(&k.as_str())))
            {
                return Err(ChatError::Validation(format!("{k} chunk cannot be used in {} message", role.name())));
            }
            MsgContent::Chunks(chunks)
        }
    };
    let tool_calls = match (&m.tool_calls, role) {
        (Some(calls), R::Assistant) => Some(calls.iter().map(convert_call).collect::<Result<Vec<_>, _>>()?),
        _ => None,
    };
    let tool_call_id = match role {
        R::Tool => Some(m.tool_call_id.clone().ok_or(ChatError::MissingField("tool_call_id"))?),
        _ => None,
    };
    let name = if role == R::Tool { m.name.clone() } else { None };
    Ok(Msg { role, content, tool_calls, tool_call_id, name, prefix: false })
}

fn convert_call(c: &super::request::ToolCall) -> Result<Call, ChatError> {
    if let Some(kind) = &c.kind {
        if kind != "function" {
            return Err(ChatError::Validation(format!("tool call type {kind:?} is not \"function\"")));
        }
    }
    // FunctionCall.arguments: a dict is dumped to a string, None becomes "{}", a string stays;
    // the normaliser then re-parses it (`_normalize_json_content`, `_parse_json_content`).
    let arguments = match &c.function.arguments {
        None | Some(PyJson::Null) => PyJson::Object(vec![]),
        Some(PyJson::Str(s)) if s.is_empty() => PyJson::Object(vec![]),
        Some(PyJson::Str(s)) => PyJson::parse_or_string(s),
        Some(obj @ PyJson::Object(_)) => obj.clone(),
        Some(other) => {
            return Err(ChatError::Validation(format!(
                "tool call arguments must be a string or an object, got {}",
                other.dumps()
            )))
        }
    };
    Ok(Call { id: c.id.clone().unwrap_or_else(|| "null".into()), name: c.function.name.clone(), arguments })
}

fn convert_tool(t: &super::request::Tool) -> Result<ToolDef, ChatError> {
    if let Some(kind) = &t.kind {
        if kind != "function" {
            return Err(ChatError::Validation(format!("tool type {kind:?} is not \"function\"")));
        }
    }
    let parameters = match &t.function.parameters {
        None | Some(PyJson::Null) => PyJson::Object(vec![]),
        Some(obj @ PyJson::Object(_)) => obj.clone(),
        Some(other) => {
            return Err(ChatError::Validation(format!("tool parameters must be an object, got {}", other.dumps())))
        }
    };
    Ok(ToolDef {
        name: t.function.name.clone(),
        description: t.function.description.clone().unwrap_or_default(),
        parameters,
    })
}

/// Python's `re.match(r"^...$", s)`: `$` also matches before one final newline.
fn full_match(s: &str, ok_char: impl Fn(char) -> bool, min: usize, max: usize) -> bool {
    let body = s.strip_suffix('\n').unwrap_or(s);
    let n = body.chars().count();
    (min..=max).contains(&n) && body.chars().all(ok_char)
}

fn is_function_name(s: &str) -> bool {
    full_match(s, |c| c.is_ascii_alphanumeric() || c == '_' || c == '-', 1, 64)
}

fn is_tool_call_id(s: &str) -> bool {
    full_match(s, |c| c.is_ascii_alphanumeric(), 9, 9)
}

fn bad_name_message(name: &str) -> String {
    format!("Function name was {name} but must be a-z, A-Z, 0-9, or contain underscores and dashes, with a maximum length of 64.")
}

fn validate_structure(msgs: &[Msg]) -> Result<(), ChatError> {
    let structure = |s: String| Err(ChatError::MessageStructure(s));
    if msgs.is_empty() {
        return structure("Conversation must have at least one message".into());
    }
    if msgs.len() == 1 && !matches!(msgs[0].role, R::User | R::System) {
        return structure("Conversation must start with a user message or system message".into());
    }
    if msgs.len() > 1 {
        let last = &msgs[msgs.len() - 1];
        if last.role == R::Assistant && !last.prefix {
            return structure(
                "Expected last role User or Tool (or Assistant with prefix) for serving but got assistant".into(),
            );
        }
    }
    for pair in msgs.windows(2) {
        let (prev, cur) = (pair[0].role, pair[1].role);
        let ok = match prev {
            R::System => matches!(cur, R::User | R::Assistant | R::System),
            R::User => matches!(cur, R::Assistant | R::System | R::User),
            R::Assistant => matches!(cur, R::Assistant | R::User | R::Tool),
            R::Tool => matches!(cur, R::Assistant | R::Tool | R::User),
        };
        if !ok {
            return structure(format!("Unexpected role '{}' after role '{}'", cur.name(), prev.name()));
        }
    }
    // Each assistant turn's calls are answered before the next assistant turn (test mode does
    // not require the last calls to be answered). The first message is skipped, as upstream.
    let mut expected: i64 = 0;
    for m in &msgs[1..] {
        match m.role {
            R::Tool => expected -= 1,
            R::Assistant => {
                if expected != 0 {
                    return structure("Not the same number of function calls and responses".into());
                }
                if let Some(calls) = &m.tool_calls {
                    expected = calls.len() as i64;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn non_text_chunk(c: &MsgContent, allowed: &[&str]) -> Option<String> {
    match c {
        MsgContent::Chunks(chunks) => chunks.iter().find_map(|c| match c {
            Chunk::Other(k) if !allowed.contains(&k.as_str()) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    }
}

fn validate_content(m: &Msg, is_last: bool) -> Result<(), ChatError> {
    match m.role {
        R::User => {
            if let Some(k) = non_text_chunk(&m.content, &["image", "image_url"]) {
                return Err(ChatError::UserMessage(format!("Unexpected content chunk types in user message: [{k}]")));
            }
        }
        R::Assistant => {
            if let Some(k) = non_text_chunk(&m.content, &[]) {
                return Err(ChatError::AssistantMessage(format!(
                    "Unexpected content chunk types in assistant message: [{k}]"
                )));
            }
            let has_calls = m.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
            if m.content.is_truthy() == has_calls {
                return Err(ChatError::AssistantMessage(
                    "Assistant message must have either content or tool_calls, but not both.".into(),
                ));
            }
            for call in m.tool_calls.iter().flatten() {
                if call.id == "null" {
                    return Err(ChatError::FunctionCall(
                        "Tool call id 'null' is only allowed for the last assistant message in finetuning mode.".into(),
                    ));
                }
                if !is_tool_call_id(&call.id) {
                    return Err(ChatError::FunctionCall(format!(
                        "Tool call id was {} but must be a-z, A-Z, 0-9, with a length of 9.",
                        call.id
                    )));
                }
                if !is_function_name(&call.name) {
                    return Err(ChatError::FunctionCall(bad_name_message(&call.name)));
                }
            }
            if m.prefix && !is_last {
                return Err(ChatError::AssistantMessage(
                    "Assistant message with prefix True must be last message".into(),
                ));
            }
        }
        R::Tool => {
            if let Some(k) = non_text_chunk(&m.content, &[]) {
                return Err(ChatError::ToolMessage(format!("Unexpected content chunk types in tool message: [{k}]")));
            }
            if let Some(name) = &m.name {
                if !is_function_name(name) {
                    return Err(ChatError::ToolMessage(bad_name_message(name)));
                }
            }
            let id = m
                .tool_call_id
                .as_deref()
                .ok_or_else(|| ChatError::Request("Tool call id has to be defined.".into()))?;
            if !is_tool_call_id(id) {
                return Err(ChatError::ToolMessage(format!(
                    "Tool call id was {id} but must be a-z, A-Z, 0-9, with a length of 9."
                )));
            }
        }
        R::System => {
            if let Some(k) = non_text_chunk(&m.content, &[]) {
                return Err(ChatError::SystemPrompt(format!(
                    "Unexpected content chunk types in system message: [{k}]"
                )));
            }
        }
    }
    Ok(())
}
