//! Error types of the executor.

use alloy_primitives::Address;
use revm::context::result::InvalidTransaction;

/// An error raised by a [`crate::StateSource`] while reading state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct StateError(pub String);

impl revm::database::DBErrorMarker for StateError {}

/// Why a block could not be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Transaction `index` of the block is invalid against the state it runs on.
    #[error("invalid transaction {index}: {reason}")]
    InvalidTransaction {
        /// Position of the transaction in the block.
        index: usize,
        /// revm's classification of the problem.
        reason: InvalidTransaction,
    },
    /// The block's transactions need more gas than the block's gas limit allows.
    #[error("transaction {index} gas limit {gas_limit} exceeds the block's remaining gas {remaining}")]
    BlockGasLimitExceeded {
        /// Position of the transaction in the block.
        index: usize,
        /// The transaction's gas limit.
        gas_limit: u64,
        /// Gas still available in the block before this transaction.
        remaining: u64,
    },
    /// The blob gas of the block's transactions exceeds the block's blob gas limit.
    #[error("transaction {index} exceeds the block's blob gas limit")]
    BlobGasLimitExceeded {
        /// Position of the transaction in the block.
        index: usize,
    },
    /// A system call (EIP-4788, EIP-2935, EIP-7002, EIP-7251) failed.
    #[error("system call to {contract} failed: {message}")]
    SystemCall {
        /// The system contract called.
        contract: Address,
        /// What went wrong.
        message: String,
    },
    /// A deposit log of the deposit contract (EIP-6110) could not be decoded.
    #[error("invalid deposit log: {0}")]
    InvalidDepositLog(String),
    /// Reading the pre-state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The EVM reported an internal error.
    #[error("evm error: {0}")]
    Evm(String),
}
