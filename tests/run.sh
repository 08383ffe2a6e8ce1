#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, unit and
# integration tests. Installs what the tests need when it is missing:
# - Debian's chromium, node and npm, and playwright-core (npm) for the
#   dashboard's browser tests;
# - tansu, an independent Kafka-protocol broker, for the ingest tests against a
#   real broker: built once into ~/.cache/playpulse/tansu (about 25-40 minutes
#   cold on 2 cores; its target dir is kept there, so a rebuild takes seconds);
# - pyarrow (PyPI) in a virtualenv at ~/.cache/playpulse/pyarrow-venv, the
#   independent reader of the Parquet export, and pyspark with numpy there too
#   for the Spark route (tests/spark.rs; Spark needs Debian's Java 17).
set -euo pipefail
cd "$(dirname "$0")/.."
MISSING=""
command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium"
command -v node >/dev/null 2>&1 || MISSING="$MISSING nodejs"
command -v npm >/dev/null 2>&1 || MISSING="$MISSING npm"
command -v java >/dev/null 2>&1 || MISSING="$MISSING openjdk-17-jre-headless"
if [ -n "$MISSING" ]; then
  echo "installing$MISSING (Debian) for the dashboard's browser tests and the Spark route" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $MISSING >/dev/null
fi
# playwright-core (npm: the library alone, no bundled browser) drives that
# chromium in tests/console.rs.
PLAYWRIGHT_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/playpulse/playwright"
export PLAYWRIGHT_CORE="$PLAYWRIGHT_DIR/node_modules/playwright-core"
if ! grep -q '"version": "1.65.2"' "$PLAYWRIGHT_CORE/package.json" 2>/dev/null; then
  echo "installing playwright-core 1.65.2 into $PLAYWRIGHT_DIR (once)" >&2
  npm install --prefix "$PLAYWRIGHT_DIR" --no-audit --no-fund --silent playwright-core@1.65.2
fi
TANSU_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/playpulse/tansu"
export TANSU_BIN="$TANSU_ROOT/bin/tansu"
if [ ! -x "$TANSU_BIN" ]; then
  echo "building tansu 0.6.0 into $TANSU_ROOT (once)" >&2
  CARGO_TARGET_DIR="$TANSU_ROOT-target" cargo install tansu --version 0.6.0 --locked \
    --features libsql --root "$TANSU_ROOT" --quiet
fi
PYARROW_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/playpulse/pyarrow-venv"
export PYARROW_PYTHON="$PYARROW_VENV/bin/python"
if ! "$PYARROW_PYTHON" -c "import pyarrow.dataset, pyspark, numpy" >/dev/null 2>&1; then
  echo "installing pyarrow, pyspark and numpy into $PYARROW_VENV (once)" >&2
  [ -x "$PYARROW_PYTHON" ] || python3 -m venv "$PYARROW_VENV"
  "$PYARROW_PYTHON" -m pip install --quiet --disable-pip-version-check \
    "pyarrow==21.0.0" "pyspark==4.3.0" "numpy==2.4.6"
fi
cargo fmt --check
# No import cycle between the library's top-level modules (ARCHITECTURE.md).
python3 .ci/module-cycles
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
