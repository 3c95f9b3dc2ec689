//! `pseq bench exec`: synthetic blocks built in memory, executed on the sequential path (plain
//! revm) and on the parallel path, alternating runs, medians reported.
//!
//! Workloads (more arrive with the speed work of issue 3):
//! - `raw-transfers`: independent ETH transfers, distinct senders and recipients (1 Ggas).
//! - `erc20`: independent ERC-20 `transfer` calls on one token, distinct holders (about 1 Ggas).
//! - `hot-recipient`: ETH transfers from distinct senders all paying one address.
//! - `sequential-chain`: every transaction increments one storage slot (each depends on the last).

use crate::replay::median_ms;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, B256, U256};
use pseq_executor::{
    execute_block,
    revm::{
        bytecode::Bytecode,
        context::{BlockEnv, CfgEnv, TxEnv},
        primitives::hardfork::SpecId,
    },
    state::InMemoryAccount,
    BlockInput, ExecutionOptions, InMemoryState,
};
use std::path::Path;

const GWEI: u128 = 1_000_000_000;
const ETHER: u128 = 1_000_000_000_000_000_000;

/// The workloads `pseq bench exec` knows.
pub const WORKLOADS: &[&str] = &["raw-transfers", "erc20", "hot-recipient", "sequential-chain"];

/// A synthetic block: pre-state, environment, transactions.
pub struct Workload {
    /// Workload name.
    pub name: String,
    /// Pre-state.
    pub state: InMemoryState,
    /// Block environment.
    pub input: BlockInput,
    /// Transactions.
    pub txs: Vec<TxEnv>,
}

fn account(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0x10;
    bytes[4..12].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

fn block_input() -> BlockInput {
    let mut cfg = CfgEnv::default();
    cfg.chain_id = 1;
    cfg.set_spec_and_mainnet_gas_params(SpecId::CANCUN);
    let block = BlockEnv {
        number: U256::from(1),
        beneficiary: Address::repeat_byte(0xbe),
        timestamp: U256::from(1_710_338_135u64),
        gas_limit: 1_100_000_000,
        basefee: GWEI as u64,
        prevrandao: Some(B256::ZERO),
        ..Default::default()
    };
    BlockInput::new(cfg, block)
}

fn tx(caller: Address, nonce: u64, to: Address, value: U256, data: Bytes, gas_limit: u64) -> TxEnv {
    TxEnv {
        tx_type: 2,
        caller,
        gas_limit,
        gas_price: 3 * GWEI,
        gas_priority_fee: Some(GWEI),
        kind: TxKind::Call(to),
        value,
        data,
        nonce,
        chain_id: Some(1),
        ..Default::default()
    }
}

fn funded(state: &mut InMemoryState, address: Address) {
    state.insert_account(address, InMemoryAccount { balance: U256::from(1_000 * ETHER), ..Default::default() });
}

/// The `_balances` slot of `holder` in ERC20Token (mapping at slot 0).
pub fn erc20_balance_slot(holder: Address) -> U256 {
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(holder.as_slice());
    U256::from_be_bytes(keccak256(key).0)
}

/// Calldata of ERC-20 `transfer(to, amount)`.
pub fn erc20_transfer(to: Address, amount: U256) -> Bytes {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&[0xa9, 0x05, 0x9c, 0xbb]);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(to.as_slice());
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    Bytes::from(data)
}

