//! `nemo bench kernels`: the kernel lab's flags.

use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum BenchLab {
    /// The kernel lab: every variant of a kernel checked against the CPU reference and timed
    /// beside cuBLAS / PyTorch SDPA at the same shapes (needs a GPU; --list does not).
    Kernels(KernelLabArgs),
}

#[derive(Args, Debug)]
pub struct KernelLabArgs {
    /// The kernel family: gemm, attention_prefill, attention_decode. Default: all.
    #[arg(long, value_name = "NAME")]
    pub kernel: Option<String>,

    /// One variant of the family (see --list). Default: all.
    #[arg(long, value_name = "V", requires = "kernel")]
    pub variant: Option<String>,

    /// Shapes, comma-separated, in the family's syntax (see --list). Default: Nemo's.
    #[arg(long, value_name = "SHAPE,...", value_delimiter = ',', requires = "kernel")]
    pub shape: Vec<String>,

    /// Timed iterations per variant and shape (after 3 warm-up runs); the median is reported.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub iters: usize,

    /// List the families, their variants and shape syntax, then exit (no GPU needed).
    #[arg(long)]
    pub list: bool,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}
