//! The `ironboot` binary: parse the command line, run it, map the outcome to an exit code.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ironboot::cli::Cli::parse();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    match ironboot::cli::run(cli, &mut out, &mut err) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironboot: {e}");
            e.exit_code()
        }
    }
}
