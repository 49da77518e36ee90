//! The vocabulary as llguidance sees it: every token's bytes in a trie (special tokens as
//! `0xFF` + their text, llguidance's convention, so no grammar can emit them as text), and a
//! tokenizer for the literal strings a grammar forces.

use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::tokenizer::Tokenizer;

pub struct NemoTokEnv {
    trie: TokTrie,
    tokenizer: std::sync::Arc<Tokenizer>,
}

impl NemoTokEnv {
    /// The trie over the tokenizer's ids; ids the tokenizer does not know (a model whose
    /// vocabulary is padded past it) get no bytes, so no grammar ever allows them. `ends`: the
    /// ids a complete grammar allows (the caller checks they are inside the vocabulary; empty:
    /// the tokenizer's EOS).
    pub fn new(tokenizer: std::sync::Arc<Tokenizer>, ends: &[TokenId]) -> Self {
        let vocab = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..vocab as u32)
            .map(|id| match tokenizer.token_bytes(id) {
                Some(bytes) => bytes.into_owned(),
                None => match tokenizer.special_text(id) {
                    Some(text) => [&[TokTrie::SPECIAL_TOKEN_MARKER][..], text.as_bytes()].concat(),
                    None => Vec::new(),
                },
            })
            .collect();
        let ends = if ends.is_empty() { vec![tokenizer.eos_id()] } else { ends.to_vec() };
        let info = TokRxInfo::new(vocab as u32, ends[0]);
        NemoTokEnv { trie: TokTrie::from(&info, &words).with_eos_tokens(&ends), tokenizer }
    }
}

impl TokenizerEnv for NemoTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Our own encoder for UTF-8 (what the model saw in training); the trie's greedy split for
    /// bytes that are not (a grammar literal cut mid-character).
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s).ok().and_then(|text| self.tokenizer.encode(text).ok()) {
            Some(ids) => ids,
            None => self.trie.greedy_tokenize(s),
        }
    }
}
