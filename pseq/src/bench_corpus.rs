//! The corpus workloads of `pseq bench exec`: real blocks instead of synthetic ones.
//!
//! - `mainnet`: the 67 historical mainnet blocks of `mainnet-blocks.tar.zst`, each on its own
//!   partial pre-state, its gas used, logs bloom and receipts root checked against the header.
//! - `eest-benchmark`: the Osaka worst-case blocks of `eest-benchmark-v0.0.7.tar.zst`
//!   (`blockchain_tests`): every block of every test, each on the state its chain has reached
//!   (from the fixture's `pre`), its gas used and receipts root checked against the header.
//!
//! Every block runs once on each path first, and the parallel result must equal the sequential
//! one; then the two paths alternate for the timed runs (at least `--runs`, more for blocks that
//! take microseconds, about 50 ms of timing in all), and each block reports the medians.
//! The workload's figures are the total-time ratio, the geometric mean of the per-block speedups,
//! and the worst and best block.

use crate::{
    bench::alternate_medians,
    blocktest::{state_from, Fixture},
    import::{decode_block, prepare_block},
    replay::{block_hashes, block_numbers, check_header, load_block},
    report::{Counts, Progress},
    testfiles::json_files,
};
use crate::bench_bound::BlockBound;
use pseq_executor::{execute_block, revm::context::TxEnv, BlockInput, BlockOutput, ExecutionOptions, InMemoryState};
use serde::Serialize;
use std::{collections::BTreeMap, path::Path, time::Instant};

/// A block is timed for at least this long per pair of runs in total (more runs for short
/// blocks).
const MIN_TIMED_SECONDS: f64 = 0.05;
/// At most this many timed runs per path and block.
const MAX_RUNS: usize = 200;
/// At most this many runs per block for its bound (`--bound`).
const MAX_BOUND_RUNS: usize = 21;

/// One block of a corpus workload, measured.
#[derive(Debug, Clone, Serialize)]
pub struct BlockResult {
    /// Block number (mainnet), or `folder/file/test#index` (EEST).
    pub block: String,
    /// Transactions.
    pub txs: usize,
    /// Gas used.
    pub gas: u64,
    /// Median sequential time.
    pub sequential_ms: f64,
    /// Median parallel time.
    pub parallel_ms: f64,
    /// sequential_ms / parallel_ms.
    pub speedup: f64,
    /// The path the parallel options took: `Parallel`, `SmallBlockFallback`, or a fallback.
    pub path: String,
    /// The block's bound from its dependencies (`--bound`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<BlockBound>,
}

/// The bounds of a corpus workload's blocks, summed like its speedups.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CorpusBound {
    /// Total sequential time over the total of the blocks' limits.
    pub limit_speedup: f64,
    /// Geometric mean of the blocks' limit speedups.
    pub limit_geomean: f64,
    /// Total sequential time over the total of the blocks' greedy schedules.
    pub scheduled_speedup: f64,
    /// Geometric mean of the blocks' greedy speedups.
    pub scheduled_geomean: f64,
}

/// A corpus workload's result: totals over its blocks and the per-block table.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusResult {
    /// Workload name.
    pub workload: String,
    /// Blocks measured.
    pub blocks: usize,
    /// Transactions over all blocks.
    pub txs: usize,
    /// Gas over all blocks.
    pub gas: u64,
    /// Threads of the parallel path.
    pub threads: usize,
    /// What `sequential_ms` timed: `sequential`, or `without <techniques>`
    /// ([`crate::bench::Baseline`]).
    pub baseline: String,
    /// Sum of the per-block baseline medians (sequential execution unless `--without`).
    pub sequential_ms: f64,
    /// Sum of the per-block parallel medians.
    pub parallel_ms: f64,
    /// Total-time ratio: sequential_ms / parallel_ms.
    pub speedup: f64,
    /// Geometric mean of the per-block speedups.
    pub geomean_speedup: f64,
    /// Worst block's speedup.
    pub min_speedup: f64,
    /// Best block's speedup.
    pub max_speedup: f64,
    /// Blocks whose speedup is below 0.95.
    pub blocks_below_0_95: usize,
    /// Gas per second of the parallel path over all blocks, in Ggas/s.
    pub gigagas_per_s_parallel: f64,
    /// Peak resident memory of the process so far.
    pub peak_rss_mb: f64,
    /// Per-block results, in corpus order.
    pub per_block: Vec<BlockResult>,
    /// The blocks' bounds (`--bound`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<CorpusBound>,
}

/// How a corpus workload is timed.
#[derive(Debug, Clone, Copy)]
pub struct CorpusOptions {
    /// Threads of the parallel path.
    pub threads: usize,
    /// Timed runs per path and block.
    pub runs: usize,
    /// Which parallel path is timed.
    pub path: crate::bench::ParallelPath,
    /// Bound each block from its dependencies ([`crate::bench_bound`]); only against the
    /// sequential baseline.
    pub bound: bool,
    /// What the parallel path is timed against.
    pub baseline: crate::bench::Baseline,
}

