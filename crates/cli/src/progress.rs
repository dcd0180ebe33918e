//! Progress for long work, on a terminal only: a log file or a pipe gets nothing.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Work below this many bytes finishes too fast for a bar to help.
const MIN_BYTES: u64 = 64 << 20;

fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte-count bar for reading `len` bytes (an image being hashed), or a hidden one when
/// stderr is not a terminal or the work is small.
pub fn bytes(len: u64, what: &str) -> ProgressBar {
    if !on_terminal() || len < MIN_BYTES {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// A counter of items (tiles mirrored, requests sent) with an unknown or known total.
pub fn items(total: Option<u64>, what: &str) -> ProgressBar {
    if !on_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{msg} [{bar:30}] {pos}/{len} eta {eta}"
    } else {
        "{spinner} {msg} {pos} ({per_sec})"
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}
