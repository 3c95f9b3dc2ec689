#!/usr/bin/env bash
# Continuous building on and off (docs/benchmarks.md, "Continuous execution"): `pseq load`
# against `pseq node --dev --block-time 1s --gas-limit 1000000000`, with `--continuous false`
# and `--continuous true` alternating, ROUNDS times each, in one script run.
#   scripts/bench-continuous.sh [rate] [duration] [accounts] [rounds] [kind: transfer|erc20]
# Per run: the load tool's JSON (included/s, latency percentiles) and, from the node's log, the
# per-block times from the deadline to the commit (`total_ms`) and the work done ahead.
set -euo pipefail
RATE=${1:-14000}
DURATION=${2:-60s}
ACCOUNTS=${3:-1000}
ROUNDS=${4:-2}
KIND=${5:-transfer}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PSEQ=${PSEQ:-$ROOT/target/release/pseq}
OUT=${OUT:-$ROOT/target/bench-continuous}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# Median and p99 of one numeric field of the "built block" lines, over blocks with >= 1000 txs.
block_stats() { # log, field
  grep 'built block' "$1" | sed 's/\x1b\[[0-9;]*m//g' | awk -v f="$2" '
    { txs = 0; v = ""
      for (i = 1; i <= NF; i++) {
        split($i, kv, "="); gsub(/"/, "", kv[2])
        if (kv[1] == "txs") txs = kv[2]
        if (kv[1] == f) v = kv[2]
      }
      if (txs >= 1000 && v != "") print v }' | sort -n | awk '
    { a[NR] = $1 } END { if (NR == 0) { print "null null 0"; exit }
      m = a[int((NR + 1) / 2)]; p = a[int(NR * 0.99 + 0.999)]; print m, p, NR }'
}

for round in $(seq 1 "$ROUNDS"); do
  for continuous in false true; do
    name="continuous-$continuous-$round"
    rm -rf "$work/pseq"
    "$PSEQ" node --dev --datadir "$work/pseq" --http.port 18645 --metrics.port 18646 --block-time 1s --gas-limit 1000000000 \
      --continuous "$continuous" > "$OUT/$name.node.out" 2> "$OUT/$name.node.log" &
    pid=$!
    sleep 2
    "$PSEQ" load --rpc http://127.0.0.1:18645 --accounts "$ACCOUNTS" --rate "$RATE" --duration "$DURATION" --kind "$KIND" --json \
      > "$OUT/$name.json" 2> "$OUT/$name.load.log"
    kill -TERM "$pid"; wait "$pid" || true
    read -r total_p50 total_p99 blocks < <(block_stats "$OUT/$name.node.log" total_ms)
    read -r ahead_p50 _ _ < <(block_stats "$OUT/$name.node.log" ahead_ms)
    read -r exec_p50 _ _ < <(block_stats "$OUT/$name.node.log" execute_ms)
    read -r root_p50 _ _ < <(block_stats "$OUT/$name.node.log" state_root_ms)
    echo "{\"run\":\"$name\",\"blocks\":$blocks,\"deadline_to_commit_ms_p50\":$total_p50,\"deadline_to_commit_ms_p99\":$total_p99,\"ahead_ms_p50\":$ahead_p50,\"execute_ms_p50\":$exec_p50,\"state_root_ms_p50\":$root_p50}" > "$OUT/$name.blocks.json"
    echo "$name: $(cat "$OUT/$name.json")"
    echo "$name: $(cat "$OUT/$name.blocks.json")"
  done
done
