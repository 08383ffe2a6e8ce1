//! The binary's own modules: the command line's shape, and the commands
//! that are more than a call into the library.

pub mod args;
pub mod bench;
pub mod run;

use std::io::IsTerminal;
use std::time::Duration;

pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A log that cannot be written (a full disk under it) is dropped: its
        // fallback report to stderr would fail the same way, and panic.
        .log_internal_errors(false)
        .init();
}

/// Writes a line to stderr, ignoring a failure (a full disk under the log
/// must not turn a clean exit into a panic).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// How long `produce` and `import` wait for the brokers (to answer, to take a record).
pub const CLI_BROKER_TIMEOUT: Duration = Duration::from_secs(15);
