//! # pseq-mempool
//!
//! The node's transaction pool: admission ([`validate`]: decoding EIP-2718 transactions,
//! recovering senders in parallel batches, stateless and stateful checks, each failure carrying
//! geth's exact message, [`PoolError`]) and the pool itself ([`pool`]: pending, base-fee and
//! queued sub-pools, replacement, limits and eviction, best-first iteration for the builder,
//! pending-transaction events) and its [`journal`] in the datadir.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod journal;
pub mod pool;
pub mod tx;
pub mod validate;

pub use config::ValidationConfig;
pub use error::PoolError;
pub use pool::{Added, BestTransactions, Pool, PoolConfig, PoolEntry, PoolStatus, SubPool, SubPoolLimit};
pub use tx::PooledTx;
pub use validate::{check_stateful, check_stateless, decode, decode_pooled, recover, recover_batch, SenderAccount};
