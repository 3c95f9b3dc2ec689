//! # pseq-executor
//!
//! The block executor of pseq: one set of block-level rules (system calls, rewards, withdrawals,
//! requests) around interchangeable transaction-execution paths.
//!
//! - [`sequential`]: plain revm 43, transaction after transaction, over an in-memory overlay of the
//!   block's writes. It is the oracle every test compares against and the fallback.
//! - [`parallel`]: Block-STM (multi-version memory, collaborative scheduler, incarnations, ESTIMATE
//!   markers, validation by re-reading) with *lazy* balance updates: the fee paid to the block's
//!   beneficiary, plain ETH transfers between accounts without code, and `transfer` credits to the
//!   holders of recognised ERC-20 tokens ([`parallel::tokens`]) are written as commutative deltas,
//!   so they do not serialise the block. A delta is evaluated to an exact value only where a
//!   transaction reads that balance explicitly, and at the end of the block.
//! - [`partition`]: where the transactions' senders and recipients split a block into
//!   independent groups, each group runs sequentially on its own thread, and the groups are
//!   checked against each other afterwards; a wrong split is thrown away for Block-STM.
//!
//! Invariant: for every block, [`execute_block`] returns exactly the same receipts, gas and
//! [`StateDiff`] whichever path runs. The executor knows nothing of storage, RPC or async: it reads a
//! [`StateSource`] and returns results.

#![warn(missing_docs)]

pub mod block;
pub mod diff;
pub mod error;
pub mod evm;
pub mod overlay;
pub mod parallel;
pub mod partition;
pub mod receipt;
pub mod rules;
pub mod sequential;
pub mod session;
pub mod state;
mod threads;

pub use block::{execute_block, BlockInput, BlockRules, BlockOutput, ExecutionMode, ExecutionOptions, InvalidTxPolicy, Ommer, Techniques, Withdrawal};
pub use diff::{AccountDiff, AccountState, StateDiff};
pub use error::{BlockError, StateError};
pub use session::{AppendOutcome, BlockSession};
pub use receipt::{logs_bloom, receipts_root, TxReceipt};
pub use state::{account_info, empty_code, InMemoryState, StateSource};
pub use threads::map_on_threads;

pub use revm;
