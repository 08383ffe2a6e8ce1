//! Progress bars for long command-line work (import, export, predict, bench):
//! drawn on stderr when it is a terminal, invisible otherwise (pipes, CI, logs).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps (0 = unknown: a spinner with the count), showing `what`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = if len > 0 {
        ProgressBar::new(len)
    } else {
        ProgressBar::new_spinner()
    };
    let template = if len > 0 {
        "{spinner} {msg} {human_pos}/{human_len} [{bar:40}] {per_sec} eta {eta}"
    } else {
        "{spinner} {msg} {human_pos} {per_sec}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// A bar of bytes (file imports).
pub fn bytes_bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg} {bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}
