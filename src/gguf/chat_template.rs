//! The model's own chat template (`tokenizer.chat_template`, Jinja as in HF's
//! `tokenizer_config.json`), rendered with minijinja the way transformers' `apply_chat_template`
//! renders it: `trim_blocks` and `lstrip_blocks` on, one trailing newline of the template
//! dropped, loop controls, `raise_exception`, Python string methods (`.strip()` and friends),
//! and the variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`.
//! Tool definitions are not passed (the demo template has none).
//!
//! The template comes from a file and is untrusted: rendering runs on a fuel budget, so a
//! template that loops for ever or builds a huge string fails instead of hanging.

use minijinja::value::Serde;
use minijinja::{context, Environment, Error, ErrorKind};
use serde::Serialize;

use super::error::{GgufError, GgufErrorKind};
use super::reader::GgufFile;

const TEMPLATE_NAME: &str = "chat_template";
/// Instructions one render may execute: ample for thousands of messages.
const FUEL: u64 = 5_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compile `source`; `bos_token`/`eos_token` are the strings the template may insert.
    pub fn new(source: String, bos_token: String, eos_token: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()?,
        );
        env.set_fuel(Some(FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(TEMPLATE_NAME, source)?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The template in `tokenizer.chat_template`, with the file's BOS/EOS token strings.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let source = file
            .opt_str("tokenizer.chat_template")?
            .ok_or_else(|| file.error(GgufErrorKind::NoChatTemplate))?;
        let tokens = file.string_array("tokenizer.ggml.tokens")?;
        let token = |key: &str| -> Result<String, GgufError> {
            Ok(match file.opt_u64(key)? {
                Some(id) => tokens.get(id as usize).cloned().ok_or_else(|| {
                    file.error(GgufErrorKind::BadValue {
                        key: key.into(),
                        reason: format!("id {id} is past the {} tokens", tokens.len()),
                    })
                })?,
                None => String::new(),
            })
        };
        let (bos, eos) = (
            token("tokenizer.ggml.bos_token_id")?,
            token("tokenizer.ggml.eos_token_id")?,
        );
        Self::new(source.to_owned(), bos, eos).map_err(|e| file.error(e.into()))
    }

    /// Render a conversation. `messages` is any serialisable list of `{role, content, ...}`;
    /// with `add_generation_prompt` the text ends where the assistant's reply begins.
    pub fn render<M: Serialize>(
        &self,
        messages: &[M],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let template = self.env.get_template(TEMPLATE_NAME)?;
        template.render(context! {
            messages => Serde(messages),
            add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn t(src: &str) -> ChatTemplate {
        ChatTemplate::new(src.into(), "<s>".into(), "</s>".into()).unwrap()
    }

    #[test]
    fn chatml_renders_roles_and_generation_prompt() {
        let msgs = [
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
        ];
        assert_eq!(
            t(CHATML).render(&msgs, false).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        );
        assert_eq!(
            t(CHATML).render(&msgs[..1], true).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn whitespace_control_matches_transformers() {
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before
        // it, and the template's single trailing newline is dropped.
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content.strip() }}]\n  {% endif %}\n{% endfor %}\n";
        assert_eq!(
            t(src)
                .render(&[ChatMessage::new("user", "  x ")], false)
                .unwrap(),
            "[x]\n"
        );
    }

    #[test]
    fn special_tokens_and_raise_exception() {
        let src = "{{ bos_token }}{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ eos_token }}";
        assert_eq!(
            t(src)
                .render(&[ChatMessage::new("user", "")], false)
                .unwrap(),
            "<s></s>"
        );
        let err = t(src)
            .render(&[ChatMessage::new("system", "")], false)
            .unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let src = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
        let err = t(src).render::<ChatMessage>(&[], false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel);
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        assert!(ChatTemplate::new("{% for %}".into(), String::new(), String::new()).is_err());
    }
}
