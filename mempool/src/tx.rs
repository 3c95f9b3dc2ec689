//! [`PooledTx`]: a decoded, sender-recovered transaction with the numbers the pool orders and
//! checks by.

use alloy_consensus::{EthereumTxEnvelope, Signed, Transaction, TxEip4844WithSidecar, TxEnvelope};
use alloy_eips::{
    eip2718::{Encodable2718, Typed2718},
    eip7594::BlobTransactionSidecarVariant,
};
use alloy_primitives::{Address, Bytes, B256, U256};
use std::sync::Arc;

/// A transaction the pool can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledTx {
    /// The signed transaction.
    pub envelope: TxEnvelope,
    /// Its hash.
    pub hash: B256,
    /// The recovered sender.
    pub sender: Address,
    /// Length of its EIP-2718 encoding (without a blob sidecar).
    pub encoded_len: usize,
    /// The blobs, commitments and proofs of a blob transaction (EIP-4844 or EIP-7594 form), as
    /// submitted; not part of the transaction's hash or of the block.
    pub sidecar: Option<Arc<BlobTransactionSidecarVariant>>,
    /// Sent for an impersonated account (dev mode): the signature is a placeholder and the
    /// sender was given, not recovered.
    pub impersonated: bool,
    /// [`Self::max_cost`], computed once (admission and every re-classification read it).
    cost: Option<U256>,
}

impl PooledTx {
    /// Wraps a transaction whose sender is known.
    pub fn new(envelope: TxEnvelope, sender: Address) -> Self {
        let hash = *envelope.tx_hash();
        let encoded_len = envelope.encode_2718_len();
        let cost = Self::cost_of(&envelope);
        Self { envelope, hash, sender, encoded_len, cost, sidecar: None, impersonated: false }
    }

    /// Attaches a blob transaction's sidecar.
    pub fn with_sidecar(mut self, sidecar: BlobTransactionSidecarVariant) -> Self {
        self.sidecar = Some(Arc::new(sidecar));
        self
    }

    /// The encoding `eth_sendRawTransaction` takes: EIP-2718, with a blob transaction's sidecar
    /// in the network form (`0x03 ‖ rlp([tx, (version,) blobs, commitments, proofs])`).
    pub fn network_encoding(&self) -> Bytes {
        match (&self.envelope, &self.sidecar) {
            (TxEnvelope::Eip4844(signed), Some(sidecar)) => {
                let with_sidecar = TxEip4844WithSidecar { tx: signed.tx().tx().clone(), sidecar: (**sidecar).clone() };
                let pooled: EthereumTxEnvelope<TxEip4844WithSidecar<BlobTransactionSidecarVariant>> =
                    Signed::new_unchecked(with_sidecar, *signed.signature(), *signed.hash()).into();
                pooled.encoded_2718().into()
            }
            _ => self.envelope.encoded_2718().into(),
        }
    }

    /// Bytes the transaction takes in the pool, its sidecar included.
    pub fn pooled_size(&self) -> usize {
        self.encoded_len + self.sidecar.as_ref().map_or(0, |s| s.size())
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

