//! Text in and out through the model's tokenizer: `tekken.json` / `tokenizer.json` beside a
//! checkpoint, or the one a GGUF file carries in its metadata. Without a tokenizer, prompts
//! must be ids and output is shown as ids.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use nemo_engine::gguf::GgufTokenizer;
use std::sync::Arc;

use nemo_engine::tokenizer::{HfTokenizer, SpecialTokenPolicy, StreamDecoder, Tokenizer};

/// Generated text drops special tokens (EOS, control tokens), as mistral_common and vLLM do.
const OUTPUT_POLICY: SpecialTokenPolicy = SpecialTokenPolicy::Ignore;

pub struct Text {
    /// Shared with the structured-output compiler (`nemo serve`).
    tokenizer: Arc<Tokenizer>,
    /// Where it was read from, for messages.
    pub source: PathBuf,
    bos: Option<u32>,
    eos: Option<u32>,
    /// Whether a plain `--prompt` starts with BOS: always for Mistral tokenizers (as
    /// mistral_common encodes a prompt), as `tokenizer.ggml.add_bos_token` says for GGUF.
    prompt_bos: bool,
}

impl Text {
    /// A `tekken.json`, a `tokenizer.json`, or the one in a directory (tekken.json first).
    pub fn from_path(path: &Path) -> anyhow::Result<Text> {
        let tokenizer = Tokenizer::from_path(path)
            .with_context(|| format!("loading the tokenizer {}", path.display()))?;
        Ok(Text {
            bos: Some(tokenizer.bos_id()),
            eos: Some(tokenizer.eos_id()),
            tokenizer: Arc::new(tokenizer),
            source: path.to_path_buf(),
            prompt_bos: true,
        })
    }

    /// The tokenizer of a GGUF file (built from `tokenizer.ggml.*`).
    pub fn from_gguf(path: &Path, gguf: &GgufTokenizer, add_bos: bool) -> Text {
        let (bos, eos) = (gguf.bos_id, gguf.eos_id);
        // The library type needs some id for each; `bos`/`eos` here say which really exist.
        let hf = HfTokenizer::from_tokenizer(
            gguf.tokenizer.clone(),
            bos.or(eos).unwrap_or(0),
            eos.or(bos).unwrap_or(0),
        );
        Text {
            tokenizer: Arc::new(Tokenizer::Hf(Box::new(hf))),
            source: path.to_path_buf(),
            bos,
            eos,
            prompt_bos: add_bos && bos.is_some(),
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn shared_tokenizer(&self) -> Arc<Tokenizer> {
        self.tokenizer.clone()
    }

    /// Warns when the tokenizer and the model disagree on the vocabulary size.
    pub fn check_vocab(&self, model_vocab: usize) {
        if self.tokenizer.vocab_size() != model_vocab {
            eprintln!(
                "nemo: warning: the tokenizer {} has {} tokens but the model {}",
                self.source.display(),
                self.tokenizer.vocab_size(),
                model_vocab
            );
        }
    }

    /// `text` to ids, special-token text in it kept as ordinary text; BOS / EOS around it on
    /// request (an error when the tokenizer has none).
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> anyhow::Result<Vec<u32>> {
        let mut ids = Vec::new();
        if bos {
            ids.push(self.bos.context("the tokenizer has no BOS token")?);
        }
        ids.extend(self.tokenizer.encode(text).context("tokenizing the text")?);
        if eos {
            ids.push(self.eos.context("the tokenizer has no EOS token")?);
        }
        Ok(ids)
    }

    /// A plain `--prompt`'s ids (BOS first when the tokenizer's model wants it).
    pub fn encode_prompt(text: Option<&Text>, prompt: &str) -> anyhow::Result<Vec<u32>> {
        let Some(text) = text else {
            bail!(
                "--prompt needs a tokenizer (tekken.json or tokenizer.json) in the model \
                 directory, and there is none; give the prompt as token ids with --prompt-tokens"
            )
        };
        text.encode(prompt, text.prompt_bos, false)
            .context("tokenizing --prompt")
    }

    /// The BOS a plain prompt starts with, when the tokenizer's model wants one.
    pub fn prompt_bos(&self) -> Option<u32> {
        self.bos.filter(|_| self.prompt_bos)
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos.into_iter().collect()
    }

    /// Generated ids as text, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.tokenizer
            .decode(ids, OUTPUT_POLICY)
            .context("decoding the generated tokens")
    }

    /// Ids as text with special tokens written out (`<s>[INST]...`), as `nemo tokenize` shows.
    pub fn decode_showing_specials(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.tokenizer
            .decode(ids, SpecialTokenPolicy::Keep)
            .context("decoding the ids")
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
