//! How a conversation becomes prompt ids, per model:
//! - Mistral / Nemo (a tekken.json, or an HF tokenizer.json with Mistral's `[INST]` control
//!   tokens): the native v3 renderer, `tokenizer::encode_chat`, token for token as
//!   mistral_common, tools included.
//! - GGUF models: their own Jinja `tokenizer.chat_template`, rendered as transformers'
//!   `apply_chat_template` renders it, then encoded with special-token text parsed (as
//!   transformers and llama.cpp encode a rendered template). Rendered without tools: a
//!   request that has tools or tool calls is refused rather than silently dropped.

use anyhow::{bail, Context};

use nemo_engine::gguf::{ChatTemplate, GgufErrorKind, GgufFile, GgufTokenizer};
use nemo_engine::tokenizer::{encode_chat, ChatRequest, Content, Role, Tokenizer};

use super::text::Text;

pub enum ChatFormat {
    MistralV3,
    Jinja {
        template: ChatTemplate,
        /// The GGUF tokenizer with special-token text parsed (`<|im_start|>` -> its id).
        encoder: tokenizers::Tokenizer,
    },
}

impl ChatFormat {
    /// The v3 template when `tokenizer` is a Mistral one; `None` when no template is known.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<ChatFormat> {
        let mistral = match tokenizer {
            // encode_chat itself refuses a tekken version other than v3.
            Tokenizer::Tekken(_) => true,
            Tokenizer::Hf(_) => ["[INST]", "[/INST]"]
                .iter()
                .all(|t| tokenizer.special_id(t).is_some()),
        };
        mistral.then_some(ChatFormat::MistralV3)
    }

    /// The GGUF's own template; `None` when the file has none.
    pub fn from_gguf(file: &GgufFile, tokenizer: &GgufTokenizer) -> anyhow::Result<Option<Self>> {
        match ChatTemplate::from_gguf(file) {
            Ok(template) => Ok(Some(ChatFormat::Jinja {
                template,
                encoder: tokenizer.tokenizer.clone(),
            })),
            Err(e) if matches!(e.kind, GgufErrorKind::NoChatTemplate) => Ok(None),
            Err(e) => Err(e).context("reading the chat template"),
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            ChatFormat::MistralV3 => "Mistral v3 (native, as mistral_common)",
            ChatFormat::Jinja { .. } => "the model's Jinja template (tokenizer.chat_template)",
        }
    }

    pub fn supports_tools(&self) -> bool {
        matches!(self, ChatFormat::MistralV3)
    }

    /// The request's prompt ids, ending where the assistant's answer begins (or inside the
    /// final assistant message with `continue_final_message`).
    pub fn encode(&self, text: &Text, request: &ChatRequest) -> anyhow::Result<Vec<u32>> {
        match self {
            ChatFormat::MistralV3 => encode_chat(text.tokenizer(), request)
                .context("rendering the chat request with Mistral's v3 template"),
            ChatFormat::Jinja { template, encoder } => {
                let rendered = render_jinja(template, request)?;
                let encoding = encoder
                    .encode_fast(rendered.as_str(), false)
                    .map_err(|e| anyhow::anyhow!("tokenizing the rendered template: {e}"))?;
                Ok(encoding.get_ids().to_vec())
            }
        }
    }
}

fn render_jinja(template: &ChatTemplate, request: &ChatRequest) -> anyhow::Result<String> {
    if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        bail!(
            "tools need Mistral's chat template (v3); this model's Jinja template is rendered \
             without tool definitions"
        );
    }
    if request.messages.iter().any(|m| m.tool_calls.is_some()) {
        bail!("this model's Jinja template is rendered without tool calls, and a message has some");
    }
    if !request.continue_final_message {
        return template
            .render(&request.messages, true)
            .context("rendering the model's chat template");
    }
    // transformers' continue_final_message: render the whole conversation, then cut it right
    // after the final message's (stripped) text, dropping the end-of-turn the template adds.
    let last = request.messages.last().context("the request has no messages")?;
    let prefix = match (&last.role, &last.content) {
        (Role::Assistant, Some(Content::Text(s))) => s.trim(),
        _ => bail!(
            "continue_final_message needs a final assistant message with text content"
        ),
    };
    let full = template
        .render(&request.messages, false)
        .context("rendering the model's chat template")?;
    let at = full.rfind(prefix).with_context(|| {
        "continue_final_message: the template's rendering does not contain the final message"
    })?;
    Ok(full[..at + prefix.len()].to_string())
}
