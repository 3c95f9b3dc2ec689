//! `pseq bench exec` end to end: a synthetic workload and the mainnet corpus workload through the
//! binary, JSON output and PNG charts; the EEST benchmark workload on one folder of fixtures.

use pseq::{bench_corpus, corpus};
use std::process::Command;

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path).map(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000).unwrap_or(false)
}

#[test]
fn bench_exec_times_mainnet_blocks_and_a_synthetic_block_and_draws_charts() {
    let charts = tempfile::tempdir().expect("temporary folder");
    let out = Command::new(env!("CARGO_BIN_EXE_pseq"))
        .args(["bench", "exec", "--workload", "raw-transfers,mainnet", "--txs", "2000", "--threads", "2", "--runs", "1", "--json", "--chart"])
        .arg(charts.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("run pseq");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pseq bench exec failed: {stderr}");
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 2, "one object per workload");

    let raw = &lines[0];
    assert_eq!(raw["workload"], "raw-transfers");
    assert_eq!(raw["txs"], 2000);
    assert_eq!(raw["gas"], 2000 * 21_000);

    let mainnet = &lines[1];
    assert_eq!(mainnet["workload"], "mainnet");
    let blocks = mainnet["per_block"].as_array().expect("per-block table");
    assert_eq!(blocks.len(), 67);
    assert_eq!(mainnet["blocks"], 67);
    let number = |v: &serde_json::Value| v.as_f64().expect("a number");
    let sequential: f64 = blocks.iter().map(|b| number(&b["sequential_ms"])).sum();
    let parallel: f64 = blocks.iter().map(|b| number(&b["parallel_ms"])).sum();
    assert!((number(&mainnet["speedup"]) - sequential / parallel).abs() < 1e-9);
    let gas: u64 = blocks.iter().map(|b| b["gas"].as_u64().expect("gas")).sum();
    assert_eq!(mainnet["gas"].as_u64(), Some(gas));
    let (min, max) = (number(&mainnet["min_speedup"]), number(&mainnet["max_speedup"]));
    let geomean = number(&mainnet["geomean_speedup"]);
    assert!(min > 0.0 && min <= geomean && geomean <= max, "min {min}, geomean {geomean}, max {max}");
    // Block 46147 holds one plain transfer: the default path runs it sequentially.
    let first = &blocks[0];
    assert_eq!((first["block"].as_str(), first["txs"].as_u64(), first["path"].as_str()), (Some("46147"), Some(1), Some("SmallBlockFallback")));

    for chart in ["exec-speedups.png", "exec-mainnet.png"] {
        assert!(is_png(&charts.path().join(chart)), "{chart} missing or not a PNG; stderr: {stderr}");
    }
}

#[test]
fn eest_benchmark_workload_measures_every_valid_block_of_its_fixtures() {
    let dir = corpus::eest_benchmark().expect("eest benchmark corpus").join("blockchain_tests/benchmark/compute/scenario");
    let options = bench_corpus::CorpusOptions { threads: 2, runs: 1, path: pseq::bench::ParallelPath::ForcedBlockStm, bound: true, baseline: pseq::bench::Baseline::Sequential };
    let result = bench_corpus::eest_benchmark(&dir, &options).expect("workload runs");
    assert!(result.blocks >= 1);
    assert_eq!(result.blocks, result.per_block.len());
    for block in &result.per_block {
        assert!(block.block.starts_with("transaction_types/empty_block/"), "{}", block.block);
        assert!(block.sequential_ms > 0.0 && block.parallel_ms > 0.0);
        // `--bound`: an empty block has no transactions to chain; all of it is the rest.
        let bound = block.bound.expect("a bound per block");
        assert_eq!((bound.txs_ms, bound.critical_path_ms, bound.scheduled_ms), (0.0, 0.0, 0.0), "{}", block.block);
    }
    assert!(result.bound.is_some(), "a bound for the workload");
}

#[test]
fn bench_exec_without_a_technique_times_the_parallel_path_against_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_pseq"))
        .args(["bench", "exec", "--workload", "erc20-hot-recipient", "--txs", "600", "--threads", "2", "--runs", "1", "--force-parallel", "--json"])
        .args(["--without", "lazy-token-credits,hoisting"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run pseq");
    assert!(out.status.success(), "pseq bench exec failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(result["workload"], "erc20-hot-recipient");
    assert_eq!(result["baseline"], "without hoisting,lazy-token-credits");
    assert!(result["sequential_ms"].as_f64().is_some_and(|ms| ms > 0.0));

    // An unknown name is refused, with the known ones.
    let out = Command::new(env!("CARGO_BIN_EXE_pseq")).args(["bench", "exec", "--workload", "erc20", "--without", "magic"]).output().expect("run pseq");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown technique \"magic\"") && stderr.contains("nonce-waits"), "{stderr}");
}
