//! `pseq bench pool`: transaction admission measured. Signs `txs` EIP-1559 transfers from
//! `senders` keys, then times decoding + sender recovery (batched over `threads` threads) + the
//! stateless checks, median of `runs`. The pool's ordering (`best_first_10k_ms`) and memory
//! (`bytes_per_tx`) come with the pool itself; until then they are reported as `null`.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{check_stateless, recover_batch, ValidationConfig};
use std::time::Instant;

/// What the pool benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolBenchResult {
    /// Transactions admitted per run.
    pub txs: usize,
    /// Distinct senders.
    pub senders: usize,
    /// Threads recovering senders.
    pub threads: usize,
    /// Transactions per second through decode + recovery + stateless checks (median run).
    pub admission_tx_per_s: f64,
    /// First 10,000 of `best_transactions` over 100,000 pending: not measured yet (no pool).
    pub best_first_10k_ms: Option<f64>,
    /// Memory per pooled transaction: not measured yet (no pool).
    pub bytes_per_tx: Option<f64>,
}

/// Runs the admission benchmark.
pub fn run(txs: usize, senders: usize, threads: usize, runs: usize) -> Result<PoolBenchResult, String> {
    let senders = senders.clamp(1, txs.max(1));
    let keys: Vec<PrivateKeySigner> = (0..senders)
        .map(|i| {
            let mut key = [0u8; 32];
            key[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            PrivateKeySigner::from_bytes(&B256::from(key)).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let raws: Vec<Bytes> = (0..txs)
        .map(|i| {
            let key = &keys[i % senders];
            let tx = TxEip1559 {
                chain_id: 1,
                nonce: (i / senders) as u64,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
                to: TxKind::Call(Address::with_last_byte(1)),
                value: U256::from(1),
                ..Default::default()
            };
            let signature = key.sign_hash_sync(&tx.signature_hash()).map_err(|e| e.to_string())?;
            Ok(Bytes::from(TxEnvelope::Eip1559(tx.into_signed(signature)).encoded_2718()))
        })
        .collect::<Result<_, String>>()?;
    let config = ValidationConfig::new(1, SpecId::PRAGUE);
    let mut rates = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let admitted = recover_batch(&raws, &config, threads).into_iter().filter(|r| r.as_ref().is_ok_and(|tx| check_stateless(tx, &config).is_ok())).count();
        let seconds = start.elapsed().as_secs_f64();
        if admitted != txs {
            return Err(format!("only {admitted} of {txs} transactions admitted"));
        }
        rates.push(txs as f64 / seconds);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    Ok(PoolBenchResult { txs, senders, threads, admission_tx_per_s: rates[rates.len() / 2], best_first_10k_ms: None, bytes_per_tx: None })
}
