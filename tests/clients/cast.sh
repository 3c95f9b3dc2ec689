#!/usr/bin/env bash
# cast against a running node: a transfer, a deployment from bytecode, a call, the deployment's
# event log, and a revert reason. Usage: cast.sh <cast binary> <rpc url>
set -euo pipefail
CAST=$1
RPC=$2
. "$(dirname "$0")/contracts.env"
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$("$CAST" chain-id --rpc-url "$RPC")" = 31337 ] || fail "chain id"
to=0x4242424242424242424242424242424242424242
before=$("$CAST" balance "$to" --rpc-url "$RPC")
"$CAST" send --rpc-url "$RPC" --private-key "$KEY0" "$to" --value 12345 --json > /tmp/cast-transfer.$$.json
grep -q '"status":"0x1"' /tmp/cast-transfer.$$.json || fail "transfer receipt: $(cat /tmp/cast-transfer.$$.json)"
after=$("$CAST" balance "$to" --rpc-url "$RPC")
[ $((after - before)) = 12345 ] || fail "balance moved by $((after - before))"

deploy=$("$CAST" send --rpc-url "$RPC" --private-key "$KEY0" --create "$EMITTER" --json)
contract=$(echo "$deploy" | sed -n 's/.*"contractAddress":"\(0x[0-9a-fA-F]*\)".*/\1/p')
[ -n "$contract" ] || fail "no contract address: $deploy"
out=$("$CAST" call --rpc-url "$RPC" "$contract" "0x")
[ "$out" = "0x000000000000000000000000000000000000000000000000000000000000002a" ] || fail "call returned $out"
logs=$("$CAST" logs --rpc-url "$RPC" --from-block 0 --address "$contract" --json)
echo "$logs" | grep -qi "${EMITTER_TOPIC}" || fail "log not found: $logs"

reverter=$("$CAST" send --rpc-url "$RPC" --private-key "$KEY0" --create "$REVERTER" --json | sed -n 's/.*"contractAddress":"\(0x[0-9a-fA-F]*\)".*/\1/p')
if err=$("$CAST" call --rpc-url "$RPC" "$reverter" "0x" 2>&1); then fail "call of the reverter succeeded: $err"; fi
echo "$err" | grep -q "nope" || fail "revert reason missing: $err"
rm -f /tmp/cast-transfer.$$.json
echo "cast: transfer, deployment, call, logs and revert reason OK"