/// Builds workload `name` with `txs` transactions (`None`: its default size).
pub fn build(name: &str, txs: Option<usize>, contracts_dir: &Path) -> Result<Workload, String> {
    let mut state = InMemoryState::new();
    let input = block_input();
    let mut list = Vec::new();
    match name {
        "raw-transfers" => {
            let n = txs.unwrap_or(47_620);
            for i in 0..n as u64 {
                let sender = account(i);
                funded(&mut state, sender);
                list.push(tx(sender, 0, account(1_000_000 + i), U256::from(1), Bytes::new(), 21_000));
            }
        }
        "hot-recipient" => {
            let n = txs.unwrap_or(47_620);
            let exchange = account(999_999_999);
            for i in 0..n as u64 {
                let sender = account(i);
                funded(&mut state, sender);
                list.push(tx(sender, 0, exchange, U256::from(1 + i), Bytes::new(), 21_000));
            }
        }
        "erc20" => {
            let n = txs.unwrap_or(19_000);
            let path = contracts_dir.join("ERC20Token.hex");
            let hex_code = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let code = Bytes::from(hex::decode(hex_code.trim()).map_err(|e| format!("{}: {e}", path.display()))?);
            let token = account(888_888_888);
            let mut storage: Vec<(U256, U256)> = Vec::new();
            for i in 0..n as u64 {
                let sender = account(i);
                funded(&mut state, sender);
                storage.push((erc20_balance_slot(sender), U256::from(1_000_000u64)));
                list.push(tx(sender, 0, token, U256::ZERO, erc20_transfer(account(1_000_000 + i), U256::from(10u64)), 100_000));
            }
            storage.push((U256::from(2), U256::from(n as u64 * 1_000_000)));
            state.insert_account(
                token,
                InMemoryAccount { balance: U256::ZERO, nonce: 1, code: Some(Bytecode::new_raw(code)), storage: storage.into_iter().collect() },
            );
        }
        "sequential-chain" => {
            let n = txs.unwrap_or(10_000);
            let counter = account(777_777_777);
            let code = Bytes::from_static(&[0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00]);
            state.insert_account(counter, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(code)), ..Default::default() });
            for i in 0..n as u64 {
                let sender = account(i);
                funded(&mut state, sender);
                list.push(tx(sender, 0, counter, U256::ZERO, Bytes::new(), 60_000));
            }
        }
        other => return Err(format!("unknown workload {other:?}; known: {}", WORKLOADS.join(", "))),
    }
    Ok(Workload { name: name.to_string(), state, input, txs: list })
}

/// The result of benchmarking one workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// Workload name.
    pub workload: String,
    /// Transactions in the block.
    pub txs: usize,
    /// Gas used by the block.
    pub gas: u64,
    /// Threads of the parallel path.
    pub threads: usize,
    /// Median sequential time.
    pub sequential_ms: f64,
    /// Median parallel time.
    pub parallel_ms: f64,
    /// sequential_ms / parallel_ms.
    pub speedup: f64,
    /// Gas per second of the parallel path, in Ggas/s.
    pub gigagas_per_s_parallel: f64,
    /// Peak resident memory of the process so far.
    pub peak_rss_mb: f64,
}

/// Peak resident set size of this process in MiB (Linux), 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Runs the workload: checks parallel == sequential once, then `runs` alternating timed runs.
pub fn run(workload: &Workload, threads: usize, runs: usize, force_parallel: bool) -> Result<BenchResult, String> {
    let sequential = ExecutionOptions::sequential();
    let parallel = if force_parallel { ExecutionOptions::force_parallel(threads) } else { ExecutionOptions::parallel(threads) };
    let reference = execute_block(&workload.state, &workload.input, &workload.txs, &sequential).map_err(|e| e.to_string())?;
    let checked = execute_block(&workload.state, &workload.input, &workload.txs, &parallel).map_err(|e| e.to_string())?;
    if let Some(stats) = checked.stats {
        tracing::info!(?stats, "parallel run counters");
    }
    if !checked.same_result(&reference) {
        return Err(format!("{}: parallel result differs from sequential", workload.name));
    }
    let mut sequential_times = Vec::new();
    let mut parallel_times = Vec::new();
    for _ in 0..runs.max(1) {
        sequential_times.push(median_ms(1, || {
            let _ = execute_block(&workload.state, &workload.input, &workload.txs, &sequential);
        }));
        parallel_times.push(median_ms(1, || {
            let _ = execute_block(&workload.state, &workload.input, &workload.txs, &parallel);
        }));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let sequential_ms = median(sequential_times);
    let parallel_ms = median(parallel_times);
    Ok(BenchResult {
        workload: workload.name.clone(),
        txs: workload.txs.len(),
        gas: reference.gas_used,
        threads,
        sequential_ms,
        parallel_ms,
        speedup: sequential_ms / parallel_ms,
        gigagas_per_s_parallel: reference.gas_used as f64 / 1e9 / (parallel_ms / 1e3),
        peak_rss_mb: peak_rss_mb(),
    })
}
