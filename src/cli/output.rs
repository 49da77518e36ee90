//! What `nemo generate` writes on stdout: streamed text (or token ids), or one JSON object.

use std::io::{self, Write};

use serde::Serialize;

use nemo_engine::generate::Generation;
use nemo_engine::sampling::{FinishReason, TokenLogprobs};

use super::text::{Text, TextStream};

/// The `--json` object. `logprobs` is present only when `--logprobs` was given; `text` is null
/// without a tokenizer.
#[derive(Serialize)]
pub struct JsonOutput<'a> {
    pub prompt_tokens: &'a [u32],
    pub tokens: &'a [u32],
    pub text: Option<String>,
    pub finish_reason: FinishReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<JsonLogprob>>,
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

pub fn write_json(
    out: &mut impl Write,
    generation: &Generation,
    text: Option<String>,
) -> io::Result<()> {
    let json = JsonOutput {
        prompt_tokens: &generation.prompt_tokens,
        tokens: &generation.tokens,
        text,
        finish_reason: generation.finish_reason,
        logprobs: generation
            .logprobs
            .as_ref()
            .map(|l| l.iter().map(JsonLogprob::from).collect()),
    };
    serde_json::to_writer(&mut *out, &json)?;
    writeln!(out)?;
    out.flush()
}

/// Streams generated tokens to stdout as they come: text through the tokenizer, else ids
/// separated by spaces. Flushed per token so a terminal shows progress.
pub struct Streamer<'t> {
    text: Option<TextStream<'t>>,
    out: io::Stdout,
    wrote_ids: bool,
}

impl<'t> Streamer<'t> {
    pub fn new(text: Option<&'t Text>) -> Self {
        Streamer {
            text: text.map(Text::stream),
            out: io::stdout(),
            wrote_ids: false,
        }
    }

    pub fn push(&mut self, token: u32) -> io::Result<()> {
        let mut out = self.out.lock();
        match &mut self.text {
            Some(stream) => out.write_all(stream.push(token)?.as_bytes())?,
            None => {
                let sep = if self.wrote_ids { " " } else { "" };
                write!(out, "{sep}{token}")?;
                self.wrote_ids = true;
            }
        }
        out.flush()
    }

    pub fn finish(mut self) -> io::Result<()> {
        let mut out = self.out.lock();
        if let Some(stream) = &mut self.text {
            out.write_all(stream.finish().as_bytes())?;
        }
        writeln!(out)?;
        out.flush()
    }
}
