//! `pseq bench exec`: synthetic blocks built in memory, executed on the sequential path (plain
//! revm) and on the parallel path, alternating runs, medians reported.
//!
//! Workloads (more arrive with the speed work of issue 3):
//! - `raw-transfers`: independent ETH transfers, distinct senders and recipients (1 Ggas).
//! - `erc20`: independent ERC-20 `transfer` calls on one token, distinct holders (about 1 Ggas).
//! - `hot-recipient`: ETH transfers from distinct senders all paying one address.
//! - `sequential-chain`: every transaction increments one storage slot (each depends on the last).
//! - `uniswap`: 7,150 Uniswap V3 swaps over 64 pools (see [`crate::bench_uniswap`], about 1 Ggas).
//! - `erc20-hot-recipient`: ERC-20 `transfer` calls from distinct holders, all to one holder.
//! - `contended`: families of ten accounts paying each other (nonce chains, shared recipients),
//!   with every fifth transaction incrementing one hot storage slot.

use crate::replay::{median, median_ms};
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use pseq_executor::{
    execute_block,
    revm::{
        bytecode::Bytecode,
        context::{BlockEnv, CfgEnv, TxEnv},
        primitives::hardfork::SpecId,
    },
    state::InMemoryAccount,
    BlockInput, BlockOutput, ExecutionOptions, InMemoryState,
};
use std::path::Path;

const GWEI: u128 = 1_000_000_000;
const ETHER: u128 = 1_000_000_000_000_000_000;

/// The workloads `pseq bench exec` knows.
pub const WORKLOADS: &[&str] = &["raw-transfers", "erc20", "hot-recipient", "sequential-chain", "uniswap", "erc20-hot-recipient", "contended"];

/// Pools of the `uniswap` workload.
pub const UNISWAP_POOLS: usize = 64;

/// The counter contract of `sequential-chain` and `contended`: `SSTORE(0, SLOAD(0) + 1)`.
const COUNTER_CODE: &[u8] = &[0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00];

