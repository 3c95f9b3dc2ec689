//! `pseq bench state-root` and `pseq bench commit`: the storage layer measured.
//!
//! - state-root: a RocksDB state of `accounts` accounts and `contracts x slots_per_contract`
//!   storage slots; then `updates` account changes and `updates` slot changes. The incremental
//!   root ([`Storage::prepare_state`]) is timed against a from-scratch root over every stored leaf
//!   ([`Storage::verify`]) of the same updated state, in the same run; both roots must agree.
//!   The built state is flushed from RocksDB's memtables to table files first, as a node that has
//!   been running for a while has it.
//! - commit: 1-gigagas raw-transfer blocks executed on the datadir, their state root computed and
//!   the block committed; reports blocks/s and MB/s of the commit.

use crate::{
    bench::{build, peak_rss_mb},
    replay::median,
};
use alloy_consensus::{Block, BlockBody, Header, TxEnvelope};
use alloy_primitives::{Address, B256, U256};
use pseq_executor::{
    execute_block,
    revm::primitives::KECCAK_EMPTY,
    AccountDiff, AccountState, ExecutionOptions, StateDiff,
};
use pseq_storage::{GenesisAccount, Storage, StorageOptions};
use std::{path::Path, time::Instant};

/// Sizes of the state-root benchmark.
#[derive(Debug, Clone, Copy)]
pub struct StateRootParams {
    /// Plain accounts.
    pub accounts: u64,
    /// Contracts holding storage.
    pub contracts: u64,
    /// Slots per contract.
    pub slots_per_contract: u64,
    /// Accounts changed, and slots changed, by the timed update.
    pub updates: u64,
    /// Timed runs of the incremental root (median reported).
    pub runs: usize,
}

/// What the state-root benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateRootResult {
    /// Accounts in the state (contracts included).
    pub accounts: u64,
    /// Storage slots in the state.
    pub slots: u64,
    /// Accounts changed by the update.
    pub updated_accounts: u64,
    /// Slots changed by the update.
    pub updated_slots: u64,
    /// Seconds to build the state (in 100,000-key blocks through the incremental path).
    pub build_s: f64,
    /// Median time of the incremental root of the update, with the bottom-branch cache warm.
    pub incremental_ms: f64,
    /// Time of the from-scratch root of the updated state.
    pub from_scratch_ms: f64,
    /// from_scratch_ms / incremental_ms.
    pub speedup: f64,
    /// Median time of the incremental root with the bottom-branch cache empty.
    pub incremental_cold_ms: f64,
    /// Median time of the incremental root with the bottom-branch cache warm but the state cache
    /// empty: the values the update replaces read from RocksDB, not found where the executor's
    /// reads of the block put them.
    pub incremental_uncached_ms: f64,
    /// from_scratch_ms / incremental_uncached_ms.
    pub speedup_uncached: f64,
    /// from_scratch_ms / incremental_cold_ms.
    pub speedup_cold: f64,
    /// Time to warm the bottom-branch cache from the stored state
    /// ([`Storage::warm_trie_cache`], two threads).
    pub warm_up_ms: f64,
    /// Bottom branches the warm cache holds.
    pub trie_cache_branches: usize,
    /// Approximate size of the warm cache.
    pub trie_cache_mb: f64,
    /// Median time of the incremental root's first part: each changed account's history,
    /// storage trie and leaf (all threads).
    pub accounts_ms: f64,
    /// Median time of its second part: the account trie.
    pub account_trie_ms: f64,
    /// Trie nodes the update rewrites or deletes.
    pub trie_nodes_changed: usize,
    /// Size of the datadir on disk.
    pub datadir_mb: f64,
    /// Peak resident memory.
    pub peak_rss_mb: f64,
}

fn plain(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xaa;
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    Address::from(bytes)
}

