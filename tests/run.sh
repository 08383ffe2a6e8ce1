#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit and
# integration tests. Installs what the tests need when it is missing:
# Debian's chromium for the dashboard's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian) for the dashboard test" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