/// The runtime code of contract `name` (a `.hex` file of the corpora's contracts folder) as
/// lower-case hex text, without `0x`.
pub fn contract_hex(contracts_dir: &Path, name: &str) -> Result<String, String> {
    let path = contracts_dir.join(format!("{name}.hex"));
    std::fs::read_to_string(&path).map(|s| s.trim().to_lowercase()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runtime code from hex text; `name` labels the error.
pub fn bytecode_from_hex(hex_text: &str, name: &str) -> Result<Bytecode, String> {
    let bytes = hex::decode(hex_text).map_err(|e| format!("{name}: {e}"))?;
    Ok(Bytecode::new_raw(Bytes::from(bytes)))
}

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
    pseq_executor::parallel::tokens::balance_slot(holder, 0)
}

/// Calldata of ERC-20 `transfer(to, amount)`.
pub fn erc20_transfer(to: Address, amount: U256) -> Bytes {
    pseq_executor::parallel::tokens::transfer_calldata(to, amount)
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
        "erc20" | "erc20-hot-recipient" => {
            let n = txs.unwrap_or(19_000);
            let token = account(888_888_888);
            let hot_holder = account(999_999_998);
            let mut storage: Vec<(U256, U256)> = Vec::new();
            for i in 0..n as u64 {
                let sender = account(i);
                funded(&mut state, sender);
                storage.push((erc20_balance_slot(sender), U256::from(1_000_000u64)));
                let to = if name == "erc20" { account(1_000_000 + i) } else { hot_holder };
                list.push(tx(sender, 0, token, U256::ZERO, erc20_transfer(to, U256::from(10u64)), 100_000));
            }
            storage.push((U256::from(2), U256::from(n as u64 * 1_000_000)));
            state.insert_account(
                token,
                InMemoryAccount { balance: U256::ZERO, nonce: 1, code: Some(bytecode_from_hex(&contract_hex(contracts_dir, "ERC20Token")?, "ERC20Token")?), storage: storage.into_iter().collect() },
            );
        }
        "uniswap" => {
            let swaps = crate::bench_uniswap::build(&mut state, contracts_dir, UNISWAP_POOLS, txs.unwrap_or(7_150))?;
            for swap in swaps {
                funded(&mut state, swap.trader);
                list.push(tx(swap.trader, 0, swap.to, U256::ZERO, swap.data, crate::bench_uniswap::SWAP_GAS_LIMIT));
            }
        }
        "contended" => {
            // Families of ten: each member pays two others of its family in turn (its second
            // payment depends on its first, and on what it received meanwhile); every fifth
            // transaction is a call from its own account to one counter.
            let n = txs.unwrap_or(30_000);
            let counter = account(777_777_777);
            state.insert_account(counter, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(COUNTER_CODE))), ..Default::default() });
            let family_size = 10u64;
            let payments = n as u64 * 4 / 5;
            let members = payments.div_ceil(2).max(1);
            for m in 0..members {
                funded(&mut state, account(m));
            }
            let mut paid = 0u64;
            let mut callers = 0u64;
            for i in 0..n as u64 {
                if i % 5 == 4 {
                    let caller = account(10_000_000 + callers);
                    callers += 1;
                    funded(&mut state, caller);
                    list.push(tx(caller, 0, counter, U256::ZERO, Bytes::new(), 60_000));
                    continue;
                }
                // Payment k: member k % members, its (k / members)-th payment, to the next
                // member of its family (the one after next on its second payment).
                let (member, nonce) = (paid % members, paid / members);
                paid += 1;
                let family = member / family_size;
                let to = account(family * family_size + (member % family_size + 1 + nonce) % family_size);
                list.push(tx(account(member), nonce, to, U256::from(1_000 + i), Bytes::new(), 21_000));
            }
        }
        "sequential-chain" => {
            let n = txs.unwrap_or(10_000);
            let counter = account(777_777_777);
            let code = Bytes::from_static(COUNTER_CODE);
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
    /// Transactions that ran but failed (reverted or halted): a workload is meant to have none.
    pub failed_txs: usize,
    /// Threads of the parallel path.
    pub threads: usize,
    /// What `sequential_ms` timed: `sequential`, or `without <techniques>` ([`Baseline`]).
    pub baseline: String,
    /// Median time of the baseline (sequential execution unless `--without`).
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

/// Times `first` and `second` one after the other, `runs` times each (at least once), and returns
/// each one's median time in milliseconds: both see the same machine state, noise included.
pub fn alternate_medians(runs: usize, mut first: impl FnMut(), mut second: impl FnMut()) -> (f64, f64) {
    let mut first_times = Vec::with_capacity(runs.max(1));
    let mut second_times = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        first_times.push(median_ms(1, &mut first));
        second_times.push(median_ms(1, &mut second));
    }
    (median(first_times), median(second_times))
}

/// What the parallel path is timed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Plain sequential revm: the speedup of the parallel path.
    Sequential,
    /// The same parallel path with these Block-STM techniques switched off (`--without`): what
    /// they buy, measured in one process, alternating, so that the machine's noise (whole runs
    /// 5% apart on the 2-core VM) falls on both sides.
    Without(pseq_executor::Techniques),
}

impl Baseline {
    /// The baseline's execution options, given the parallel path's.
    pub fn options(self, parallel: ExecutionOptions) -> ExecutionOptions {
        match self {
            Self::Sequential => ExecutionOptions::sequential(),
            Self::Without(techniques) => parallel.without(techniques),
        }
    }

