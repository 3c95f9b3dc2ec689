//! # pseq
//!
//! The `pseq` command line: the node ([`node`]), and the runners that prove the executor exact on
//! external data: EEST state tests ([`statetest`]), EEST blockchain tests ([`blocktest`]) and
//! historical mainnet blocks ([`replay`]). Each runner prints progress and closes with a line
//! `N passed, M failed, K skipped` ([`report::Counts`]).

#![warn(missing_docs)]

pub mod bench;
pub mod bench_bound;
pub mod bench_corpus;
pub mod bench_exec;
pub mod bench_pool;
pub mod bench_state;
pub mod bench_uniswap;
pub mod blocktest;
pub mod chainspec;
pub mod chart;
pub mod corpus;
pub mod chain_import;
pub mod enginetest;
pub mod fetch;
pub use pseq_builder::import;
pub mod load;
pub mod node;
pub use pseq_config::fork;
pub mod replay;
pub mod rpc_compat;
pub mod report;
pub mod statetest;
pub mod testfiles;
