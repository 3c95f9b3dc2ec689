//! [`PooledTx`]: a decoded, sender-recovered transaction with the numbers the pool orders and
//! checks by.

use alloy_consensus::{Transaction, TxEnvelope};
use alloy_eips::eip2718::{Encodable2718, Typed2718};
use alloy_primitives::{Address, B256, U256};

/// A transaction the pool can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledTx {
    /// The signed transaction.
    pub envelope: TxEnvelope,
    /// Its hash.
    pub hash: B256,
    /// The recovered sender.
    pub sender: Address,
    /// Length of its EIP-2718 encoding.
    pub encoded_len: usize,
    /// [`Self::max_cost`], computed once (admission and every re-classification read it).
    cost: Option<U256>,
}

impl PooledTx {
    /// Wraps a transaction whose sender is known.
    pub fn new(envelope: TxEnvelope, sender: Address) -> Self {
        let hash = *envelope.tx_hash();
        let encoded_len = envelope.encode_2718_len();
        let cost = Self::cost_of(&envelope);
        Self { envelope, hash, sender, encoded_len, cost }
    }

    /// Nonce.
    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }

    /// Gas limit.
    pub fn gas_limit(&self) -> u64 {
        self.envelope.gas_limit()
    }

    /// Fee cap: max fee per gas, or the gas price of legacy and access-list transactions.
    pub fn max_fee_per_gas(&self) -> u128 {
        self.envelope.max_fee_per_gas()
    }

    /// Priority fee cap (`None` for legacy and access-list transactions, whose whole gas price
    /// is the tip).
    pub fn max_priority_fee_per_gas(&self) -> Option<u128> {
        self.envelope.max_priority_fee_per_gas()
    }

    /// EIP-2718 type.
    pub fn tx_type(&self) -> u8 {
        self.envelope.ty()
    }

    /// The most the sender can be charged: value + gas limit x fee cap + blob gas x blob fee
    /// cap; `None` when that overflows 256 bits.
    pub fn max_cost(&self) -> Option<U256> {
        self.cost
    }

    fn cost_of(envelope: &TxEnvelope) -> Option<U256> {
        let gas = U256::from(envelope.gas_limit()).checked_mul(U256::from(envelope.max_fee_per_gas()))?;
        let blob_gas = envelope.blob_gas_used().unwrap_or_default();
        let blob = U256::from(blob_gas).checked_mul(U256::from(envelope.max_fee_per_blob_gas().unwrap_or_default()))?;
        gas.checked_add(blob)?.checked_add(envelope.value())
    }

    /// The tip per gas a block with this base fee earns from the transaction; `None` when the
    /// fee cap is below the base fee.
    pub fn effective_tip(&self, base_fee: u64) -> Option<u128> {
        let fee_cap = self.max_fee_per_gas();
        let base_fee = u128::from(base_fee);
        if fee_cap < base_fee {
            return None;
        }
        let headroom = fee_cap - base_fee;
        Some(self.max_priority_fee_per_gas().map_or(headroom, |tip| tip.min(headroom)))
    }
}
