#!/usr/bin/env bash
# Installs the real clients the end-to-end tests drive (cast, anvil, viem from npm; web3.py
# from PyPI) into $PSEQ_CLIENTS (default ~/.cache/pseq-clients). Idempotent.
set -euo pipefail
DIR=${PSEQ_CLIENTS:-$HOME/.cache/pseq-clients}
mkdir -p "$DIR"
cd "$DIR"
if [ ! -x node_modules/@foundry-rs/cast-linux-amd64/bin/cast ] || [ ! -d node_modules/viem ]; then
  [ -f package.json ] || echo '{"name":"pseq-clients","private":true,"type":"module"}' > package.json
  npm install --silent --no-audit --no-fund viem@2 @foundry-rs/cast-linux-amd64 @foundry-rs/anvil-linux-amd64
fi
if [ ! -x venv/bin/python ] || ! venv/bin/python -c 'import web3' 2>/dev/null; then
  python3 -m venv venv
  venv/bin/pip install --quiet 'web3>=7,<8'
fi
echo "clients in $DIR"