impl CorpusOptions {
    fn parallel(&self) -> ExecutionOptions {
        self.path.options(self.threads)
    }
}

/// Checks parallel == sequential on one block, then times both paths, alternating. Returns the
/// result and the sequential output (the caller checks it against the header).
fn measure(label: String, state: &InMemoryState, input: &BlockInput, txs: &[TxEnv], options: &CorpusOptions) -> Result<(BlockResult, BlockOutput), String> {
    let sequential = ExecutionOptions::sequential();
    let parallel = options.parallel();
    let baseline = options.baseline.options(parallel);
    let started = Instant::now();
    let reference = execute_block(state, input, txs, &sequential).map_err(|e| format!("{label}: sequential execution failed: {e}"))?;
    let checked = execute_block(state, input, txs, &parallel).map_err(|e| format!("{label}: parallel execution failed: {e}"))?;
    // Blocks that run in microseconds get more runs, so that their medians are not noise.
    let per_pair = started.elapsed().as_secs_f64();
    let runs = options.runs.max(((MIN_TIMED_SECONDS / per_pair.max(1e-6)) as usize).min(MAX_RUNS));
    if !checked.same_result(&reference) {
        return Err(format!("{label}: parallel result differs from sequential ({:?})", checked.path));
    }
    options.baseline.check(parallel, state, input, txs, &reference).map_err(|e| format!("{label}: {e}"))?;
    let (sequential_ms, parallel_ms) = alternate_medians(
        runs,
        || {
            let _ = execute_block(state, input, txs, &baseline);
        },
        || {
            let _ = execute_block(state, input, txs, &parallel);
        },
    );
    let bound = if options.bound && options.baseline == crate::bench::Baseline::Sequential {
        Some(crate::bench_bound::bound(state, input, txs, options.threads, runs.min(MAX_BOUND_RUNS), sequential_ms).map_err(|e| format!("{label}: bound: {e}"))?)
    } else {
        None
    };
    let result = BlockResult {
        block: label,
        txs: txs.len(),
        gas: reference.gas_used,
        sequential_ms,
        parallel_ms,
        speedup: sequential_ms / parallel_ms,
        path: format!("{:?}", checked.path),
        bound,
    };
    Ok((result, reference))
}

impl CorpusResult {
    /// The same result, naming `baseline` as what its `sequential_ms` timed.
    pub fn against(mut self, baseline: crate::bench::Baseline) -> Self {
        self.baseline = baseline.label();
        self
    }
}

/// Totals, geometric mean and extremes over the measured blocks.
pub fn summarize(workload: &str, threads: usize, per_block: Vec<BlockResult>) -> CorpusResult {
    let sequential_ms: f64 = per_block.iter().map(|b| b.sequential_ms).sum();
    let parallel_ms: f64 = per_block.iter().map(|b| b.parallel_ms).sum();
    let gas: u64 = per_block.iter().map(|b| b.gas).sum();
    let speedups: Vec<f64> = per_block.iter().map(|b| b.speedup).filter(|s| s.is_finite() && *s > 0.0).collect();
    let geomean_speedup = if speedups.is_empty() { 0.0 } else { (speedups.iter().map(|s| s.ln()).sum::<f64>() / speedups.len() as f64).exp() };
    CorpusResult {
        workload: workload.to_string(),
        blocks: per_block.len(),
        txs: per_block.iter().map(|b| b.txs).sum(),
        gas,
        threads,
        baseline: crate::bench::Baseline::Sequential.label(),
        sequential_ms,
        parallel_ms,
        speedup: if parallel_ms > 0.0 { sequential_ms / parallel_ms } else { 0.0 },
        geomean_speedup,
        min_speedup: speedups.iter().copied().fold(f64::INFINITY, f64::min),
        max_speedup: speedups.iter().copied().fold(0.0, f64::max),
        blocks_below_0_95: speedups.iter().filter(|s| **s < 0.95).count(),
        gigagas_per_s_parallel: if parallel_ms > 0.0 { gas as f64 / 1e9 / (parallel_ms / 1e3) } else { 0.0 },
        peak_rss_mb: crate::bench::peak_rss_mb(),
        bound: corpus_bound(&per_block),
        per_block,
    }
}

/// The bounds summed over the blocks, where every block has one.
fn corpus_bound(per_block: &[BlockResult]) -> Option<CorpusBound> {
    let bounds: Vec<(f64, BlockBound)> = per_block.iter().map(|b| b.bound.map(|bound| (b.sequential_ms, bound))).collect::<Option<_>>()?;
    if bounds.is_empty() {
        return None;
    }
    let sequential: f64 = bounds.iter().map(|(s, _)| s).sum();
    let total = |speedup: fn(&BlockBound) -> f64| sequential / bounds.iter().map(|(s, b)| s / speedup(b)).sum::<f64>();
    let geomean = |speedup: fn(&BlockBound) -> f64| (bounds.iter().map(|(_, b)| speedup(b).ln()).sum::<f64>() / bounds.len() as f64).exp();
    Some(CorpusBound {
        limit_speedup: total(|b| b.limit_speedup),
        limit_geomean: geomean(|b| b.limit_speedup),
        scheduled_speedup: total(|b| b.scheduled_speedup),
        scheduled_geomean: geomean(|b| b.scheduled_speedup),
    })
}

