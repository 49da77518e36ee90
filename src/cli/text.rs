//! Text in and out through the checkpoint's tokenizer (`tekken.json` or `tokenizer.json`):
//! the prompt's ids, EOS, and the streamed / final text. Without a tokenizer, prompts must be
//! ids and output is shown as ids.

use std::io;
use std::path::Path;

use anyhow::{bail, Context};

use nemo_engine::tokenizer::{SpecialTokenPolicy, StreamDecoder, Tokenizer};

/// Generated text drops special tokens (EOS, control tokens), as mistral_common and vLLM do.
const OUTPUT_POLICY: SpecialTokenPolicy = SpecialTokenPolicy::Ignore;

pub struct Text {
    tokenizer: Tokenizer,
}

impl Text {
    /// Loads the tokenizer found beside the weights. A tokenizer file that is present but
    /// cannot be read is an error, not a silent switch to ids.
    pub fn load(path: Option<&Path>, model_vocab: usize) -> anyhow::Result<Option<Text>> {
        let Some(path) = path else { return Ok(None) };
        let tokenizer = Tokenizer::from_path(path)
            .with_context(|| format!("loading the tokenizer {}", path.display()))?;
        if tokenizer.vocab_size() != model_vocab {
            eprintln!(
                "nemo: warning: the tokenizer {} has {} tokens but the model {}",
                path.display(),
                tokenizer.vocab_size(),
                model_vocab
            );
        }
        Ok(Some(Text { tokenizer }))
    }

    /// The prompt's ids: BOS, then the text (special-token text in it stays ordinary text).
    pub fn encode_prompt(text: Option<&Text>, prompt: &str) -> anyhow::Result<Vec<u32>> {
        let Some(text) = text else {
            bail!(
                "--prompt needs a tokenizer (tekken.json or tokenizer.json) in the model \
                 directory, and there is none; give the prompt as token ids with --prompt-tokens"
            )
        };
        text.tokenizer
            .encode_with(prompt, true, false)
            .context("tokenizing --prompt")
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        vec![self.tokenizer.eos_id()]
    }

    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.tokenizer
            .decode(ids, OUTPUT_POLICY)
            .context("decoding the generated tokens")
    }

    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            decoder: StreamDecoder::new(&self.tokenizer, OUTPUT_POLICY),
        }
    }
}

/// Text of generated tokens as they come, never splitting a UTF-8 character.
pub struct TextStream<'t> {
    decoder: StreamDecoder<'t>,
}

impl TextStream<'_> {
    pub fn push(&mut self, token: u32) -> io::Result<String> {
        self.decoder.push(token).map_err(io::Error::other)
    }

    pub fn finish(&mut self) -> String {
        self.decoder.finish()
    }
}
