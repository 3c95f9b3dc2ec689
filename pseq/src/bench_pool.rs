//! `pseq bench pool`: the transaction pool measured.
//!
//! - Admission: `txs` signed EIP-1559 transfers from `senders` keys; decoding + sender recovery
//!   (batched over `threads` threads) + the stateless checks, median of `runs`.
//! - Ordering: a pool of 100,000 pending transactions from 10,000 senders (10 each, random tips);
//!   the time to take the first 10,000 from `best_transactions`, median of `runs`.
//! - Memory: resident memory grown by signing and pooling those transactions, per transaction
//!   (an upper bound: freed temporaries may stay resident).

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{check_stateless, recover_batch, Pool, PoolConfig, PooledTx, SenderAccount, SubPoolLimit, ValidationConfig};
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
    /// Time to take the first 10,000 of `best_transactions` over 100,000 pending (median).
    pub best_first_10k_ms: f64,
    /// Transactions in the pool of the ordering measurement.
    pub pool_txs: usize,
    /// Resident memory grown per pooled transaction while filling that pool.
    pub bytes_per_tx: f64,
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
    let admission_tx_per_s = rates[rates.len() / 2];
    drop(raws);

    // Ordering and memory: 100,000 pending transactions from 10,000 senders.
    const POOL_SENDERS: usize = 10_000;
    const PER_SENDER: usize = 10;
    let pool_keys: Vec<PrivateKeySigner> = (0..POOL_SENDERS)
        .map(|i| {
            let mut key = [0u8; 32];
            key[0] = 1;
            key[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            PrivateKeySigner::from_bytes(&B256::from(key)).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    // Memory is measured from here: the signed transactions and the pool that holds them (an
    // upper bound: the allocator may keep freed temporaries resident).
    let rss_before = current_rss_bytes();
    let mut signed = Vec::with_capacity(POOL_SENDERS * PER_SENDER);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for key in &pool_keys {
        for nonce in 0..PER_SENDER as u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let tip = 1_000_000 + u128::from(seed % 1_000_000_000);
            let tx = TxEip1559 {
                chain_id: 1,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 3_000_000_000,
                max_priority_fee_per_gas: tip,
                to: TxKind::Call(Address::with_last_byte(1)),
                value: U256::from(1),
                ..Default::default()
            };
            let signature = key.sign_hash_sync(&tx.signature_hash()).map_err(|e| e.to_string())?;
            signed.push(PooledTx::new(TxEnvelope::Eip1559(tx.into_signed(signature)), key.address()));
        }
    }
    let mut pool_config = PoolConfig::new(config.clone());
    pool_config.pending = SubPoolLimit { max_txs: 200_000, max_bytes: 1 << 30 };
    let mut pool = Pool::new(pool_config, 1_000_000_000);
    let account = SenderAccount { nonce: 0, balance: U256::from(10u128.pow(20)), code: Bytes::new() };
    let pool_txs = signed.len();
    for tx in signed {
        pool.add(tx, account.clone(), false).map_err(|e| e.to_string())?;
    }
    let bytes_per_tx = (current_rss_bytes().saturating_sub(rss_before)) as f64 / pool_txs as f64;
    if pool.status().pending != pool_txs {
        return Err(format!("{} of {pool_txs} transactions pending", pool.status().pending));
    }
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let taken = pool.best_transactions().take(10_000).count();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if taken != 10_000 {
            return Err(format!("best_transactions yielded {taken}"));
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(PoolBenchResult { txs, senders, threads, admission_tx_per_s, best_first_10k_ms: times[times.len() / 2], pool_txs, bytes_per_tx })
}

/// Resident memory of this process in bytes (Linux), 0 where unknown.
fn current_rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}
