//! An OpenAI-style chat request, as `nemo tokenize --chat` and the server read it.
//!
//! The shapes follow mistral_common's `ChatCompletionRequest.from_openai`: `messages` (roles
//! system / user / assistant / tool, `developer` read as system), optional `tools`, and
//! `continue_final_message`. Other OpenAI fields (`model`, `temperature`, ...) are ignored here.
//! Values that end up inside rendered JSON (tool `parameters`, call `arguments`) are kept as
//! [`PyJson`] so ints, floats and key order survive exactly as Python would read them.
//!
//! Deserialise with serde_json's text readers (`from_str`, `from_slice`, `from_reader`, or
//! [`ChatRequest::from_json`]): `PyJson` captures the exact source text through `RawValue`,
//! which `serde_json::from_value` cannot provide (a `Value` has already turned big ints into
//! floats and reordered keys).

use serde::{Deserialize, Serialize};

use super::json_py::PyJson;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// The last message is an assistant prefix to continue: rendered without `</s>`.
    #[serde(default)]
    pub continue_final_message: bool,
}

impl ChatRequest {
    /// Reads an OpenAI-style request from JSON text.
    pub fn from_json(text: &str) -> Result<ChatRequest, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
    /// Kept so that the template reports it as mistral_common does.
    Unknown(String),
}

impl Role {
    pub fn as_str(&self) -> &str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Unknown(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => Role::Unknown(s),
        })
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool messages: the id of the call answered (9 letters or digits for Nemo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Tool messages: the function name (validated, not rendered by v3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(tool_call_id.into()), ..Self::text(Role::Tool, content) }
    }
    pub fn assistant_tool_calls(calls: Vec<ToolCall>) -> Self {
        ChatMessage { role: Role::Assistant, content: None, tool_calls: Some(calls), tool_call_id: None, name: None }
    }
    fn text(role: Role, text: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: Some(Content::Text(text.into())),
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }
}

/// A string, or OpenAI content parts (`[{"type": "text", "text": ...}, ...]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One content part. Only `text` parts can be rendered for Nemo; others (`image_url`,
/// `input_audio`, ...) are refused by the template, as mistral_common refuses them for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCall {
    /// 9 letters or digits for Nemo (mistral_common refuses others, and a missing id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON string (OpenAI's form) or an object; absent or null means `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<PyJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    /// Must be "function" (the default).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema (draft 7) object; absent or null means `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<PyJson>,
    /// Accepted and ignored: mistral_common drops it from the rendered tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}