/// The `mainnet` workload over the corpus folder `dir` (BLOCKS.txt and one folder per block).
pub fn mainnet(dir: &Path, options: &CorpusOptions) -> Result<CorpusResult, String> {
    let block_hashes = block_hashes(dir);
    let numbers = block_numbers(dir)?;
    let mut per_block = Vec::with_capacity(numbers.len());
    let (mut progress, mut counts) = (Progress::new("bench mainnet", numbers.len()), Counts::default());
    for number in &numbers {
        let block = load_block(dir, *number, &block_hashes)?;
        let (result, reference) = measure(number.to_string(), &block.state, &block.input, &block.txs, options)?;
        check_header(&block, &reference).map_err(|e| format!("block {number}: {e}"))?;
        per_block.push(result);
        counts.pass();
        progress.tick(&counts);
    }
    Ok(summarize("mainnet", options.threads, per_block).against(options.baseline))
}

/// The `eest-benchmark` workload over the fixture folder `dir` (`blockchain_tests`).
pub fn eest_benchmark(dir: &Path, options: &CorpusOptions) -> Result<CorpusResult, String> {
    let files = json_files(&[dir.to_path_buf()])?;
    let mut per_block = Vec::new();
    let (mut progress, mut counts) = (Progress::new("bench eest-benchmark", files.len()), Counts::default());
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let tests: BTreeMap<String, Fixture> = serde_json::from_str(&text).map_err(|e| format!("{}: not a blockchain test fixture: {e}", file.display()))?;
        // `<folder>/<file>`: two files share a name (`call_frame_context_ops` under both
        // `call_context` and `tx_context`).
        let folder = file.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = format!("{folder}/{}", file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        for (name, fixture) in &tests {
            // Test names repeat the file path; the part after the last `::` tells tests apart.
            let short = name.rsplit("::").next().unwrap_or(name);
            let label = format!("{stem}/{short}");
            per_block.extend(eest_test(&label, fixture, options)?);
            counts.pass();
        }
        progress.tick(&counts);
    }
    Ok(summarize("eest-benchmark", options.threads, per_block).against(options.baseline))
}

/// Every valid block of one EEST test, each measured on the state the chain has reached.
fn eest_test(label: &str, fixture: &Fixture, options: &CorpusOptions) -> Result<Vec<BlockResult>, String> {
    let rules = fixture.rules()?;
    let (_, genesis_hash) = fixture.genesis()?;
    let mut state = state_from(&fixture.pre);
    state.insert_block_hash(0, genesis_hash);
    let mut results = Vec::new();
    for (index, fixture_block) in fixture.blocks.iter().enumerate() {
        if fixture_block.expect_exception.is_some() {
            continue;
        }
        let block_label = format!("{label}#{index}");
        let block = decode_block(&fixture_block.rlp).map_err(|e| format!("{block_label}: {e}"))?;
        let (input, txs) = prepare_block(&block, &rules).map_err(|e| format!("{block_label}: {e}"))?;
        let (result, reference) = measure(block_label.clone(), &state, &input, &txs, options)?;
        if reference.gas_used != block.header.gas_used {
            return Err(format!("{block_label}: gas used {} != header {}", reference.gas_used, block.header.gas_used));
        }
        let receipts_root = pseq_executor::receipts_root(&reference.receipts);
        if receipts_root != block.header.receipts_root {
            return Err(format!("{block_label}: receipts root {receipts_root} != header {}", block.header.receipts_root));
        }
        state.apply_diff(&reference.state);
        state.insert_block_hash(block.header.number, block.header.hash_slow());
        results.push(result);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(sequential_ms: f64, parallel_ms: f64) -> BlockResult {
        BlockResult { block: String::new(), txs: 1, gas: 1_000_000, sequential_ms, parallel_ms, speedup: sequential_ms / parallel_ms, path: String::new(), bound: None }
    }

    #[test]
    fn the_summary_weighs_time_in_the_total_and_blocks_alike_in_the_geometric_mean() {
        // 8 ms -> 2 ms (4x) and 1 ms -> 4 ms (0.25x): total 9 / 6 = 1.5x; geometric mean
        // sqrt(4 x 0.25) = 1x; one block below 0.95x.
        let summary = summarize("w", 2, vec![block(8.0, 2.0), block(1.0, 4.0)]);
        assert_eq!(summary.blocks, 2);
        assert!((summary.speedup - 1.5).abs() < 1e-12);
        assert!((summary.geomean_speedup - 1.0).abs() < 1e-12);
        assert_eq!((summary.min_speedup, summary.max_speedup), (0.25, 4.0));
        assert_eq!(summary.blocks_below_0_95, 1);
        assert_eq!(summary.gas, 2_000_000);
        assert!((summary.gigagas_per_s_parallel - 2e6 / 1e9 / 6e-3).abs() < 1e-12);
    }
}
