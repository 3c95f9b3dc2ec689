//! # pseq-rpc
//!
//! The node's JSON-RPC surface over HTTP and WebSocket (jsonrpsee): the `eth_` methods users'
//! tools call (state reads at any block, blocks, transactions, receipts, logs, calls, gas
//! estimates, fee suggestions, submission), `net_`, `web3_`, `txpool_`, raw `debug_getRaw*`
//! encodings, WebSocket subscriptions, and the dev namespace (`evm_`, `anvil_`, `hardhat_`)
//! with `--dev`. Errors use the JSON-RPC codes and geth's messages. Also the `/metrics` and
//! `/health` endpoints.

#![warn(missing_docs)]

pub mod call;
pub mod chain;
pub mod chain_config;
pub mod context;
pub mod convert;
pub mod cors;
pub mod dev;
pub mod engine;
pub mod error;
pub mod fees;
pub mod jwt;
pub mod filters;
pub mod pubsub;
pub mod send;
pub mod server;
pub mod state;
pub mod trace;
pub mod txpool;

pub use context::RpcContext;
pub use server::{engine_module, module, start_engine, start_metrics, start_rpc};
