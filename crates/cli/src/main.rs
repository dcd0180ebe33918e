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
mod progress;

use clap::Parser;

/// Vault's CLI takes single-dash long flags (`-field=role_id`); scripts written for it keep
/// working: `-field` (alone or `-field=…`) becomes `--field`. Other arguments pass as they are.
fn vault_style(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some(s) if s == "-field" || s.starts_with("-field=") => format!("-{s}").into(),
        _ => a,
    })
    .collect()
}

fn main() {
    let cli = cmd::Cli::parse_from(vault_style(std::env::args_os()));
    // The agent is a sidecar that sleeps between renewals: one thread is plenty and keeps
    // its memory small. Everything else gets a worker per core.
    let rt = if matches!(cli.cmd, cmd::Command::Agent(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let code = match rt {
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            1
        }
        Ok(rt) => match rt.block_on(cmd::run(cli)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("Error: {e}");
                e.exit_code()
            }
        },
    };
    std::process::exit(code);
}
