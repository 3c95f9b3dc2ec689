//! # pseq-config
//!
//! Chain specifications: fork schedules of test networks and genesis files ([`fork`]), and
//! chain specs built from geth-format `genesis.json` files ([`genesis`]), the built-in dev chain
//! ([`dev`]) and the node's configuration from flags, a TOML file and environment ([`node`]).

#![warn(missing_docs)]

pub mod dev;
pub mod fork;
pub mod fork_id;
pub mod genesis;
pub mod node;

pub use fork_id::ForkPoints;
pub use fork::{Activation, BlobScheduleEntry, Network};
pub use genesis::{AllocAccount, ChainSpec};
pub use node::{MiningMode, NodeConfig};
