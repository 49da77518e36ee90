//! `nemo`: the command line. Everything it does lives in `src/cli/` over the library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
