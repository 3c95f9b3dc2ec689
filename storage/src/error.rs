//! Errors of the storage layer.

use alloy_primitives::B256;

/// Why a storage operation failed. Nothing is written when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB itself failed (I/O error, full or read-only disk, corruption it detected).
    #[error("database: {0}")]
    Db(#[from] rocksdb::Error),
    /// A stored value does not decode: the datadir is corrupt or was written by something else.
    #[error("corrupt database: {0}")]
    Corrupt(String),
    /// The datadir belongs to another chain (genesis hash or chain id differ).
    #[error("datadir belongs to another chain: {0}")]
    WrongChain(String),
    /// The datadir was written with another schema version.
    #[error("datadir schema version {found}, this build reads version {expected}")]
    WrongSchema {
        /// Version found in the datadir.
        found: u32,
        /// Version this build reads and writes.
        expected: u32,
    },
    /// The datadir holds no chain yet (open it with a genesis first).
    #[error("datadir {0} is not initialised (no genesis)")]
    NotInitialised(String),
    /// A computed state root differs from the one a header commits to.
    #[error("state root mismatch: computed {computed}, header {expected}")]
    StateRootMismatch {
        /// Root computed from the state.
        computed: B256,
        /// Root the header names.
        expected: B256,
    },
    /// A block does not extend the current head.
    #[error("block {number} ({hash}) does not extend the head {head_number} ({head_hash})")]
    NotOnHead {
        /// Number of the block.
        number: u64,
        /// Hash of the block.
        hash: B256,
        /// Current head number.
        head_number: u64,
        /// Current head hash.
        head_hash: B256,
    },
    /// A state update was prepared on another head than the one it is committed on.
    #[error("state update was prepared on block {prepared}, head is {head}")]
    StaleUpdate {
        /// Head the update was computed on.
        prepared: u64,
        /// Current head.
        head: u64,
    },
    /// An unwind or historical read asked for a block the store does not have.
    #[error("block {0} is not available")]
    UnknownBlock(u64),
}

impl StorageError {
    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}

/// Result of storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
