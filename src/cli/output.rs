//! What `nemo generate` writes on stdout: streamed text (or token ids), or one JSON object.
//! With `--tools`, tool calls are parsed from the generated ids (`[TOOL_CALLS]` is a special
//! id, found on ids, never on text) and printed after the text.

use std::io::{self, Write};

use serde::Serialize;

use nemo_engine::generate::Generation;
use nemo_engine::sampling::{FinishReason, TokenLogprobs};
use nemo_engine::tokenizer::{AssistantOutput, ParsedToolCall, ToolCallStreamParser, ToolStreamEvent};

use super::text::{Text, TextStream};

/// The `--json` object. `logprobs` is present only when `--logprobs` was given; `text` is null
/// without a tokenizer. With `--tools`: `tool_calls` (possibly empty), `text` the content
/// before them, and `tool_calls_error` when the model's calls were malformed (then `text`
/// holds everything it wrote, nothing lost).
#[derive(Serialize)]
pub struct JsonOutput<'a> {
    pub prompt_tokens: &'a [u32],
    pub tokens: &'a [u32],
    pub text: Option<String>,
    pub finish_reason: FinishReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<JsonLogprob>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<JsonToolCall>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls_error: Option<String>,
}

/// OpenAI's form: `{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}`.
#[derive(Serialize)]
pub struct JsonToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: JsonFunction,
}

#[derive(Serialize)]
pub struct JsonFunction {
    pub name: String,
    pub arguments: String,
}

impl From<&ParsedToolCall> for JsonToolCall {
    fn from(call: &ParsedToolCall) -> Self {
        JsonToolCall {
            id: call.id.clone(),
            kind: "function",
            function: JsonFunction { name: call.name.clone(), arguments: call.arguments_json() },
        }
    }
}

/// What the JSON output says about the text: plain decoded text, or split by the tool parser.
pub enum OutputText {
    None,
    Plain(String),
    WithTools(AssistantOutput),
}

#[derive(Serialize)]
pub struct JsonLogprob {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<JsonTop>,
}

#[derive(Serialize)]
pub struct JsonTop {
    pub token: u32,
    pub logprob: f32,
}

impl From<&TokenLogprobs> for JsonLogprob {
    fn from(lp: &TokenLogprobs) -> Self {
        JsonLogprob {
            token: lp.token,
            logprob: lp.logprob,
            top: lp
                .top
                .iter()
                .map(|&(token, logprob)| JsonTop { token, logprob })
                .collect(),
        }
    }
}

pub fn write_json(out: &mut impl Write, generation: &Generation, text: OutputText) -> io::Result<()> {
    let (text, tool_calls, tool_calls_error) = match text {
        OutputText::None => (None, None, None),
        OutputText::Plain(t) => (Some(t), None, None),
        OutputText::WithTools(o) => {
            (Some(o.content), Some(o.tool_calls.iter().map(JsonToolCall::from).collect()), o.malformed)
        }
    };
    let json = JsonOutput {
        prompt_tokens: &generation.prompt_tokens,
        tokens: &generation.tokens,
        text,
        finish_reason: generation.finish_reason,
        logprobs: generation
            .logprobs
            .as_ref()
            .map(|l| l.iter().map(JsonLogprob::from).collect()),
        tool_calls,
        tool_calls_error,
    };
    serde_json::to_writer(&mut *out, &json)?;
    writeln!(out)?;
    out.flush()
}

/// Streams generated tokens to stdout as they come: text through the tokenizer (split from
/// tool calls with `--tools`), else ids separated by spaces. Flushed per token so a terminal
/// shows progress.
pub struct Streamer<'t> {
    mode: Mode<'t>,
    out: io::Stdout,
    wrote_ids: bool,
    streamed_content: String,
}

enum Mode<'t> {
    Ids,
    Text(TextStream<'t>),
    Tools(ToolCallStreamParser<'t>),
}

impl<'t> Streamer<'t> {
    pub fn new(text: Option<&'t Text>, tools: bool) -> Self {
        let mode = match text {
            None => Mode::Ids,
            Some(t) if tools => Mode::Tools(ToolCallStreamParser::new(t.tokenizer())),
            Some(t) => Mode::Text(t.stream()),
        };
        Streamer { mode, out: io::stdout(), wrote_ids: false, streamed_content: String::new() }
    }

    pub fn push(&mut self, token: u32) -> io::Result<()> {
        let mut out = self.out.lock();
        match &mut self.mode {
            Mode::Text(stream) => out.write_all(stream.push(token)?.as_bytes())?,
            Mode::Tools(parser) => {
                for event in parser.push(token).map_err(io::Error::other)? {
                    // Calls are printed whole at the end, from the authoritative parse.
                    if let ToolStreamEvent::Content(text) = event {
                        out.write_all(text.as_bytes())?;
                        self.streamed_content.push_str(&text);
                    }
                }
            }
            Mode::Ids => {
                let sep = if self.wrote_ids { " " } else { "" };
                write!(out, "{sep}{token}")?;
                self.wrote_ids = true;
            }
        }
        out.flush()
    }

    pub fn finish(mut self) -> io::Result<()> {
        let mut out = self.out.lock();
        match &mut self.mode {
            Mode::Text(stream) => out.write_all(stream.finish().as_bytes())?,
            Mode::Tools(parser) => {
                let parsed = parser.finish().map_err(io::Error::other)?;
                // Whatever content was not streamed yet (a malformed call's raw text).
                let rest = parsed.content.strip_prefix(self.streamed_content.as_str()).unwrap_or(&parsed.content);
                out.write_all(rest.as_bytes())?;
                let mut wrote_text = !parsed.content.is_empty();
                for call in &parsed.tool_calls {
                    if wrote_text {
                        writeln!(out)?;
                    }
                    write!(out, "[tool call {}] {}({})", call.id, call.name, call.arguments_json())?;
                    wrote_text = true;
                }
                if let Some(why) = &parsed.malformed {
                    eprintln!("nemo: warning: the model's tool calls are malformed ({why}); shown as text");
                }
            }
            Mode::Ids => {}
        }
        writeln!(out)?;
        out.flush()
    }
}
