//! Admission parameters, with reth's defaults (`crates/transaction-pool/src/config.rs`).

use pseq_executor::revm::primitives::hardfork::SpecId;

/// Largest encoded transaction accepted (reth's `DEFAULT_MAX_TX_INPUT_BYTES`, 4 x 32 KiB).
pub const DEFAULT_MAX_TX_BYTES: usize = 128 * 1024;
/// Lowest fee cap accepted (reth's `MIN_PROTOCOL_BASE_FEE`, 7 wei).
pub const MIN_PROTOCOL_BASE_FEE: u128 = 7;
/// Replacement fee bump in percent (geth and reth).
pub const DEFAULT_PRICE_BUMP: u128 = 10;
/// Replacement fee bump for blob transactions (reth).
pub const BLOB_PRICE_BUMP: u128 = 100;
/// Transactions per sender (geth `AccountSlots`, reth `max_account_slots`).
pub const DEFAULT_ACCOUNT_SLOTS: usize = 16;

/// What admission checks against.
#[derive(Debug, Clone)]
pub struct ValidationConfig {
    /// EIP-155 chain id the transactions must carry (legacy unprotected ones are accepted).
    pub chain_id: u64,
    /// The fork of the next block (intrinsic gas, init code limit, enabled types).
    pub spec: SpecId,
    /// Block gas limit; a transaction may not ask for more.
    pub block_gas_limit: u64,
    /// Largest encoded transaction.
    pub max_tx_bytes: usize,
    /// Lowest fee cap (max fee per gas, or gas price) the pool accepts.
    pub min_fee_cap: u128,
    /// Whether EIP-4844 blob transactions are accepted (L1-style chains only).
    pub blobs_enabled: bool,
    /// Most blobs one transaction may carry (EIP-7594 caps it at 6 from Osaka on).
    pub max_blobs_per_tx: usize,
    /// How far above the account nonce a transaction may be (a gap this large is refused).
    pub max_nonce_gap: u64,
}

impl ValidationConfig {
    /// Defaults for a chain: the given chain id and fork, a 30M gas limit, reth's limits.
    pub fn new(chain_id: u64, spec: SpecId) -> Self {
        Self {
            chain_id,
            spec,
            block_gas_limit: 30_000_000,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
            min_fee_cap: MIN_PROTOCOL_BASE_FEE,
            blobs_enabled: true,
            max_blobs_per_tx: 6,
            max_nonce_gap: 1 << 16,
        }
    }
}
