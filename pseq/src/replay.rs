//! `pseq replay`: re-executes historical mainnet blocks from the `mainnet-blocks` corpus format
//! (`<N>/block.json` as `eth_getBlockByNumber(N, true)` returns it, `<N>/pre_state.json` with the
//! accounts the block touches, `block_hashes.json` for BLOCKHASH).
//!
//! A block passes when its gas used, logs bloom and (from Byzantium) receipts root match the
//! header, and the parallel path returns exactly the sequential result at every thread count
//! checked. The pre-state is partial, so the state root cannot be checked; for the same reason
//! ommer rewards (whose ommer headers the corpus lacks) are not applied.
//!
//! An optional `chain.json` (`{"chainId": 31337, "fork": "Osaka"}`, written by `pseq fetch` for
//! chains other than mainnet) replaces mainnet's chain id and fork schedule.

use crate::{
    chainspec::{mainnet_spec, MAINNET_DAO_BLOCK},
    report::{Counts, Progress},
};
use alloy_consensus::BlockHeader;
use alloy_evm::FromRecoveredTx;
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_rpc_types_eth::Block;
use pseq_executor::{
    execute_block, logs_bloom, receipts_root,
    revm::{
        bytecode::Bytecode,
        context::{BlockEnv, CfgEnv, TxEnv},
        context_interface::block::BlobExcessGasAndPrice,
        primitives::hardfork::SpecId,
    },
    state::InMemoryAccount,
    BlockInput, BlockOutput, ExecutionOptions, InMemoryState, Withdrawal,
};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::Path,
    time::Instant,
};

/// One account of `pre_state.json`.
#[derive(Debug, Deserialize)]
struct PreAccount {
    balance: U256,
    nonce: u64,
    #[serde(default)]
    code: Option<Bytes>,
    #[serde(default)]
    storage: BTreeMap<U256, U256>,
}

/// A block loaded from the corpus, ready to execute.
pub struct LoadedBlock {
    /// Block number.
    pub number: u64,
    /// Block environment and rules.
    pub input: BlockInput,
    /// Transactions, senders recovered.
    pub txs: Vec<TxEnv>,
    /// The pre-state the block touches.
    pub state: InMemoryState,
    /// Header fields to check.
    pub expected: ExpectedHeader,
}

/// The header fields a replay checks.
#[derive(Debug, Clone)]
pub struct ExpectedHeader {
    /// Gas used.
    pub gas_used: u64,
    /// Receipts root.
    pub receipts_root: B256,
    /// Logs bloom.
    pub logs_bloom: alloy_primitives::Bloom,
    /// Spec the block ran under.
    pub spec: SpecId,
}

