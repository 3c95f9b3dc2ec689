//! [`BuildError`]: why a block could not be built or committed.

/// A failed block build.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading or writing the datadir failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The chain spec does not describe the next block (unknown fork, bad timestamp).
    #[error("chain: {0}")]
    Chain(String),
    /// A block given to import is invalid (the reason).
    #[error("invalid block: {0}")]
    Invalid(String),
    /// The executor failed (a storage read error or a broken system contract).
    #[error("execution: {0}")]
    Execution(String),
}

impl From<pseq_storage::StorageError> for BuildError {
    fn from(e: pseq_storage::StorageError) -> Self {
        BuildError::Storage(e.to_string())
    }
}
