//! # pseq-config
//!
//! Chain specifications: fork schedules of test networks and genesis files ([`fork`]), and
//! chain specs built from geth-format `genesis.json` files ([`genesis`]).

#![warn(missing_docs)]

pub mod fork;
pub mod genesis;

pub use fork::{Activation, BlobScheduleEntry, Network};
pub use genesis::{AllocAccount, ChainSpec};