/// Block numbers listed in `BLOCKS.txt`, or every numbered folder.
pub fn block_numbers(dir: &Path) -> Result<Vec<u64>, String> {
    let listed = dir.join("BLOCKS.txt");
    let mut numbers: Vec<u64> = match std::fs::read_to_string(&listed) {
        Ok(text) => text.split_whitespace().map(|n| n.parse().map_err(|e| format!("{}: {n}: {e}", listed.display()))).collect::<Result<_, _>>()?,
        Err(_) => std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    };
    numbers.sort_unstable();
    if numbers.is_empty() {
        return Err(format!("{}: no blocks found (expected BLOCKS.txt or numbered folders)", dir.display()));
    }
    Ok(numbers)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `chain.json`: the chain of a snapshot that is not mainnet.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHint {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The fork every block of the snapshot runs under (`Osaka`, `Prague`, …).
    pub fork: String,
}

/// The snapshot's chain hint, if it has one.
pub fn chain_hint(dir: &Path) -> Result<Option<ChainHint>, String> {
    let path = dir.join("chain.json");
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// The ancestor hashes of `dir/block_hashes.json` by block number (none when the file is absent).
pub fn block_hashes(dir: &Path) -> BTreeMap<u64, B256> {
    let file: BTreeMap<String, B256> = read_json(&dir.join("block_hashes.json")).unwrap_or_default();
    file.into_iter().filter_map(|(n, h)| Some((n.parse().ok()?, h))).collect()
}

/// Loads block `number` from `dir`, with the ancestor hashes in `block_hashes`.
pub fn load_block(dir: &Path, number: u64, block_hashes: &BTreeMap<u64, B256>) -> Result<LoadedBlock, String> {
    let block_dir = dir.join(number.to_string());
    let pre: BTreeMap<Address, PreAccount> = read_json(&block_dir.join("pre_state.json"))?;
    load_block_with(dir, number, block_hashes, pre)
}

/// The block without its pre-state (`pseq fetch` executes it against a node instead).
pub fn load_block_without_state(dir: &Path, number: u64) -> Result<LoadedBlock, String> {
    load_block_with(dir, number, &BTreeMap::new(), BTreeMap::new())
}

fn load_block_with(dir: &Path, number: u64, block_hashes: &BTreeMap<u64, B256>, pre: BTreeMap<Address, PreAccount>) -> Result<LoadedBlock, String> {
    let block_dir = dir.join(number.to_string());
    let block: Block = read_json(&block_dir.join("block.json"))?;
    let hint = chain_hint(dir)?;

    let mut state = InMemoryState::new();
    for (address, account) in pre {
        let code = account.code.filter(|c| !c.is_empty()).map(Bytecode::new_raw);
        state.insert_account(
            address,
            InMemoryAccount { balance: account.balance, nonce: account.nonce, code, storage: account.storage.into_iter().collect() },
        );
    }
    for (n, hash) in block_hashes {
        state.insert_block_hash(*n, *hash);
    }

    let header = &block.header;
    let timestamp = header.timestamp();
    let spec = match &hint {
        Some(hint) => crate::fork::spec_of(&hint.fork).ok_or_else(|| format!("chain.json: unknown fork {}", hint.fork))?,
        None => mainnet_spec(number, timestamp),
    };
    let mut cfg = CfgEnv::default();
    cfg.chain_id = hint.as_ref().map_or(1, |h| h.chain_id);
    cfg.set_spec_and_mainnet_gas_params(spec);
    let mut env = BlockEnv {
        number: U256::from(number),
        beneficiary: header.beneficiary(),
        timestamp: U256::from(timestamp),
        gas_limit: header.gas_limit(),
        basefee: header.base_fee_per_gas().unwrap_or_default(),
        difficulty: header.difficulty(),
        prevrandao: spec.is_enabled_in(SpecId::MERGE).then(|| header.mix_hash().unwrap_or_default()),
        ..Default::default()
    };
    if let Some(excess) = header.excess_blob_gas() {
        env.blob_excess_gas_and_price = Some(BlobExcessGasAndPrice::new(excess, cfg.blob_base_fee_update_fraction()));
    }
    let mut input = BlockInput::new(cfg, env);
    input.parent_hash = header.parent_hash();
    input.parent_beacon_block_root = header.parent_beacon_block_root();
    input.dao_fork = hint.is_none() && number == MAINNET_DAO_BLOCK;
    input.withdrawals = block.withdrawals.as_ref().map(|ws| {
        ws.iter().map(|w| Withdrawal { address: w.address, amount_gwei: w.amount }).collect()
    });

    let transactions = block
        .transactions
        .as_transactions()
        .ok_or_else(|| format!("block {number}: transactions are hashes, not full objects"))?;
    let txs = transactions
        .iter()
        .map(|tx| TxEnv::from_recovered_tx(tx.inner.inner(), tx.inner.signer()))
        .collect();

    let expected = ExpectedHeader {
        gas_used: header.gas_used(),
        receipts_root: header.receipts_root(),
        logs_bloom: header.logs_bloom(),
        spec,
    };
    Ok(LoadedBlock { number, input, txs, state, expected })
}

/// Checks an output against the block header; returns what differs.
pub fn check_header(block: &LoadedBlock, output: &BlockOutput) -> Result<(), String> {
    let expected = &block.expected;
    if output.gas_used != expected.gas_used {
        return Err(format!("gas used {} != header {}", output.gas_used, expected.gas_used));
    }
    let bloom = logs_bloom(output.receipts.iter().flat_map(|r| r.logs.iter()));
    if bloom != expected.logs_bloom {
        return Err("logs bloom differs from the header".into());
    }
    if expected.spec.is_enabled_in(SpecId::BYZANTIUM) {
        let root = receipts_root(&output.receipts);
        if root != expected.receipts_root {
            return Err(format!("receipts root {root} != header {}", expected.receipts_root));
        }
    }
    Ok(())
}

/// Options of a replay run.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Only these blocks (all when empty).
    pub blocks: Vec<u64>,
    /// Thread counts at which the parallel path must equal the sequential path.
    pub check_threads: Vec<usize>,
    /// Thread count for the timed parallel runs.
    pub threads: usize,
    /// Timed runs per path (medians are reported).
    pub runs: usize,
    /// Print one JSON object per block.
    pub json: bool,
    /// Time the parallel path without its small-block fallback.
    pub force_parallel: bool,
}

/// Timing of one replayed block.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockTiming {
    /// Block number.
    pub number: u64,
    /// Transactions.
    pub txs: usize,
    /// Gas used.
    pub gas_used: u64,
    /// Median sequential time.
    pub sequential_ms: f64,
    /// Median parallel time (the default path: small blocks fall back to sequential).
    pub parallel_ms: f64,
    /// Threads of the parallel runs.
    pub threads: usize,
    /// Block-STM incarnations executed in a forced parallel run (0: it fell back).
    pub executions: usize,
    /// Incarnations aborted by validation in that run.
    pub aborts: usize,
    /// Executions parked on a dependency in that run.
    pub dependencies: usize,
}

