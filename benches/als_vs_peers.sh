#!/usr/bin/env bash
# Same-run comparison of playpulse's ALS with the peers (implicit, Spark MLlib,
# popularity) on a split made by ../shared/peers (see its README):
#   bash ../shared/peers/setup.sh && bash ../shared/peers/run_size.sh medium gen,split
#   bash benches/als_vs_peers.sh [SPLIT_DIR] [RUNS]
# implicit and playpulse run interleaved RUNS times, Spark and popularity once;
# one JSON line per run on stdout ("who" names the system).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="${1:-/tmp/peer-data/synth/medium/split}"
RUNS="${2:-3}"
PEERS="${PEERS:-$HERE/../shared/peers}"
PY="${VENV:-/tmp/peers-venv}/bin/python"
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
PP="${CARGO_TARGET_DIR:-$HERE/target}/release/playpulse"
ARGS=(--train "$D/train.tsv" --test "$D/test.tsv" --factors 10 --iterations 15 --regularization 0.1 --alpha 1 --k 10 --threads 2)
for r in $(seq 1 "$RUNS"); do
  "$PY" "$PEERS/peer_als.py" --data "$D" --systems implicit --ranks 10 --repeats 1 2>/dev/null | sed "s/^{/{\"run\":$r,\"who\":\"peer\",/"
  "$PP" bench als "${ARGS[@]}" | sed "s/^{/{\"run\":$r,\"who\":\"playpulse-cg\",/"
  "$PP" bench als "${ARGS[@]}" --weighted-regularization | sed "s/^{/{\"run\":$r,\"who\":\"playpulse-wr\",/"
done
"$PY" "$PEERS/peer_als.py" --data "$D" --systems pop,spark --ranks 10 --repeats 1 2>/dev/null | sed 's/^{/{"run":1,"who":"peer",/'
