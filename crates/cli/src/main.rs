//! The `custos` binary: argument parsing only; each subcommand lives in `cmd/`.
#![forbid(unsafe_code)]

/// `println!` that ignores a closed stdout (e.g. `custos ... | head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// mimalloc: profiling the PKI issue path showed ~10% of server CPU in glibc malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
