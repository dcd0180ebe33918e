//! The `custos` binary: argument parsing only; each subcommand lives in `cmd/`.
#![forbid(unsafe_code)]

mod client;
mod cmd;
mod output;

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = cmd::Cli::parse();
    let code = match cmd::run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
