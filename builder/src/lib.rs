//! # pseq-builder
//!
//! Block production. [`Sequencer`] is the node's core: it admits transactions into the pool,
//! builds blocks from the pool's best transactions with the parallel executor over the head
//! state (skipping invalid ones, staying within the gas limit), computes the header (state root
//! from storage, transactions and receipts roots, bloom, EIP-1559 base fee, blob gas, requests
//! hash), commits the block in one batch, updates the pool and notifies subscribers.
//! [`Miner`] runs production on an interval, on arrival of transactions (automine) or on demand;
//! in interval mode the next block can stay open and take transactions as they arrive
//! ([`continuous`]).
//! [`ChainRules`] turns a header into the executor's input, for building and importing alike;
//! [`import`] validates and executes a given block (blocktests, `pseq import`, the Engine API).

#![warn(missing_docs)]

pub mod chain_rules;
pub mod continuous;
pub mod error;
pub mod import;
pub mod metrics;
pub mod miner;
pub mod overlay;
pub mod sequencer;

pub use chain_rules::ChainRules;
pub use error::BuildError;
pub use metrics::Metrics;
pub use miner::{mine_now, Miner, MinerCommand};
pub use overlay::{merge_diffs, DiffOverlay};
pub use sequencer::{next_base_fee, Assembled, BuildTimings, BuilderSettings, BuiltBlock, NewBlock, PayloadAttributes, Sequencer};
