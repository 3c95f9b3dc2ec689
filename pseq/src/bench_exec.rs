//! `pseq bench exec`: runs the requested workloads, synthetic ([`crate::bench`]) or from the
//! corpora ([`crate::bench_corpus`]), prints one line (or JSON object) per workload and, with
//! `--chart`, draws the speedups as PNG bar charts.

use crate::{
    bench, bench_corpus,
    bench_corpus::{CorpusOptions, CorpusResult},
    chart::{bar_chart, Bar},
    corpus,
};
use std::path::Path;

/// The corpus workloads (the others are built in memory by [`bench::build`]).
pub const CORPUS_WORKLOADS: [&str; 2] = ["mainnet", "eest-benchmark"];

/// What `pseq bench exec` was asked to do.
#[derive(Debug, Clone)]
pub struct ExecBench {
    /// Workload names, in order.
    pub workloads: Vec<String>,
    /// Threads of the parallel path.
    pub threads: usize,
    /// Transactions per synthetic block (`None`: each workload's own size).
    pub txs: Option<usize>,
    /// Timed runs per path (per block for the corpus workloads).
    pub runs: usize,
    /// Which parallel path is timed.
    pub path: bench::ParallelPath,
    /// Bound each corpus block from its dependencies ([`crate::bench_bound`]).
    pub bound: bool,
    /// What the parallel path is timed against.
    pub baseline: bench::Baseline,
    /// One JSON object per workload instead of a text line.
    pub json: bool,
}

fn run_corpus(name: &str, options: &CorpusOptions) -> Result<CorpusResult, String> {
    match name {
        "mainnet" => bench_corpus::mainnet(&corpus::mainnet_blocks()?, options),
        _ => bench_corpus::eest_benchmark(&corpus::eest_benchmark()?.join("blockchain_tests"), options),
    }
}

fn print_corpus(result: &CorpusResult, json: bool) {
    if json {
        println!("{}", serde_json::to_string(result).unwrap_or_default());
        return;
    }
    for block in &result.per_block {
        println!(
            "  {:<48} {:>5} txs {:>11} gas  {} {:>8.2} ms  parallel {:>8.2} ms  {:.2}x  {}",
            block.block, block.txs, block.gas, result.baseline, block.sequential_ms, block.parallel_ms, block.speedup, block.path
        );
        if let Some(bound) = &block.bound {
            println!(
                "  {:<48} bound: txs {:.2} ms, critical path {:.2} ms, greedy schedule {:.2} ms: at most {:.2}x, {:.2}x greedy",
                "", bound.txs_ms, bound.critical_path_ms, bound.scheduled_ms, bound.limit_speedup, bound.scheduled_speedup
            );
        }
    }
    if let Some(bound) = &result.bound {
        println!(
            "{:<19} bound: total at most {:.2}x (geomean {:.2}x), greedy schedule {:.2}x (geomean {:.2}x)",
            result.workload, bound.limit_speedup, bound.limit_geomean, bound.scheduled_speedup, bound.scheduled_geomean
        );
    }
    println!(
        "{:<19} {:>4} blocks {:>6} txs {:>13} gas  {} {:>9.2} ms  parallel {:>9.2} ms ({} threads)  total {:.2}x  geomean {:.2}x  min {:.2}x  max {:.2}x  {} below 0.95x  {:.2} Ggas/s  peak RSS {:.0} MiB",
        result.workload,
        result.blocks,
        result.txs,
        result.gas,
        result.baseline,
        result.sequential_ms,
        result.parallel_ms,
        result.threads,
        result.speedup,
        result.geomean_speedup,
        result.min_speedup,
        result.max_speedup,
        result.blocks_below_0_95,
        result.gigagas_per_s_parallel,
        result.peak_rss_mb
    );
}

/// The per-block chart of a corpus workload: one bar per block (mainnet), or per fixture file
/// (EEST, whose hundreds of blocks would not fit; the bar is that file's total-time ratio).
fn corpus_bars(result: &CorpusResult) -> Vec<Bar> {
    if result.workload == "mainnet" {
        return result.per_block.iter().map(|b| Bar { label: b.block.clone(), value: b.speedup, mark: b.bound.map(|bound| bound.scheduled_speedup), anchor: false }).collect();
    }
    let mut files: Vec<(String, f64, f64)> = Vec::new();
    for block in &result.per_block {
        let file = block.block.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
        match files.last_mut() {
            Some((name, sequential, parallel)) if *name == file => {
                *sequential += block.sequential_ms;
                *parallel += block.parallel_ms;
            }
            _ => files.push((file, block.sequential_ms, block.parallel_ms)),
        }
    }
    files.into_iter().map(|(label, sequential, parallel)| Bar { label, value: sequential / parallel, mark: None, anchor: false }).collect()
}

/// RISE pevm's speedups at 2 threads over its own sequential mode, measured on the same kind of
/// 2-core machine (`../shared/reference/pevm-anchor.md`): per workload, the bars drawn under
/// ours in the speedup chart. The mainnet blocks give two: total-time ratio and geometric mean.
const PEVM_TWO_THREADS: [(&str, &[(&str, f64)]); 4] = [
    ("raw-transfers", &[("pevm", 0.82)]),
    ("erc20", &[("pevm", 1.31)]),
    ("uniswap", &[("pevm", 2.10)]),
    ("mainnet", &[("pevm (total)", 1.24), ("pevm (geomean)", 1.10)]),
];