fn contract(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xcc;
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    Address::from(bytes)
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn account_state(balance: u64, nonce: u64) -> AccountState {
    AccountState { balance: U256::from(balance), nonce, code_hash: KECCAK_EMPTY, code: None }
}

/// Commits `diff` as the next (empty) block.
fn commit_diff(storage: &Storage, diff: &StateDiff) -> Result<usize, String> {
    let (number, parent_hash) = storage.head();
    let update = storage.prepare_state(diff).map_err(|e| e.to_string())?;
    let nodes = update.trie_nodes_changed;
    let header = Header { number: number + 1, parent_hash, state_root: update.state_root, timestamp: number + 1, ..Default::default() };
    storage.commit_block(&Block { header, body: BlockBody::<TxEnvelope>::default() }, &[], update).map_err(|e| e.to_string())?;
    Ok(nodes)
}

fn dir_size_mb(path: &Path) -> f64 {
    walkdir::WalkDir::new(path).into_iter().filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum::<u64>() as f64
        / (1024.0 * 1024.0)
}

fn empty_genesis(dir: &Path) -> Result<Storage, String> {
    let header = Header { state_root: alloy_trie::EMPTY_ROOT_HASH, gas_limit: 30_000_000, ..Default::default() };
    Storage::open_or_init(dir, &StorageOptions::default(), 1, &header, &[]).map_err(|e| e.to_string())
}

/// Runs the state-root benchmark in a temporary datadir under `work_dir`.
pub fn state_root(params: StateRootParams, work_dir: &Path) -> Result<StateRootResult, String> {
    let dir = tempfile::tempdir_in(work_dir).map_err(|e| e.to_string())?;
    let storage = empty_genesis(dir.path())?;
    let started = Instant::now();
    const CHUNK: u64 = 100_000;
    let mut next = 0;
    while next < params.accounts {
        let mut diff = StateDiff::default();
        for i in next..(next + CHUNK).min(params.accounts) {
            diff.accounts.insert(plain(i), AccountDiff { info: Some(account_state(1 + mix(i) % 1_000_000, 1)), storage_cleared: false, storage: Default::default() });
        }
        commit_diff(&storage, &diff)?;
        next += CHUNK;
        tracing::info!(accounts = next.min(params.accounts), "building state");
    }
    let contracts_per_chunk = (CHUNK / params.slots_per_contract.max(1)).max(1);
    let mut next = 0;
    while next < params.contracts {
        let mut diff = StateDiff::default();
        for c in next..(next + contracts_per_chunk).min(params.contracts) {
            let storage = (0..params.slots_per_contract).map(|s| (U256::from(s), U256::from(1 + mix(c * 1_000 + s)))).collect();
            diff.accounts.insert(contract(c), AccountDiff { info: Some(account_state(0, 1)), storage_cleared: false, storage });
        }
        commit_diff(&storage, &diff)?;
        next += contracts_per_chunk;
        tracing::info!(slots = (next.min(params.contracts)) * params.slots_per_contract, "building storage");
    }
    storage.flush().map_err(|e| e.to_string())?;
    // A node that has run a while has its state in compacted table files: time that, not reads
    // racing the compactions the build started.
    let settled = Instant::now();
    if !storage.wait_for_compactions(std::time::Duration::from_secs(300)).map_err(|e| e.to_string())? {
        tracing::warn!("compactions still running after 300 s; timing anyway");
    }
    tracing::info!(seconds = settled.elapsed().as_secs_f64(), "compactions settled");
    tracing::debug!(levels = %storage.level_summary().map_err(|e| e.to_string())?, "state tables");
    let build_s = started.elapsed().as_secs_f64();

    // The update: balances of random accounts, and one random slot in each of random contracts.
    let mut diff = StateDiff::default();
    let mut seed = 42u64;
    let mut updated_accounts = 0;
    while updated_accounts < params.updates.min(params.accounts) {
        seed = mix(seed);
        let i = seed % params.accounts;
        if diff.accounts.insert(plain(i), AccountDiff { info: Some(account_state(7 + seed % 1_000, 2)), storage_cleared: false, storage: Default::default() }).is_none() {
            updated_accounts += 1;
        }
    }
    let mut updated_slots = 0;
    while updated_slots < params.updates.min(params.contracts * params.slots_per_contract) && params.contracts > 0 {
        seed = mix(seed);
        let address = contract(seed % params.contracts);
        let slot = U256::from(mix(seed) % params.slots_per_contract.max(1));
        let entry = diff.accounts.entry(address).or_insert_with(|| AccountDiff { info: Some(account_state(0, 1)), storage_cleared: false, storage: Default::default() });
        if entry.storage.insert(slot, U256::from(seed | 1)).is_none() {
            updated_slots += 1;
        }
    }

    // Before each timed run the state cache holds what executing the update's block would have
    // read into it, and nothing else: the accounts and slots the update changes (see
    // `time_root`). Cold: the bottom-branch cache emptied before each run (building the state
    // filled it).
    let cold = time_root(&storage, &diff, params.runs, true, true)?;
    let started = Instant::now();
    let warmed = storage.warm_trie_cache().map_err(|e| e.to_string())?;
    let warm_up_ms = started.elapsed().as_secs_f64() * 1e3;
    let (branches, cache_bytes, hits_before, misses_before) = storage.trie_cache_stats();
    let by_path_before = storage.trie_cache_path_lookups();
    tracing::info!(?warmed, warm_up_ms, "bottom-branch cache warmed");
    // Warm: as on a node that has run a while (or warmed up after starting).
    let warm = time_root(&storage, &diff, params.runs, false, true)?;
    let (_, _, hits, misses) = storage.trie_cache_stats();
    let runs = params.runs.max(1);
    let by_path = (storage.trie_cache_path_lookups() - by_path_before) / runs;
    tracing::info!(hits = (hits - hits_before) / runs, misses = (misses - misses_before) / runs, by_path, "bottom-branch cache lookups per warm run");
    if warm.root != cold.root {
        return Err(format!("root with the bottom-branch cache {} != root without {}", warm.root, cold.root));
    }
    // Without the executor's reads: every old value read from RocksDB.
    let uncached = time_root(&storage, &diff, params.runs, false, false)?;
    if uncached.root != warm.root {
        return Err(format!("root with the state cache empty {} != root with it {}", uncached.root, warm.root));
    }
    let (root, nodes) = (warm.root, warm.nodes);
    let (incremental_ms, accounts_ms, account_trie_ms) = (warm.total_ms, warm.accounts_ms, warm.account_trie_ms);
    tracing::debug!(levels = %storage.level_summary().map_err(|e| e.to_string())?, "state tables after the timed runs");
    commit_diff(&storage, &diff)?;

    let start = Instant::now();
    let report = storage.verify(&mut |_| {}).map_err(|e| e.to_string())?;
    let from_scratch_ms = start.elapsed().as_secs_f64() * 1e3;
    if report.computed_root != root || !report.ok() {
        return Err(format!("incremental root {root} != from-scratch root {} ({report:?})", report.computed_root));
    }
    Ok(StateRootResult {
        accounts: report.accounts,
        slots: report.slots,
        updated_accounts,
        updated_slots,
        build_s,
        incremental_ms,
        from_scratch_ms,
        speedup: from_scratch_ms / incremental_ms,
        incremental_cold_ms: cold.total_ms,
        speedup_cold: from_scratch_ms / cold.total_ms,
        incremental_uncached_ms: uncached.total_ms,
        speedup_uncached: from_scratch_ms / uncached.total_ms,
        warm_up_ms,
        trie_cache_branches: branches,
        trie_cache_mb: cache_bytes as f64 / (1 << 20) as f64,
        accounts_ms,
        account_trie_ms,
        trie_nodes_changed: nodes,
        datadir_mb: dir_size_mb(dir.path()),
        peak_rss_mb: peak_rss_mb(),
    })
}

/// Medians of timed incremental roots of one update.
struct RootTimes {
    total_ms: f64,
    accounts_ms: f64,
    account_trie_ms: f64,
    root: B256,
    nodes: usize,
}

/// Prepares `diff` on the head `runs` times (nothing committed), each time after emptying the
/// bottom-branch cache when `cold`, and takes the medians. Before each run (not timed) the state
/// cache is emptied and, when `executed`, given what executing the block would have read into
/// it: every account the update changes and every slot it sets, read through a view of the head
/// as the executor reads them.
fn time_root(storage: &Storage, diff: &StateDiff, runs: usize, cold: bool, executed: bool) -> Result<RootTimes, String> {
    use pseq_executor::revm::database::DatabaseRef;
    let (mut total, mut accounts, mut account_trie) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs.max(1) {
        if cold {
            storage.clear_trie_cache();
        }
        storage.clear_state_cache();
        if executed {
            let view = storage.latest();
            for (address, change) in &diff.accounts {
                view.basic_ref(*address).map_err(|e| e.to_string())?;
                for slot in change.storage.keys() {
                    view.storage_ref(*address, *slot).map_err(|e| e.to_string())?;
                }
            }
        }
        let start = Instant::now();
        let update = storage.prepare_state(diff).map_err(|e| e.to_string())?;
        total.push(start.elapsed().as_secs_f64() * 1e3);
        accounts.push(update.accounts_time.as_secs_f64() * 1e3);
        account_trie.push(update.account_trie_time.as_secs_f64() * 1e3);
        last = Some((update.state_root, update.trie_nodes_changed));
    }
    let (root, nodes) = last.unwrap_or_default();
    Ok(RootTimes { total_ms: median(total), accounts_ms: median(accounts), account_trie_ms: median(account_trie), root, nodes })
}

/// What the commit benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommitResult {
    /// Blocks committed.
    pub blocks: usize,
    /// Transactions per block.
    pub txs_per_block: usize,
    /// Gas per block.
    pub gas_per_block: u64,
    /// Median execution time per block (parallel path).
    pub execute_ms: f64,
    /// Median state-root time per block (incremental).
    pub state_root_ms: f64,
    /// Median commit (write) time per block.
    pub commit_ms: f64,
    /// Blocks per second, state root and commit only.
    pub blocks_per_s: f64,
    /// Megabytes of write batch per second of commit (state, trie, history, receipts).
    pub commit_mb_per_s: f64,
    /// Megabytes of datadir growth per block.
    pub mb_per_block: f64,
}

