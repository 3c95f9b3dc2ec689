//! # pseq-mempool
//!
//! The node's transaction pool. This first part is admission: decoding EIP-2718 transactions,
//! recovering senders in parallel batches, and the stateless and stateful checks, each failure
//! carrying geth's exact message ([`PoolError`]). The pool itself (sub-pools, ordering,
//! replacement, limits, events, journal) is still to come.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod tx;
pub mod validate;

pub use config::ValidationConfig;
pub use error::PoolError;
pub use tx::PooledTx;
pub use validate::{check_stateful, check_stateless, decode, recover, recover_batch, SenderAccount};
