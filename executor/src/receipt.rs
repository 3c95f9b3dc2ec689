//! Transaction receipts and the roots and blooms computed from them.

use alloy_consensus::{Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxType};
use alloy_primitives::{Bloom, Log, B256};

/// The receipt of one executed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReceipt {
    /// EIP-2718 type of the transaction.
    pub tx_type: u8,
    /// Whether execution succeeded (EIP-658 status).
    pub success: bool,
    /// Gas used by this transaction.
    pub gas_used: u64,
    /// Gas used by the block up to and including this transaction.
    pub cumulative_gas_used: u64,
    /// Logs emitted.
    pub logs: Vec<Log>,
    /// State root after this transaction; only for pre-Byzantium receipts, when the caller asked
    /// for intermediate roots.
    pub post_state: Option<B256>,
}

impl TxReceipt {
    /// The bloom filter of this receipt's logs.
    pub fn bloom(&self) -> Bloom {
        logs_bloom(&self.logs)
    }

    /// The consensus envelope of this receipt, as hashed into the receipts root.
    pub fn envelope(&self) -> ReceiptEnvelope {
        let status = match self.post_state {
            Some(root) => Eip658Value::PostState(root),
            None => Eip658Value::Eip658(self.success),
        };
        let receipt = Receipt { status, cumulative_gas_used: self.cumulative_gas_used, logs: self.logs.clone() };
        let with_bloom = ReceiptWithBloom { receipt, logs_bloom: self.bloom() };
        match TxType::try_from(self.tx_type).unwrap_or(TxType::Legacy) {
            TxType::Legacy => ReceiptEnvelope::Legacy(with_bloom),
            TxType::Eip2930 => ReceiptEnvelope::Eip2930(with_bloom),
            TxType::Eip1559 => ReceiptEnvelope::Eip1559(with_bloom),
            TxType::Eip4844 => ReceiptEnvelope::Eip4844(with_bloom),
            TxType::Eip7702 => ReceiptEnvelope::Eip7702(with_bloom),
        }
    }
}

/// The bloom filter over a list of logs.
pub fn logs_bloom<'a>(logs: impl IntoIterator<Item = &'a Log>) -> Bloom {
    let mut bloom = Bloom::ZERO;
    for log in logs {
        bloom.accrue_log(log);
    }
    bloom
}

/// The receipts root of a block (ordered trie of EIP-2718 encoded receipts).
pub fn receipts_root(receipts: &[TxReceipt]) -> B256 {
    let envelopes: Vec<ReceiptEnvelope> = receipts.iter().map(TxReceipt::envelope).collect();
    alloy_consensus::proofs::ordered_trie_root_with_encoder(&envelopes, |r, buf| {
        alloy_eips::eip2718::Encodable2718::encode_2718(r, buf)
    })
}