    /// Checks that the baseline gives `reference` (the sequential output) on the block: nothing
    /// to run for the sequential baseline itself.
    pub fn check(self, parallel: ExecutionOptions, state: &InMemoryState, input: &BlockInput, txs: &[TxEnv], reference: &BlockOutput) -> Result<(), String> {
        if self == Self::Sequential {
            return Ok(());
        }
        let output = execute_block(state, input, txs, &self.options(parallel)).map_err(|e| format!("the parallel path {} failed: {e}", self.label()))?;
        if !output.same_result(reference) {
            return Err(format!("the parallel path {} differs from sequential ({:?})", self.label(), output.path));
        }
        Ok(())
    }

    /// How reports name the baseline: `sequential`, or `without <techniques>`.
    pub fn label(self) -> String {
        match self {
            Self::Sequential => "sequential".into(),
            Self::Without(techniques) => format!("without {}", techniques.names()),
        }
    }
}

/// Which parallel path a benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParallelPath {
    /// The default path: the partitioned path, Block-STM or sequential, by the block.
    Default,
    /// Block-STM, without the small-block fallback (`--force-parallel`).
    ForcedBlockStm,
    /// The partitioned path wherever its plan splits the block (`--partitioned`).
    Partitioned,
}

impl ParallelPath {
    /// The path the command-line flags ask for.
    pub fn from_flags(force_parallel: bool, partitioned: bool) -> Self {
        match (force_parallel, partitioned) {
            (true, _) => Self::ForcedBlockStm,
            (false, true) => Self::Partitioned,
            (false, false) => Self::Default,
        }
    }

    /// The execution options of this path on `threads` threads.
    pub fn options(self, threads: usize) -> ExecutionOptions {
        match self {
            Self::Default => ExecutionOptions::parallel(threads),
            Self::ForcedBlockStm => ExecutionOptions::force_parallel(threads),
            Self::Partitioned => ExecutionOptions::partitioned(threads),
        }
    }
}

/// Runs the workload: checks parallel == sequential once (and the baseline too), then `runs`
/// alternating timed runs of the baseline and the parallel path.
pub fn run(workload: &Workload, threads: usize, runs: usize, path: ParallelPath, baseline: Baseline) -> Result<BenchResult, String> {
    let sequential = ExecutionOptions::sequential();
    let parallel = path.options(threads);
    let baseline_options = baseline.options(parallel);
    let reference = execute_block(&workload.state, &workload.input, &workload.txs, &sequential).map_err(|e| e.to_string())?;
    let checked = execute_block(&workload.state, &workload.input, &workload.txs, &parallel).map_err(|e| e.to_string())?;
    let failed: Vec<usize> = reference.receipts.iter().zip(&reference.included).filter(|(r, _)| !r.success).map(|(_, i)| *i).collect();
    if !failed.is_empty() {
        tracing::warn!(workload = %workload.name, count = failed.len(), first = ?&failed[..failed.len().min(8)], "transactions failed");
    }
    if let Some(stats) = checked.stats {
        tracing::info!(?stats, "parallel run counters");
    }
    if !checked.same_result(&reference) {
        return Err(format!("{}: parallel result differs from sequential", workload.name));
    }
    baseline.check(parallel, &workload.state, &workload.input, &workload.txs, &reference).map_err(|e| format!("{}: {e}", workload.name))?;
    let (sequential_ms, parallel_ms) = alternate_medians(
        runs,
        || {
            let _ = execute_block(&workload.state, &workload.input, &workload.txs, &baseline_options);
        },
        || {
            let _ = execute_block(&workload.state, &workload.input, &workload.txs, &parallel);
        },
    );
    Ok(BenchResult {
        workload: workload.name.clone(),
        txs: workload.txs.len(),
        gas: reference.gas_used,
        failed_txs: reference.receipts.iter().filter(|r| !r.success).count(),
        threads,
        baseline: baseline.label(),
        sequential_ms,
        parallel_ms,
        speedup: sequential_ms / parallel_ms,
        gigagas_per_s_parallel: reference.gas_used as f64 / 1e9 / (parallel_ms / 1e3),
        peak_rss_mb: peak_rss_mb(),
    })
}
