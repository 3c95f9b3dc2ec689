//! Stored blocks, transactions and receipts turned into their JSON-RPC shapes
//! (alloy-rpc-types-eth), with the fields only a node knows: hashes, indexes, senders, effective
//! gas prices, contract addresses and block-wide log indexes.

use alloy_consensus::{transaction::SignerRecoverable, BlockBody, Header, ReceiptEnvelope, Transaction as _, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, U256};
use alloy_rlp::Encodable;
use alloy_rpc_types_eth::{Block, BlockTransactions, Log, Transaction, TransactionReceipt};
use pseq_storage::Storage;

/// A block as stored: header, hash, body and receipts.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    /// The header.
    pub header: Header,
    /// Its hash.
    pub hash: B256,
    /// Transactions (and withdrawals).
    pub body: BlockBody<TxEnvelope>,
    /// Senders not given by the signatures (impersonated accounts), by transaction index.
    pub sender_overrides: Vec<(u32, Address)>,
}

impl StoredBlock {
    /// Loads a block by hash.
    pub fn load(storage: &Storage, hash: B256) -> Result<Option<Self>, String> {
        let Some(header) = storage.header(&hash).map_err(|e| e.to_string())? else { return Ok(None) };
        let body = storage.body(&hash).map_err(|e| e.to_string())?.unwrap_or_default();
        let sender_overrides = storage.sender_overrides(&hash).map_err(|e| e.to_string())?;
        Ok(Some(Self { header, hash, body, sender_overrides }))
    }

    /// Loads a canonical block by number.
    pub fn load_number(storage: &Storage, number: u64) -> Result<Option<Self>, String> {
        match storage.canonical_hash(number).map_err(|e| e.to_string())? {
            Some(hash) => Self::load(storage, hash),
            None => Ok(None),
        }
    }

    /// Senders of the transactions, in order.
    pub fn senders(&self) -> Vec<Address> {
        let mut senders: Vec<Address> = self.body.transactions.iter().map(|tx| tx.recover_signer().unwrap_or_default()).collect();
        for (index, sender) in &self.sender_overrides {
            if let Some(slot) = senders.get_mut(*index as usize) {
                *slot = *sender;
            }
        }
        senders
    }

    /// The sender of transaction `index` alone (one signature recovery, not the block's).
    pub fn sender(&self, index: usize) -> Option<Address> {
        if let Some((_, sender)) = self.sender_overrides.iter().find(|(i, _)| *i as usize == index) {
            return Some(*sender);
        }
        Some(self.body.transactions.get(index)?.recover_signer().unwrap_or_default())
    }

    /// Transaction `index` in its RPC shape.
    pub fn rpc_transaction(&self, index: usize, sender: Address) -> Option<Transaction> {
        let tx = self.body.transactions.get(index)?;
        Some(rpc_transaction(tx.clone(), sender, Some((self.hash, self.header.number, index as u64, self.header.base_fee_per_gas, self.header.timestamp))))
    }

    /// The block in its RPC shape, with full transactions or their hashes.
    pub fn rpc_block(&self, full: bool) -> Block {
        let transactions = if full {
            let senders = self.senders();
            BlockTransactions::Full((0..self.body.transactions.len()).filter_map(|i| self.rpc_transaction(i, senders[i])).collect())
        } else {
            BlockTransactions::Hashes(self.body.transactions.iter().map(|tx| *tx.tx_hash()).collect())
        };
        let size = self.rlp_size();
        let mut header = alloy_rpc_types_eth::Header::new(self.header.clone());
        header.hash = self.hash;
        header.size = Some(U256::from(size));
        let uncles = self.body.ommers.iter().map(Header::hash_slow).collect();
        Block { header, uncles, transactions, withdrawals: self.body.withdrawals.clone() }
    }

    fn rlp_size(&self) -> usize {
        let block = alloy_consensus::Block { header: self.header.clone(), body: self.body.clone() };
        block.length()
    }

