//! `nemo chat`: an interactive conversation, like `mistral-chat --instruct`. One line is one
//! user turn; the answer is streamed token by token (flushed per token) and ends at EOS / the
//! template's end of turn or --max-tokens. `/reset` forgets the conversation, `/exit` (or
//! Ctrl-D, or the end of piped input) ends it. On a terminal a `> ` prompt is shown; with piped
//! input stdout holds only the answers, one per turn, each followed by a newline.

use std::io::{self, BufRead, IsTerminal, Write};

use anyhow::{bail, Context};

use super::args::ChatArgs;
use super::chat_session::{ChatSession, TurnSettings};
use super::device;
use super::generate_cmd::{check_source, compile, report_timing};
use super::loaded::Model;

const PROMPT: &str = "> ";

pub fn run(args: &ChatArgs) -> anyhow::Result<()> {
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if args.source.preset.is_some() {
        bail!("nemo chat needs a model with a tokenizer and chat template, not --preset");
    }
    check_source(&args.source)?;
    let model = Model::open(args.source.model.as_deref())?;
    let format = model.chat_format()?;
    let text = model.text.as_ref().expect("a chat format implies a tokenizer");
    let params = model.recommended.apply(&args.sampling);
    params.validate().context("invalid sampling parameters")?;
    let penalties = args.sampling.penalties().map_err(anyhow::Error::msg)?;
    let constraint = args.constraint.constraint().map_err(anyhow::Error::msg)?;
    let device = device::select(args.device)?;
    let weights = model.load_weights()?;
    penalties.validate(weights.config.vocab_size).context("invalid sampling parameters")?;
    let grammar = constraint.map(|c| compile(Some(text), &c, weights.config.vocab_size, &model.stop.ids)).transpose()?;
    model.stop.announce();
    let mut backend = device::open(&device, &weights, &args.source)?;
    let mut session = ChatSession::new(format, text, args.system.clone());

    let interactive = io::stdin().is_terminal();
    eprintln!(
        "nemo: chat template: {}. One line per turn; /reset forgets the conversation, /exit or \
         Ctrl-D ends it.",
        format.describe()
    );
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    let mut failed = 0;
    loop {
        if interactive {
            print!("{PROMPT}");
            io::stdout().flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let line = line.trim_end_matches(['\r', '\n']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                session.reset(backend.as_mut());
                eprintln!("nemo: conversation reset");
                continue;
            }
            _ => {}
        }
        let mut stdout = io::stdout();
        let mut write = |s: &str| -> io::Result<()> {
            stdout.write_all(s.as_bytes())?;
            stdout.flush()
        };
        let how = TurnSettings {
            params,
            penalties: &penalties,
            stop_ids: &model.stop.ids,
            max_tokens: args.max_tokens,
            grammar: grammar.as_ref(),
        };
        match session.turn(backend.as_mut(), line, &how, &mut write) {
            Ok(turn) => {
                println!();
                if turn.answer.trim().is_empty() {
                    eprintln!("nemo: notice: empty answer; this exchange is not kept in the history");
                }
                report_timing(&turn.generation, backend.device());
            }
            // A failed turn (a conversation past the context, ...) is reported; the chat goes on.
            Err(e) => {
                println!();
                eprintln!("nemo: turn failed: {}", super::cause_chain(&e));
                failed += 1;
            }
        }
    }
    if interactive {
        println!();
    }
    eprintln!("nemo: {} turns in the conversation", session.turns());
    if failed > 0 {
        bail!("{failed} turn(s) failed (see above)");
    }
    Ok(())
}
