//! Text in and out: the prompt's tokens, EOS, and the streamed / final text.
//!
//! This build has no tokenizer yet (src/tokenizer/ is being merged): prompts must be token ids,
//! output is shown as ids, and `text` in the JSON is null.

use std::path::Path;

use anyhow::bail;

/// The checkpoint's tokenizer, when it has one and this build can read it.
pub struct Text {
    _private: (),
}

impl Text {
    /// Loads the tokenizer at `path`. Without tokenizer support, says what is lost.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Option<Text>> {
        if let Some(path) = path {
            eprintln!(
                "nemo: notice: {} is present but this build has no tokenizer yet: output is shown \
                 as token ids and EOS is taken from the config files only",
                path.display()
            );
        }
        Ok(None)
    }

    pub fn encode_prompt(_text: Option<&Text>, _prompt: &str) -> anyhow::Result<Vec<u32>> {
        bail!(
            "--prompt needs a tokenizer, which this build does not include yet; give the prompt \
             as token ids with --prompt-tokens"
        )
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        Vec::new()
    }

    pub fn decode(&self, _ids: &[u32]) -> anyhow::Result<String> {
        bail!("no tokenizer")
    }

    pub fn stream(&self) -> TextStream<'_> {
        TextStream { _text: self }
    }
}

/// Text of generated tokens as they come, never splitting a character.
pub struct TextStream<'t> {
    _text: &'t Text,
}

impl TextStream<'_> {
    pub fn push(&mut self, _token: u32) -> std::io::Result<String> {
        Ok(String::new())
    }

    pub fn finish(&mut self) -> String {
        String::new()
    }
}
