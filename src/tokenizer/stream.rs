//! Streaming detokenizer: feed ids one at a time, get text as soon as it is whole.
//!
//! A token can end in the middle of a UTF-8 character (an emoji is often 2-4 byte tokens), so
//! bytes are held until the character completes. Invalid bytes become U+FFFD with the same rule
//! as the one-shot decode (`String::from_utf8_lossy`, which matches Python's
//! `errors="replace"`), and a special id flushes pending bytes first, as mistral_common decodes
//! the runs on either side of a special token separately. So the concatenation of everything
//! [`StreamDecoder::push`] and [`StreamDecoder::finish`] return equals
//! `tokenizer.decode(all_ids, policy)`, and no returned piece ever splits a character.

use super::{SpecialTokenPolicy, Tokenizer, TokenizerError};

#[derive(Debug)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    policy: SpecialTokenPolicy,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer, policy: SpecialTokenPolicy) -> Self {
        StreamDecoder { tokenizer, policy, pending: Vec::new() }
    }

    /// Adds one id; returns the text completed by it (often empty mid-character).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        if self.tokenizer.is_special(id) {
            let mut out = self.flush_lossy();
            match self.policy {
                SpecialTokenPolicy::Ignore => {}
                SpecialTokenPolicy::Keep => out.push_str(&self.tokenizer.special_text(id).unwrap_or_default()),
                SpecialTokenPolicy::Raise => return Err(TokenizerError::SpecialInDecode(id)),
            }
            return Ok(out);
        }
        let bytes = self
            .tokenizer
            .token_bytes(id)
            .ok_or(TokenizerError::UnknownId { id, vocab_size: self.tokenizer.vocab_size() })?;
        self.pending.extend_from_slice(&bytes);
        Ok(self.take_complete())
    }

    /// End of stream: whatever is still pending (an unfinished character) as U+FFFD.
    pub fn finish(&mut self) -> String {
        self.flush_lossy()
    }

    /// True while bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn flush_lossy(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }

    /// Emits every complete character and every invalid sequence (as U+FFFD); keeps only an
    /// incomplete character at the very end.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).expect("validated prefix"));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            start = valid + bad;
                        }
                        None => {
                            start = valid; // incomplete tail: wait for the next token
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
