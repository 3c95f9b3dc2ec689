//! # pseq-storage
//!
//! The node's state and chain in RocksDB (one column family per kind of data, listed in
//! [`tables`]):
//!
//! - [`Storage::open_or_init`] creates a datadir from a genesis, or opens one after checking it
//!   holds the same chain and schema;
//! - [`Storage::latest`] and [`Storage::state_at`] give the executor its pre-state
//!   ([`StateView`], with a concurrent cache at the head and history for earlier blocks);
//! - [`Storage::prepare_state`] computes the new state root incrementally from a block's
//!   [`pseq_executor::StateDiff`] (stored trie branch nodes, only changed paths re-hashed) and
//!   [`Storage::commit_block`] writes the block with its state in one atomic batch;
//! - [`Storage::unwind_to`] goes back to an earlier block; [`Storage::verify`] recomputes the
//!   root from scratch.

#![warn(missing_docs)]

mod bottom;
mod cache;
pub mod codec;
mod db;
pub mod error;
pub mod proof;
mod genesis;
mod sources;
pub mod tables;
mod trie;
mod unwind;
mod update;
mod verify;
mod warm;
mod view;

pub use db::{BlockRef, ChainIdentity, Committed, GenesisAccount, Storage, StorageOptions, SCHEMA_VERSION};
pub use error::{Result, StorageError};
pub use proof::AccountProof;
pub use update::{PreparedAccounts, StateUpdate};
pub use verify::VerifyReport;
pub use warm::WarmReport;
pub use view::StateView;
