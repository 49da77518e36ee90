//! A `tokenizers::Tokenizer` from the `tokenizer.ggml.*` metadata, for GPT-2-style byte-level
//! BPE (`tokenizer.ggml.model == "gpt2"`), built to behave as HF's `tokenizer.json` for the
//! same model and as llama.cpp's `llm_tokenizer_bpe`:
//!
//! - model: BPE over `tokenizer.ggml.tokens` (id = index) and `tokenizer.ggml.merges`
//!   ("left right", rank = index); no unknown token, since byte-level covers every byte.
//! - pre-tokenizer from `tokenizer.ggml.pre`, which names llama.cpp's split regexes:
//!   `gpt2` = ByteLevel's own GPT-2 regex; `smollm` (and the same-regex family) = single
//!   digits, then ByteLevel. Any other value is refused rather than guessed.
//! - tokens of type CONTROL (3) are added as special tokens, USER_DEFINED (4) as plain added
//!   tokens, so `<|im_start|>` in a rendered chat template encodes to its one id.
//! - BOS/EOS added only when `tokenizer.ggml.add_bos_token` / `add_eos_token` say so.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer};

use super::error::{GgufError, GgufErrorKind};
use super::reader::GgufFile;
use super::value::Array;

/// llama.cpp's `llama_token_type`.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The tokenizer plus the special ids generation needs.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// End of turn, where the file names one apart from EOS.
    pub eot_id: Option<u32>,
    pub pad_id: Option<u32>,
}

pub fn build_tokenizer(file: &GgufFile) -> Result<GgufTokenizer, GgufError> {
    let fail = |reason: String| file.error(GgufErrorKind::Tokenizer { reason });
    let model = file.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(fail(format!(
            "tokenizer.ggml.model '{model}' is not supported (supported: gpt2 byte-level BPE)"
        )));
    }
    let tokens = file.string_array("tokenizer.ggml.tokens")?;
    if tokens.len() > u32::MAX as usize {
        return Err(fail(format!("{} tokens do not fit u32 ids", tokens.len())));
    }
    let types: Vec<i32> = match file.opt_array("tokenizer.ggml.token_type")? {
        None => vec![1; tokens.len()],
        Some(Array::I32(t)) if t.len() == tokens.len() => t.clone(),
        Some(a) => {
            return Err(fail(format!(
                "tokenizer.ggml.token_type must be {} i32 values, one per token; found {}",
                tokens.len(),
                super::value::Value::Array(a.clone()).describe()
            )))
        }
    };

    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        if let Some(first) = vocab.insert(token.clone(), id as u32) {
            return Err(fail(format!(
                "token {token:?} appears twice (ids {first} and {id})"
            )));
        }
    }
    let merges = file
        .string_array("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(rank, m)| {
            // As llama.cpp: split at the first space after the first character, so a left
            // part may itself start with a space.
            match m.char_indices().skip(1).find(|&(_, c)| c == ' ') {
                Some((at, _)) if at + 1 < m.len() => {
                    Ok((m[..at].to_owned(), m[at + 1..].to_owned()))
                }
                _ => Err(fail(format!(
                    "tokenizer.ggml.merges[{rank}] = {m:?} is not \"left right\""
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| fail(format!("BPE from tokens and merges: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let add_prefix_space = file
        .opt_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(false);
    let pre = file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre, add_prefix_space).ok_or_else(|| {
        fail(format!("tokenizer.ggml.pre '{pre}' is not supported (supported: gpt2, smollm and its same-regex family)"))
    })?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(token, &t)| {
            AddedToken::from(token.clone(), t == TOKEN_TYPE_CONTROL).normalized(false)
        })
        .collect();
    let (special, plain): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.special);
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| fail(format!("adding special tokens: {e}")))?;
    tokenizer
        .add_tokens(plain)
        .map_err(|e| fail(format!("adding user-defined tokens: {e}")))?;

    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match file.opt_u64(key)? {
            None => Ok(None),
            Some(id) if id < tokens.len() as u64 => Ok(Some(id as u32)),
            Some(id) => Err(file.error(GgufErrorKind::BadValue {
                key: key.into(),
                reason: format!("id {id} is past the {} tokens", tokens.len()),
            })),
        }
    };
    let bos_id = id("tokenizer.ggml.bos_token_id")?;
    let eos_id = id("tokenizer.ggml.eos_token_id")?;
    let eot_id = id("tokenizer.ggml.eot_token_id")?;
    let pad_id = id("tokenizer.ggml.padding_token_id")?;

    let add_bos = file
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(false);
    let add_eos = file
        .opt_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    if add_bos || add_eos {
        let processor = wrap_processor(
            tokens,
            add_bos.then_some(bos_id).flatten(),
            add_eos.then_some(eos_id).flatten(),
        )
        .map_err(|e| fail(format!("BOS/EOS post-processor: {e}")))?;
        tokenizer.with_post_processor(Some(processor));
    }
    Ok(GgufTokenizer {
        tokenizer,
        bos_id,
        eos_id,
        eot_id,
        pad_id,
    })
}

/// llama.cpp's pre-tokenizer names whose regexes `tokenizers` reproduces exactly.
fn pre_tokenizer(pre: &str, add_prefix_space: bool) -> Option<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(add_prefix_space, true, true);
    match pre {
        // The GPT-2 split regex, which ByteLevel(use_regex) applies itself.
        "gpt2" => Some(byte_level.into()),
        // llama.cpp: `\p{N}` then the GPT-2 regex, i.e. every digit alone, as HF's
        // Digits(individual_digits) + ByteLevel in these models' tokenizer.json.
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            Some(Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into())
        }
        _ => None,
    }
}

fn wrap_processor(
    tokens: &[String],
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<PostProcessorWrapper, String> {
    let piece = |id: u32| (tokens[id as usize].clone(), id);
    let specials: Vec<(String, u32)> = bos.into_iter().chain(eos).map(piece).collect();
    let bos_s = bos
        .map(|id| format!("{} ", tokens[id as usize]))
        .unwrap_or_default();
    let eos_s = eos
        .map(|id| format!(" {}", tokens[id as usize]))
        .unwrap_or_default();
    let single = format!("{bos_s}$A{eos_s}");
    let pair = format!("{bos_s}$A{eos_s} {bos_s}$B{eos_s}");
    TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(pair.as_str()))
        .map_err(|e| e.to_string())?
        .special_tokens(specials)
        .build()
        .map(Into::into)
        .map_err(|e| e.to_string())
}