/// Executes and commits `blocks` 1-gigagas raw-transfer blocks (each sender sends once per block).
pub fn commit(blocks: usize, threads: usize, contracts_dir: &Path, work_dir: &Path) -> Result<CommitResult, String> {
    let workload = build("raw-transfers", None, contracts_dir)?;
    let dir = tempfile::tempdir_in(work_dir).map_err(|e| e.to_string())?;
    let alloc: Vec<(Address, GenesisAccount)> = workload
        .state
        .accounts()
        .map(|(address, info, _)| (*address, GenesisAccount { balance: info.balance, nonce: info.nonce, ..Default::default() }))
        .collect();
    let header = Header { state_root: workload.state.state_root(), gas_limit: 30_000_000, ..Default::default() };
    let storage = Storage::open_or_init(dir.path(), &StorageOptions::default(), 1, &header, &alloc).map_err(|e| e.to_string())?;
    let size_before = dir_size_mb(dir.path());
    let options = ExecutionOptions::parallel(threads);
    let (mut execute, mut root, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let mut written_mb = 0.0;
    let mut gas = 0;
    for k in 0..blocks {
        let (number, parent_hash) = storage.head();
        let mut input = workload.input.clone();
        input.block.number = U256::from(number + 1);
        let txs: Vec<_> = workload.txs.iter().cloned().map(|mut tx| {
            tx.nonce = k as u64;
            tx
        }).collect();
        let start = Instant::now();
        let output = execute_block(&storage.latest(), &input, &txs, &options).map_err(|e| e.to_string())?;
        execute.push(start.elapsed().as_secs_f64() * 1e3);
        gas = output.gas_used;
        let start = Instant::now();
        let update = storage.prepare_state(&output.state).map_err(|e| e.to_string())?;
        root.push(start.elapsed().as_secs_f64() * 1e3);
        let header = Header { number: number + 1, parent_hash, state_root: update.state_root, gas_used: output.gas_used, timestamp: number + 1, ..Default::default() };
        let start = Instant::now();
        let committed = storage.commit_block(&Block { header, body: BlockBody::<TxEnvelope>::default() }, &output.receipts, update).map_err(|e| e.to_string())?;
        write.push(start.elapsed().as_secs_f64() * 1e3);
        written_mb += committed.bytes as f64 / (1024.0 * 1024.0);
        let (branches, bytes, hits, misses) = storage.trie_cache_stats();
        tracing::info!(block = number + 1, batch_mb = committed.bytes as f64 / (1024.0 * 1024.0), branches, cache_mb = bytes >> 20, hits, misses, "committed");
    }
    let (execute_ms, state_root_ms, commit_ms) = (median(execute), median(root), median(write));
    let growth = (dir_size_mb(dir.path()) - size_before) / blocks as f64;
    Ok(CommitResult {
        blocks,
        txs_per_block: workload.txs.len(),
        gas_per_block: gas,
        execute_ms,
        state_root_ms,
        commit_ms,
        blocks_per_s: 1e3 / (state_root_ms + commit_ms),
        commit_mb_per_s: (written_mb / blocks as f64) / (commit_ms / 1e3),
        mb_per_block: growth,
    })
}
