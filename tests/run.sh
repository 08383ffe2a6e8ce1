#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit and
# integration tests. Installs nothing beyond the Rust toolchain today; later
# suites (a real broker, a browser) are installed here too.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