    /// The receipts in their RPC shape (`eth_getBlockReceipts`); `blob_gas_price` is the block's
    /// blob base fee (Cancun on).
    pub fn rpc_receipts(&self, receipts: &[ReceiptEnvelope], blob_gas_price: Option<u128>) -> Vec<TransactionReceipt> {
        let senders = self.senders();
        let mut log_index = 0u64;
        let mut out = Vec::with_capacity(receipts.len());
        for i in 0..receipts.len().min(self.body.transactions.len()) {
            let sender = senders.get(i).copied().unwrap_or_default();
            out.push(self.receipt_at(i, receipts, sender, log_index, blob_gas_price));
            log_index += receipts[i].logs().len() as u64;
        }
        out
    }

    /// The receipt of transaction `index` alone (`eth_getTransactionReceipt`: one sender
    /// recovered, the log index offset counted from the earlier receipts).
    pub fn rpc_receipt(&self, index: usize, receipts: &[ReceiptEnvelope], blob_gas_price: Option<u128>) -> Option<TransactionReceipt> {
        if index >= receipts.len() || index >= self.body.transactions.len() {
            return None;
        }
        let log_index = receipts[..index].iter().map(|r| r.logs().len() as u64).sum();
        Some(self.receipt_at(index, receipts, self.sender(index)?, log_index, blob_gas_price))
    }

    fn receipt_at(&self, i: usize, receipts: &[ReceiptEnvelope], sender: Address, first_log_index: u64, blob_gas_price: Option<u128>) -> TransactionReceipt {
        let receipt = &receipts[i];
        let tx = &self.body.transactions[i];
        let previous_gas = if i == 0 { 0 } else { receipts[i - 1].cumulative_gas_used() };
        let gas_used = receipt.cumulative_gas_used().saturating_sub(previous_gas);
        let tx_hash = *tx.tx_hash();
        let (hash, number, timestamp) = (self.hash, self.header.number, self.header.timestamp);
        let mut log_index = first_log_index;
        let inner = receipt.clone().map_logs(|log| {
            let rpc = Log {
                inner: log,
                block_hash: Some(hash),
                block_number: Some(number),
                block_timestamp: Some(timestamp),
                transaction_hash: Some(tx_hash),
                transaction_index: Some(i as u64),
                log_index: Some(log_index),
                removed: false,
            };
            log_index += 1;
            rpc
        });
        let contract_address = tx.to().is_none().then(|| sender.create(tx.nonce()));
        let base_fee = self.header.base_fee_per_gas;
        TransactionReceipt {
            inner,
            transaction_hash: tx_hash,
            transaction_index: Some(i as u64),
            block_hash: Some(self.hash),
            block_number: Some(self.header.number),
            gas_used,
            effective_gas_price: tx.effective_gas_price(base_fee),
            blob_gas_used: tx.blob_gas_used(),
            blob_gas_price: tx.blob_gas_used().and(blob_gas_price),
            from: sender,
            to: tx.to(),
            contract_address,
        }
    }

    /// Whether `index` is a valid transaction index of this block.
    pub fn has_tx(&self, index: usize) -> bool {
        index < self.body.transactions.len()
    }

    /// The EIP-2718 encoding of transaction `index` (`debug_getRawTransaction`).
    pub fn raw_transaction(&self, index: usize) -> Option<Vec<u8>> {
        self.body.transactions.get(index).map(|tx| tx.encoded_2718())
    }
}

/// A transaction in its RPC shape; `location` is (block hash, number, index, base fee,
/// timestamp) for a mined one.
pub fn rpc_transaction(tx: TxEnvelope, sender: Address, location: Option<(B256, u64, u64, Option<u64>, u64)>) -> Transaction {
    let effective_gas_price = location.map(|(_, _, _, base_fee, _)| tx.effective_gas_price(base_fee));
    Transaction {
        inner: alloy_consensus::transaction::Recovered::new_unchecked(tx, sender),
        block_hash: location.map(|l| l.0),
        block_number: location.map(|l| l.1),
        transaction_index: location.map(|l| l.2),
        effective_gas_price,
        block_timestamp: location.map(|l| l.4),
    }
}
