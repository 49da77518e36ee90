//! Errors of the tokenizer layer: loading and coding text ([`TokenizerError`]) and rendering a
//! chat request ([`ChatError`], one variant per way mistral_common refuses a request).

use std::path::{Path, PathBuf};

use crate::error_text::shown;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}", shown(.0))]
    Format(String),
    #[error("{}: {}", path.display(), shown(.msg))]
    InFile { path: PathBuf, msg: String },
    #[error(
        "no tokenizer found at {0}: expected a tekken.json (Mistral layout) or a tokenizer.json (HF layout), \
         or a directory holding one"
    )]
    NotFound(PathBuf),
    #[error("the tokenizer has no special token {0:?}, which the chat template needs")]
    MissingSpecial(String),
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    UnknownId { id: u32, vocab_size: usize },
    #[error("special token id {0} met while decoding with SpecialTokenPolicy::Raise")]
    SpecialInDecode(u32),
    /// fancy-regex's backtracking limit, hit by a run of about a million whitespace characters;
    /// tiktoken (same engine, same limit) and so mistral_common fail on the same input.
    #[error("the pre-tokenizer regex gave up on this input ({0}); mistral_common fails on it too")]
    Regex(String),
    /// The split pattern left text between two matches, which encoding would drop.
    #[error("the tokenizer's split pattern (config.pattern) skips the text at byte {at}; the tokenizer file is broken")]
    PatternGap { at: usize },
    #[error("HF tokenizer: {}", shown(.0))]
    Hf(String),
}

impl TokenizerError {
    pub(crate) fn in_file(self, path: &Path) -> TokenizerError {
        match self {
            TokenizerError::Format(msg) => TokenizerError::InFile { path: path.to_path_buf(), msg },
            other => other,
        }
    }
}

/// Why a chat request cannot be rendered. Each variant names the mistral_common exception
/// raised for the same request ([`ChatError::oracle_class`]), which the fixtures check.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Order of roles, first/last message, tool calls without their results.
    #[error("invalid message structure: {0}")]
    MessageStructure(String),
    #[error("invalid assistant message: {0}")]
    AssistantMessage(String),
    #[error("invalid tool message: {0}")]
    ToolMessage(String),
    #[error("invalid function call: {0}")]
    FunctionCall(String),
    #[error("invalid tool: {0}")]
    Tool(String),
    #[error("invalid tool schema: {0}")]
    ToolSchema(String),
    #[error("invalid user message: {0}")]
    UserMessage(String),
    #[error("invalid system prompt: {0}")]
    SystemPrompt(String),
    /// A field of the wrong shape (mistral_common: pydantic's ValidationError).
    #[error("invalid request: {0}")]
    Validation(String),
    /// A required key is absent (mistral_common: KeyError from `from_openai`).
    #[error("invalid request: missing {0:?}")]
    MissingField(&'static str),
    #[error("invalid request: {0}")]
    Request(String),
    /// Content mistral_common accepts but cannot encode for this model (images, audio).
    #[error("unknown message role {0:?}: expected system, user, assistant, tool (or developer)")]
    UnknownRole(String),
    /// A content part without a type or of an unknown type (mistral_common: ValueError).
    #[error("invalid content part: {0}")]
    ContentPart(String),
    #[error("unsupported content: {0}")]
    Unsupported(String),
    /// Content and tool calls in one assistant turn after merging (mistral_common: ValueError).
    #[error("{0}")]
    ContentAndToolCalls(String),
    /// Passes validation but has nothing to render, e.g. an assistant turn whose only content
    /// part is empty text (mistral_common: TokenizerException).
    #[error("cannot render: {0}")]
    Render(String),
    #[error("the chat template supports tekken version v3 (Mistral Nemo); this tokenizer is {0}")]
    UnsupportedVersion(String),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

impl ChatError {
    /// The exception class mistral_common 1.13.1 raises for the same request.
    pub fn oracle_class(&self) -> &'static str {
        match self {
            ChatError::MessageStructure(_) => "InvalidMessageStructureException",
            ChatError::AssistantMessage(_) => "InvalidAssistantMessageException",
            ChatError::ToolMessage(_) => "InvalidToolMessageException",
            ChatError::FunctionCall(_) => "InvalidFunctionCallException",
            ChatError::Tool(_) => "InvalidToolException",
            ChatError::ToolSchema(_) => "InvalidToolSchemaException",
            ChatError::UserMessage(_) => "InvalidUserMessageException",
            ChatError::SystemPrompt(_) => "InvalidSystemPromptException",
            ChatError::Validation(_) => "ValidationError",
            ChatError::MissingField(_) => "KeyError",
            ChatError::Request(_) => "InvalidRequestException",
            ChatError::UnknownRole(_) => "ValueError",
            ChatError::ContentPart(_) => "ValueError",
            ChatError::Unsupported(_) => "AssertionError",
            ChatError::ContentAndToolCalls(_) => "ValueError",
            ChatError::Render(_) => "TokenizerException",
            ChatError::UnsupportedVersion(_) => "TokenizerException",
            ChatError::Tokenizer(_) => "TokenizerException",
        }
    }
}
