#!/usr/bin/env bash
# Load benchmark (docs/benchmarks.md, "Node under load"): `pseq load` against `pseq node --dev`
# and against anvil, same machine, same run, same block time (1 s) and gas limit (1 gigagas).
#   scripts/bench-load.sh [rate] [duration] [accounts] [kind: transfer|erc20]
# Needs anvil: `npm install @foundry-rs/anvil-linux-amd64` (ANVIL=path/to/anvil to override).
set -euo pipefail
RATE=${1:-20000}
DURATION=${2:-60s}
ACCOUNTS=${3:-1000}
KIND=${4:-transfer}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PSEQ=${PSEQ:-$ROOT/target/release/pseq}
ANVIL=${ANVIL:-$(command -v anvil || echo "$ROOT/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")}
OUT=${OUT:-$ROOT/target/bench-load}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

rss_kb() { awk '/VmRSS/ {print $2}' /proc/"$1"/status 2>/dev/null || echo 0; }

run_against() { # name, port, pid
  local name=$1 port=$2 pid=$3
  local rss_start; rss_start=$(rss_kb "$pid")
  "$PSEQ" load --rpc "http://127.0.0.1:$port" --accounts "$ACCOUNTS" --rate "$RATE" --duration "$DURATION" --kind "$KIND" --json \
    > "$OUT/$name.json" 2> "$OUT/$name.load.log"
  local rss_end; rss_end=$(rss_kb "$pid")
  echo "{\"node\":\"$name\",\"rss_start_kb\":$rss_start,\"rss_end_kb\":$rss_end}" > "$OUT/$name.rss.json"
  echo "$name: $(cat "$OUT/$name.json")"
  echo "$name: RSS ${rss_start} kB at start, ${rss_end} kB at end"
}

"$PSEQ" node --dev --datadir "$work/pseq" --http.port 18645 --metrics.port 18646 --block-time 1s --gas-limit 1000000000 \
  > "$OUT/pseq.node.out" 2> "$OUT/pseq.node.log" &
pseq_pid=$!
sleep 2
run_against pseq 18645 "$pseq_pid"
kill -TERM "$pseq_pid"; wait "$pseq_pid" || true

"$ANVIL" --block-time 1 --gas-limit 1000000000 --port 18647 > "$OUT/anvil.node.log" 2>&1 &
anvil_pid=$!
sleep 3
run_against anvil 18647 "$anvil_pid"
kill "$anvil_pid"; wait "$anvil_pid" 2>/dev/null || true
