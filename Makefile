# The two commands of the README, and a few helpers.
CARGO_PROFILE ?= ci

.PHONY: test node build conformance bench-replay bench-load

## Run every test: unit, randomised parallel==sequential, EEST state and blockchain tests,
## the 67 mainnet blocks and the bad-input tests (corpora from ../shared/corpora).
test:
	cargo test --workspace --profile $(CARGO_PROFILE)

## Start a local dev chain (chain id 31337, 20 funded accounts, JSON-RPC on 127.0.0.1:8545),
## installing what the build needs first. Extra flags: make node ARGS="--block-time 1s".
node:
	bash scripts/node-dev.sh $(ARGS)

## Load benchmark against pseq and anvil (docs/benchmarks.md).
bench-load: build
	bash scripts/bench-load.sh

## Build the pseq binary (release).
build:
	cargo build --release -p pseq

## Full conformance runs through the binary (numbers in docs/conformance.md).
PSEQ = cargo run --release -q -p pseq --
conformance:
	$(PSEQ) statetest --force-parallel --compare target/corpora/eest-v5.4.0-develop-state_tests/eest-v5.4.0-develop/state_tests
	$(PSEQ) blocktest --force-parallel --compare target/corpora/eest-v5.4.0-develop-blockchain_tests/eest-v5.4.0-develop/blockchain_tests
	$(PSEQ) blocktest --storage rocksdb --force-parallel --compare target/corpora/eest-v5.4.0-develop-blockchain_tests/eest-v5.4.0-develop/blockchain_tests
	$(PSEQ) replay target/corpora/mainnet-blocks/mainnet-blocks --runs 0
	$(PSEQ) enginetest target/corpora/eest-benchmark-v0.0.7/eest-benchmark-v0.0.7/benchmark/blockchain_tests_engine
