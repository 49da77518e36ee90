//! The `nemo` command line (clap). The only place with `anyhow`: library errors are typed, and
//! here they gain context and become one `error: ...` line on stderr with a non-zero exit.
//!
//! - [`args`]: the flags.
//! - [`generate_cmd`], [`chat_cmd`], [`tokenize_cmd`], [`serve_cmd`], [`inspect_cmd`],
//!   [`bench_cmd`]: the subcommands.
//! - [`resolve`]: what `--model` names (checkpoint, .gguf, or the demo model by default);
//!   [`loaded`]: the model opened (tokenizer, chat format, stop ids) and its weights.
//! - [`chat_format`]: Mistral v3 or the GGUF's Jinja template; [`chat_session`]: a
//!   conversation's history and prefix reuse.
//! - [`defaults`]: the sampling values a model recommends.
//! - [`device`]: `--device auto|cpu|cuda`.
//! - [`eos`], [`text`], [`output`]: stop ids, the tokenizer, what goes to stdout.

mod args;
mod bench_cmd;
mod chat_cmd;
mod chat_format;
mod chat_session;
mod defaults;
mod device;
mod eos;
mod generate_cmd;
mod inspect_cmd;
mod lab_cmd;
mod loaded;
mod output;
mod perplexity_cmd;
mod resolve;
mod serve_cmd;
mod text;
mod tokenize_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use args::{Cli, Command};

/// Exit status of a run that failed (bad model, bad input, no GPU, ...).
const EXIT_FAILURE: u8 = 1;
/// Exit status of a command line clap could not parse (clap's own convention).
const EXIT_USAGE: u8 = 2;

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match &cli.command {
        Command::Generate(args) => generate_cmd::run(args),
        Command::Chat(args) => chat_cmd::run(args),
        Command::Tokenize(args) => tokenize_cmd::run(args),
        Command::Serve(args) => serve_cmd::run(args),
        Command::Inspect(args) => inspect_cmd::run(args),
        Command::Perplexity(args) => perplexity_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cause_chain(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Help and version go to stdout as clap prints them; parse errors become one line.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(EXIT_USAGE)
        }
        _ => {
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect();
            eprintln!("{} (see nemo --help)", message.join(" "));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The error and its causes, outermost first, joined by ": " on one line. A cause whose text
/// its parent already shows (errors that print their source and also expose it) is skipped.
pub(crate) fn cause_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = one_line(&cause.to_string());
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn the_cause_chain_is_one_line_without_repeats() {
        let io = std::io::Error::other("disk\non fire");
        let e = anyhow::Error::new(Repeats(io)).context("loading x");
        assert_eq!(cause_chain(&e), "loading x: outer: disk on fire");
    }
}
