//! `nemo perplexity`.

use std::path::PathBuf;

use clap::Args;

use super::{DeviceChoice, ModelSource};

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub source: ModelSource,

    /// The text to score (UTF-8, e.g. wikitext-2's wiki.test.raw); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,

    /// Tokens per window, BOS included; each window scores its second half (llama.cpp's
    /// `--ctx-size` for llama-perplexity).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub context: usize,

    /// Score at most N windows (default: every whole window of the text).
    #[arg(long, value_name = "N")]
    pub max_windows: Option<usize>,

    /// Where to run: auto = the GPU when one is usable, else the CPU (with a notice).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,

    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}
