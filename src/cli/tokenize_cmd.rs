//! `nemo tokenize`: text (optionally with BOS / EOS) or an OpenAI-style chat request to ids,
//! through the model's tokenizer and chat template, without loading any weights. Prints the
//! ids comma-separated (what `--prompt-tokens` takes), or with `--json`
//! `{"ids": [...], "text": "<the ids decoded, special tokens shown>"}`.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use nemo_engine::tokenizer::ChatRequest;

use super::args::TokenizeArgs;
use super::loaded::open_tokenizer;

#[derive(Serialize)]
struct JsonOutput<'a> {
    ids: &'a [u32],
    text: String,
}

pub fn run(args: &TokenizeArgs) -> anyhow::Result<()> {
    let (text, chat) = open_tokenizer(args.model.as_deref())?;
    let ids = match (&args.input.text, &args.input.chat) {
        (Some(s), _) => text.encode(s, args.bos, args.eos)?,
        (None, Some(path)) => {
            let request = read_request(path)?;
            let format = chat.with_context(|| {
                format!(
                    "no chat template is known for the tokenizer {} (Mistral's v3 template needs \
                     its [INST] control tokens; a GGUF needs tokenizer.chat_template)",
                    text.source.display()
                )
            })?;
            format.encode(&text, &request)?
        }
        (None, None) => unreachable!("clap requires --text or --chat"),
    };
    if args.json {
        let json = JsonOutput { ids: &ids, text: text.decode_showing_specials(&ids)? };
        println!("{}", serde_json::to_string(&json).context("serialising the output")?);
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(","));
    }
    Ok(())
}

/// REQUEST.json, or stdin for `-`.
fn read_request(path: &Path) -> anyhow::Result<ChatRequest> {
    let (json, name) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading the chat request from stdin")?;
        (s, "stdin".to_string())
    } else {
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("reading the chat request {}", path.display()))?;
        (s, path.display().to_string())
    };
    ChatRequest::from_json(&json).with_context(|| {
        format!("{name}: not an OpenAI-style chat request ({{\"messages\": [...], \"tools\": [...]?}})")
    })
}
