#!/usr/bin/env bash
# Starts a local dev chain: installs what the build needs, builds the release binary (the first
# build compiles RocksDB: 15-25 minutes on 2 cores), then runs `pseq node --dev` on a RocksDB
# datadir that survives restarts (default ~/.local/share/pseq/dev). Extra arguments go to
# `pseq node`, e.g. `--block-time 1s` or `--datadir /tmp/dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-build-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p pseq
exec ./target/release/pseq node --dev "$@"
