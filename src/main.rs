//! The `llm-rotator` binary: parses the command line and maps the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = llm_rotator::cli::Cli::parse();
    match llm_rotator::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("llm-rotator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