/// Median of `runs` timings of `f`, in milliseconds.
pub fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    median(
        (0..runs.max(1))
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// The median of some timings (the upper one of an even count); 0 for none.
pub fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Replays the blocks of `dir`; returns counts and per-block timings.
pub fn run(dir: &Path, options: &ReplayOptions) -> Result<(Counts, Vec<BlockTiming>), String> {
    let block_hashes = block_hashes(dir);
    let mut numbers = block_numbers(dir)?;
    if !options.blocks.is_empty() {
        for wanted in &options.blocks {
            if !numbers.contains(wanted) {
                return Err(format!("block {wanted} is not in {}", dir.display()));
            }
        }
        numbers.retain(|n| options.blocks.contains(n));
    }
    let mut counts = Counts::default();
    let mut timings = Vec::new();
    let mut progress = Progress::new("replay", numbers.len());
    for number in numbers {
        match replay_block(dir, number, &block_hashes, options) {
            Ok(timing) => {
                counts.pass();
                if options.json {
                    println!("{}", serde_json::to_string(&timing).unwrap_or_default());
                }
                timings.push(timing);
            }
            Err(e) => counts.fail(format!("block {number}: {e}")),
        }
        progress.tick(&counts);
    }
    Ok((counts, timings))
}

fn replay_block(dir: &Path, number: u64, block_hashes: &BTreeMap<u64, B256>, options: &ReplayOptions) -> Result<BlockTiming, String> {
    let block = load_block(dir, number, block_hashes)?;
    let sequential = execute_block(&block.state, &block.input, &block.txs, &ExecutionOptions::sequential())
        .map_err(|e| format!("sequential execution failed: {e}"))?;
    check_header(&block, &sequential)?;
    let mut stats = pseq_executor::parallel::ParallelStats::default();
    for &threads in &options.check_threads {
        let parallel = execute_block(&block.state, &block.input, &block.txs, &ExecutionOptions::force_parallel(threads))
            .map_err(|e| format!("parallel execution ({threads} threads) failed: {e}"))?;
        if let pseq_executor::block::ExecutedPath::ParallelFallback(reason) = parallel.path {
            tracing::info!(number, threads, ?reason, "parallel path fell back to sequential");
        }
        if threads == options.threads {
            stats = parallel.stats.unwrap_or_default();
        }
        if !parallel.same_result(&sequential) {
            return Err(format!("parallel result at {threads} threads differs from sequential ({:?})", parallel.path));
        }
    }
    let seq_options = ExecutionOptions::sequential();
    let par_options = if options.force_parallel {
        ExecutionOptions::force_parallel(options.threads)
    } else {
        ExecutionOptions::parallel(options.threads)
    };
    let mut sequential_ms = 0.0;
    let mut parallel_ms = 0.0;
    if options.runs > 0 {
        sequential_ms = median_ms(options.runs, || {
            let _ = execute_block(&block.state, &block.input, &block.txs, &seq_options);
        });
        parallel_ms = median_ms(options.runs, || {
            let _ = execute_block(&block.state, &block.input, &block.txs, &par_options);
        });
    }
    Ok(BlockTiming {
        number,
        txs: block.txs.len(),
        gas_used: sequential.gas_used,
        sequential_ms,
        parallel_ms,
        threads: options.threads,
        executions: stats.executions,
        aborts: stats.aborts,
        dependencies: stats.dependencies,
    })
}
