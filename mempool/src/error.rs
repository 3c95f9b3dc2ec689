//! Why a transaction is not admitted. The messages are geth's, word for word (`core/error.go`,
//! `core/txpool/errors.go`): wallets and libraries (viem, ethers, cast, web3.py) classify errors
//! by these strings, so the RPC layer passes them through unchanged as JSON-RPC errors (-32000).

/// A rejected transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The bytes are not an EIP-2718 transaction (RLP error, unknown type, trailing bytes).
    #[error("failed to decode signed transaction: {0}")]
    Decode(String),
    /// The encoded transaction is larger than the pool accepts.
    #[error("oversized data")]
    OversizedData,
    /// The transaction type is not enabled on this chain or fork.
    #[error("transaction type not supported")]
    TxTypeNotSupported,
    /// The signature does not recover to a sender.
    #[error("invalid sender")]
    InvalidSender,
    /// The transaction is signed for another chain.
    #[error("invalid chain id for signer")]
    InvalidChainId,
    /// The gas limit is above the block gas limit.
    #[error("exceeds block gas limit")]
    ExceedsBlockGasLimit,
    /// The gas limit does not cover the intrinsic gas (or the EIP-7623 calldata floor).
    #[error("intrinsic gas too low")]
    IntrinsicGasTooLow,
    /// A contract creation with init code above the EIP-3860 limit.
    #[error("max initcode size exceeded")]
    MaxInitCodeSizeExceeded,
    /// The priority fee is above the fee cap.
    #[error("max priority fee per gas higher than max fee per gas")]
    TipAboveFeeCap,
    /// The fee cap is below the pool's minimum.
    #[error("transaction underpriced")]
    Underpriced,
    /// The fee cap is below the base fee of the block being built (where the pool rejects
    /// instead of parking).
    #[error("max fee per gas less than block base fee")]
    FeeCapBelowBaseFee,
    /// The nonce is below the sender's account nonce.
    #[error("nonce too low")]
    NonceTooLow,
    /// The nonce is too far above the sender's account nonce.
    #[error("nonce too high")]
    NonceTooHigh,
    /// The nonce is 2^64-1 (it could never be followed).
    #[error("nonce has max value")]
    NonceMax,
    /// The balance does not cover value + gas limit x fee cap (+ blob gas).
    #[error("insufficient funds for gas * price + value")]
    InsufficientFunds,
    /// gas limit x fee cap overflows 256 bits.
    #[error("gas uint64 overflow")]
    GasUintOverflow,
    /// The sender has code that is not an EIP-7702 delegation.
    #[error("sender not an eoa")]
    SenderNotEoa,
    /// The pool already holds this transaction.
    #[error("already known")]
    AlreadyKnown,
    /// A same-sender same-nonce replacement without the required fee bump.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The sender has as many transactions in the pool as it may.
    #[error("account limit exceeded")]
    AccountLimitExceeded,
    /// The pool is full and the transaction is not better than what it would evict.
    #[error("txpool is full")]
    TxPoolFull,
    /// A blob transaction cannot create a contract.
    #[error("blob transaction of type create")]
    BlobCreate,
    /// A blob transaction without blob hashes.
    #[error("blob transaction missing blob hashes")]
    BlobMissingHashes,
    /// A blob transaction sent without its blobs (its canonical, block form).
    #[error("missing sidecar in blob transaction")]
    BlobMissingSidecar,
    /// More blobs than one transaction may carry.
    #[error("too many blobs in transaction: have {have}, permitted {max}")]
    TooManyBlobs {
        /// Blobs in the transaction.
        have: usize,
        /// The limit.
        max: usize,
    },
    /// The sidecar does not match the transaction or its proofs do not verify.
    #[error("invalid blob sidecar: {0}")]
    BlobSidecar(String),
    /// The blob fee cap is below the current blob base fee.
    #[error("max fee per blob gas less than block blob gas fee")]
    BlobFeeCapTooLow,
    /// The node could not read the sender's account (a storage error).
    #[error("internal error: {0}")]
    Internal(String),
}
