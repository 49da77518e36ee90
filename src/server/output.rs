//! One request's generated ids -> what its client is sent: text (special tokens dropped, never
//! half a UTF-8 character, stop strings cut), and, for chat requests with tools, tool calls as
//! they are written. Runs on the engine thread, so that a stop string ends the request before
//! the next step (`Engine::finish_stopped`) and no token is generated past it.
//!
//! Stop strings apply to the message text only: the JSON of a tool call is not searched.

use super::stop_strings::StopMatcher;
use crate::tokenizer::{
    ParsedToolCall, SpecialTokenPolicy, StreamDecoder, ToolCallStreamParser, ToolStreamEvent, Tokenizer, TokenizerError,
};

/// How a request's output is read.
#[derive(Debug, Clone, Default)]
pub struct OutputSpec {
    /// Non-empty strings; generation ends at the first one, which is not returned.
    pub stop_strings: Vec<String>,
    /// Parse `[TOOL_CALLS]` output into calls (chat requests with tools).
    pub tool_calls: bool,
    /// Stop strings are looked for only in the text of tokens after the first `min_tokens`
    /// (vLLM's rule); text before passes through whole.
    pub min_tokens: usize,
    /// Ids at the end of the prompt that the answer is read as starting with: a forced tool
    /// call's `[TOOL_CALLS]` (and function name). What they produce comes with the first token.
    pub prefix: Vec<u32>,
}

/// A piece of the answer, in the order the client gets them.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// A tool call's name is known; `id` is the id it carries in the final message.
    ToolCallStarted { index: usize, id: String, name: String },
    /// More of a tool call's arguments JSON, as written.
    ToolArguments { index: usize, delta: String },
}

/// What is left when generation ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalOutput {
    /// Text still held back (an unfinished character, a possible stop-string start).
    pub pieces: Vec<Piece>,
    /// The calls, parsed from the whole output (the ids announced while streaming).
    pub tool_calls: Vec<ParsedToolCall>,
    /// Set when the output had `[TOOL_CALLS]` but no valid call list; its text was returned
    /// as content instead (nothing lost).
    pub malformed: Option<String>,
}

enum Reader<'t> {
    Text(StreamDecoder<'t>),
    Tools(ToolCallStreamParser<'t>),
}

pub struct OutputProcessor<'t> {
    reader: Reader<'t>,
    stops: StopMatcher,
    /// Bytes of message text the reader produced (before stop strings cut it).
    content_read: usize,
    /// Tokens pushed before stop strings are looked for.
    unchecked_tokens: usize,
    /// What reading `OutputSpec::prefix` produced, for the first push (or why it failed).
    pending: Result<Vec<Piece>, String>,
}

impl<'t> OutputProcessor<'t> {
    pub fn new(tokenizer: &'t Tokenizer, spec: &OutputSpec) -> Self {
        let reader = if spec.tool_calls {
            Reader::Tools(ToolCallStreamParser::new(tokenizer))
        } else {
            Reader::Text(StreamDecoder::new(tokenizer, SpecialTokenPolicy::Ignore))
        };
        let stops = StopMatcher::new(spec.stop_strings.clone());
        let mut p = OutputProcessor { reader, stops, content_read: 0, unchecked_tokens: 0, pending: Ok(Vec::new()) };
        let mut pending = Vec::new();
        for &t in &spec.prefix {
            match p.push(t) {
                Ok((mut pieces, _)) => pending.append(&mut pieces),
                Err(e) => {
                    p.pending = Err(format!("the forced start of the answer could not be read: {e}"));
                    break;
                }
            }
        }
        if p.pending.is_ok() {
            p.pending = Ok(pending);
        }
        p.unchecked_tokens = spec.min_tokens;
        p
    }

    /// The pieces `token` completes, and whether a stop string was found (the caller then ends
    /// the request; later tokens, if any, give nothing).
    pub fn push(&mut self, token: u32) -> Result<(Vec<Piece>, bool), TokenizerError> {
        let mut pieces = std::mem::replace(&mut self.pending, Ok(Vec::new())).map_err(TokenizerError::Format)?;
        let mut stopped = false;
        let checked = self.unchecked_tokens == 0;
        self.unchecked_tokens = self.unchecked_tokens.saturating_sub(1);
        let release = |stops: &mut StopMatcher, text: &str, pieces: &mut Vec<Piece>| match checked {
            true => release(stops, text, pieces),
            false => {
                push_text(pieces, text.to_string());
                false
            }
        };
        match &mut self.reader {
            Reader::Text(decoder) => {
                let text = decoder.push(token)?;
                self.content_read += text.len();
                stopped = release(&mut self.stops, &text, &mut pieces);
            }
            Reader::Tools(parser) => {
                for event in parser.push(token)? {
                    match event {
                        ToolStreamEvent::Content(text) => {
                            self.content_read += text.len();
                            stopped |= release(&mut self.stops, &text, &mut pieces);
                        }
                        ToolStreamEvent::CallStarted { index, id, name } => {
                            push_text(&mut pieces, self.stops.flush());
                            pieces.push(Piece::ToolCallStarted { index, id, name });
                        }
                        ToolStreamEvent::ArgumentsDelta { index, delta } => {
                            pieces.push(Piece::ToolArguments { index, delta });
                        }
                        // The whole-output parse at the end is authoritative.
                        ToolStreamEvent::CallCompleted { .. } => {}
                    }
                }
            }
        }
        Ok((pieces, stopped))
    }

    /// End of generation: the held-back text, and the tool calls.
    pub fn finish(&mut self) -> Result<FinalOutput, TokenizerError> {
        let mut out = FinalOutput::default();
        if self.stops.is_stopped() {
            return Ok(out);
        }
        let tail = match &mut self.reader {
            Reader::Text(decoder) => decoder.finish(),
            Reader::Tools(parser) => {
                let parsed = parser.finish()?;
                out.tool_calls = parsed.tool_calls;
                out.malformed = parsed.malformed;
                // The whole-output content extends what was streamed: by an unfinished
                // character, or by the raw text of malformed calls.
                match parsed.content.get(self.content_read..) {
                    Some(rest) => rest.to_string(),
                    None => String::new(),
                }
            }
        };
        if !release(&mut self.stops, &tail, &mut out.pieces) {
            push_text(&mut out.pieces, self.stops.flush());
        }
        Ok(out)
    }
}

/// Passes `text` through the stop strings into `pieces`; true when one was found.
fn release(stops: &mut StopMatcher, text: &str, pieces: &mut Vec<Piece>) -> bool {
    if text.is_empty() {
        return false;
    }
    let released = stops.push(text);
    push_text(pieces, released.text);
    released.stopped
}

fn push_text(pieces: &mut Vec<Piece>, text: String) {
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
