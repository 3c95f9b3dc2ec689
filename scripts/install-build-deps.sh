#!/usr/bin/env bash
# Installs what building pseq needs when it is missing: a Rust toolchain (rustup), clang and
# libclang-dev (RocksDB's bindings), a C++ compiler (RocksDB), a C compiler (libsecp256k1), make.
# `--clients` also installs what the real-client tests need (node/npm, python3-venv).
set -euo pipefail
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
if [ "${1:-}" = "--clients" ]; then
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
