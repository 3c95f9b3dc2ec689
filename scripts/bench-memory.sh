#!/usr/bin/env bash
# Ten minutes under load (docs/benchmarks.md, "Ten minutes under load: memory"): the node's RSS
# every 30 s while `pseq load` sends transfers.   scripts/bench-memory.sh [rate] [duration]
set -euo pipefail
RATE=${1:-5000}
DURATION=${2:-600s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PSEQ=${PSEQ:-$ROOT/target/release/pseq}
OUT=${OUT:-$ROOT/target/bench-memory}
mkdir -p "$OUT"
work=$(mktemp -d)
"$PSEQ" node --dev --datadir "$work/data" --http.port 18845 --metrics.port 18846 --authrpc.port 18847 \
  --block-time 1s --gas-limit 1000000000 > "$OUT/node.out" 2> "$OUT/node.log" &
node=$!
trap 'kill $node 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 2
( while kill -0 "$node" 2>/dev/null; do echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$node/status)"; sleep 30; done ) > "$OUT/rss.txt" &
"$PSEQ" load --rpc http://127.0.0.1:18845 --accounts 1000 --rate "$RATE" --duration "$DURATION" --json > "$OUT/load.json" 2> "$OUT/load.log"
echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$node/status) end" >> "$OUT/rss.txt"
kill -TERM "$node"; wait "$node" || true
cat "$OUT/load.json"; echo; awk 'NR==1{t0=$1} {printf "%4ds %6d MiB\n", $1-t0, $2/1024}' "$OUT/rss.txt"