/// The anchor's bars for `workload`, where the run compares with it: 2 threads, against
/// sequential execution, on the workloads' own blocks (not resized by `--txs`).
fn pevm_bars(request: &ExecBench, workload: &str) -> Vec<Bar> {
    if request.threads != 2 || request.baseline != bench::Baseline::Sequential || request.txs.is_some() {
        return Vec::new();
    }
    let figures = PEVM_TWO_THREADS.iter().find(|(name, _)| *name == workload).map_or(&[][..], |(_, figures)| *figures);
    figures.iter().map(|(label, value)| Bar { label: format!("{workload}: {label}"), value: *value, mark: None, anchor: true }).collect()
}

/// Runs the benchmark; with `chart_dir`, writes `exec-speedups.png` (one bar per workload) and
/// one `exec-<corpus workload>.png` per corpus workload there.
pub fn run(request: &ExecBench, chart_dir: Option<&Path>) -> Result<(), String> {
    let contracts = corpus::corpora_dir().join("contracts");
    let mut bars = Vec::new();
    for name in &request.workloads {
        if CORPUS_WORKLOADS.contains(&name.as_str()) {
            eprintln!("[bench] {name}: {} runs per path and block", request.runs);
            let options = CorpusOptions { threads: request.threads, runs: request.runs, path: request.path, bound: request.bound, baseline: request.baseline };
            let result = run_corpus(name, &options)?;
            print_corpus(&result, request.json);
            bars.push(Bar { label: format!("{name} (total)"), value: result.speedup, mark: result.bound.map(|bound| bound.scheduled_speedup), anchor: false });
            if name == "mainnet" {
                bars.push(Bar { label: format!("{name} (geomean)"), value: result.geomean_speedup, mark: None, anchor: false });
            }
            bars.extend(pevm_bars(request, name));
            if let Some(dir) = chart_dir {
                let marks = if request.bound { ", mark: bound" } else { "" };
                let title = format!("{name}: speedup per {} ({} threads{marks})", if name == "mainnet" { "block" } else { "fixture file" }, request.threads);
                bar_chart(&dir.join(format!("exec-{name}.png")), &title, &corpus_bars(&result), 1.0)?;
            }
            continue;
        }
        let workload = bench::build(name, request.txs, &contracts)?;
        eprintln!("[bench] {name}: {} transactions, {} runs per path", workload.txs.len(), request.runs);
        let r = bench::run(&workload, request.threads, request.runs, request.path, request.baseline)?;
        if request.json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else {
            println!(
                "{:<19} {:>6} txs {:>13} gas  {} {:>9.2} ms  parallel {:>9.2} ms ({} threads)  {:.2}x  {:.2} Ggas/s  {} failed  peak RSS {:.0} MiB",
                r.workload, r.txs, r.gas, r.baseline, r.sequential_ms, r.parallel_ms, r.threads, r.speedup, r.gigagas_per_s_parallel, r.failed_txs, r.peak_rss_mb
            );
        }
        bars.push(Bar { label: r.workload.clone(), value: r.speedup, mark: None, anchor: false });
        bars.extend(pevm_bars(request, name));
    }
    if let Some(dir) = chart_dir {
        let anchored = if bars.iter().any(|bar| bar.anchor) { " (blue: RISE pevm)" } else { "" };
        let title = format!("parallel vs {}, {} threads{anchored}", request.baseline.label(), request.threads);
        bar_chart(&dir.join("exec-speedups.png"), &title, &bars, 1.0)?;
        eprintln!("[bench] charts written to {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(threads: usize, baseline: bench::Baseline) -> ExecBench {
        ExecBench { workloads: Vec::new(), threads, txs: None, runs: 1, path: bench::ParallelPath::Default, bound: false, baseline, json: false }
    }

    #[test]
    fn pevm_bars_come_only_where_the_run_compares_with_its_anchor() {
        let two = request(2, bench::Baseline::Sequential);
        let raw = pevm_bars(&two, "raw-transfers");
        assert_eq!(raw.len(), 1);
        assert!(raw[0].anchor && (raw[0].value - 0.82).abs() < 1e-9);
        let mainnet: Vec<f64> = pevm_bars(&two, "mainnet").iter().map(|bar| bar.value).collect();
        assert_eq!(mainnet, vec![1.24, 1.10]);
        // No anchor figure for this workload, for resized blocks, for another thread count, or
        // against another baseline.
        assert!(pevm_bars(&two, "hot-recipient").is_empty());
        assert!(pevm_bars(&ExecBench { txs: Some(1430), ..two.clone() }, "raw-transfers").is_empty());
        assert!(pevm_bars(&request(4, bench::Baseline::Sequential), "uniswap").is_empty());
        assert!(pevm_bars(&request(2, bench::Baseline::Without(pseq_executor::Techniques::HOISTING)), "uniswap").is_empty());
    }
}
