//! The `pseq` command line.

use clap::{Args, Parser, Subcommand};
use pseq::{bench_pool, bench_state, blocktest, chain_import, corpus, replay, report::Counts, statetest};
use pseq_executor::ExecutionOptions;
use std::{path::PathBuf, process::ExitCode};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options, chosen by measurement (docs/benchmarks.md, "Allocator"):
/// - `dirty_decay_ms:-1,muzzy_decay_ms:-1`: freed pages stay with the process instead of going back
///   to the kernel. Block execution allocates and frees hundreds of MiB per block; any purging (a
///   10 s or even 60 s decay) made the next block fault the same pages in again, zeroed by the
///   kernel. The heap stays at its peak (about 200 MiB after a 1-gigagas block); set
///   `_RJEM_MALLOC_CONF=dirty_decay_ms:10000` to give memory back.
/// - `lg_extent_max_active_fit:20`: a freed large region may be split for any smaller request
///   (the default only reuses it for requests at most 64 times smaller, so the small allocations
///   of the next block took fresh pages while large free regions sat idle).
/// - `narenas:1`: one arena for every thread (each keeps its thread cache): what a worker
///   allocates and the block's thread frees is reused by whichever thread allocates next.
///   Per-thread arenas kept separate pools and faulted twice as many pages.
///
/// Together, 1-gigagas raw transfers at 2 threads: page faults per 19 blocks 300,000 -> 50,000,
/// parallel 155 -> 105 ms, sequential 126 -> 110 ms.
///
/// Transparent huge pages (`thp:always,metadata_thp:always`) are not on by default: they made the
/// executor benchmarks faster before the options above (1-gigagas raw transfers, 2 threads:
/// parallel 171-205 -> 135-145 ms), but are a latency risk for the node: with the kernel's
/// `defrag=madvise`, a fault in a huge-page region may compact memory synchronously. Right after a
/// full test run (fragmented memory) `engine_payloads` saw no payload rebuild within a second, 3
/// times of 3, and passed with either half turned off. docs/benchmarks.md measures with them on
/// (`_RJEM_MALLOC_CONF`), as pevm's anchor was.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:1,lg_extent_max_active_fit:20,dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

#[derive(Parser)]
#[command(name = "pseq", version, about = "Parallel EVM block builder and sequencer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: block production, JSON-RPC (HTTP + WebSocket), metrics.
    Node(Box<pseq::node::NodeArgs>),
    /// Send signed transfers to a node at a fixed rate; report included tx/s and latency.
    Load {
        /// JSON-RPC URL of the node (pseq, anvil, geth, …).
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        /// Sending accounts (derived from the dev mnemonic, funded by the dev accounts).
        #[arg(long, default_value_t = 1000)]
        accounts: usize,
        /// Transactions per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// How long to send (`60s`, `1m`).
        #[arg(long, default_value = "60s")]
        duration: String,
        /// Kind of transaction: `transfer` (ETH) or `erc20` (ERC-20 `transfer` calls on the
        /// corpus's ERC20Token, deployed and distributed first).
        #[arg(long, default_value = "transfer")]
        kind: String,
        /// One JSON object instead of the summary line.
        #[arg(long)]
        json: bool,
    },
    /// Run EEST blockchain_test_engine fixtures through the Engine API (HTTP + JWT).
    Enginetest {
        /// Fixture files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Executor threads of each node (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// At most this many tests per file.
        #[arg(long)]
        per_file: Option<usize>,
    },
    /// Replay the execution-apis JSON-RPC conformance suite against a node of its own.
    RpcCompat {
        /// The folder with genesis.json, chain.rlp, headfcu.json and the method folders.
        tests: PathBuf,
    },
    /// Snapshot block N and the pre-state it touches from any node (the mainnet-blocks format).
    Fetch {
        /// JSON-RPC URL of the node.
        #[arg(long)]
        rpc: String,
        /// Block number.
        #[arg(long)]
        block: u64,
        /// Output folder (blocks accumulate in it).
        #[arg(long)]
        out: PathBuf,
        /// The fork the block runs under, for chains other than mainnet (e.g. Osaka).
        #[arg(long)]
        fork: Option<String>,
    },
    /// Run EEST state tests through the block executor.
    Statetest {
        /// Fixture files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        exec: ExecArgs,
        /// Only these forks (comma separated, e.g. Cancun,Prague,Osaka).
        #[arg(long, value_delimiter = ',')]
        forks: Vec<String>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Run EEST blockchain tests: import every block, validate headers and state.
    Blocktest {
        /// Fixture files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        exec: ExecArgs,
        /// Where each test keeps its state: `memory`, or `rocksdb` (a fresh datadir per test,
        /// incremental state roots).
        #[arg(long, default_value = "memory", value_parser = ["memory", "rocksdb"])]
        storage: String,
    },
    /// Import a chain file (concatenated RLP blocks) into a datadir, validating every block.
    Import {
        /// The node's datadir (created from the genesis when new).
        #[arg(long)]
        datadir: PathBuf,
        /// geth-format genesis file of the chain.
        #[arg(long)]
        genesis: PathBuf,
        /// The chain file.
        chain: PathBuf,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Datadir maintenance.
    Db {
        #[command(subcommand)]
        what: DbCommand,
    },
    /// Re-execute historical mainnet blocks (the mainnet-blocks corpus format).
    Replay {
        /// The folder holding BLOCKS.txt, block_hashes.json and one folder per block.
        dir: PathBuf,
        /// Only these blocks (comma separated).
        #[arg(long, value_delimiter = ',')]
        blocks: Vec<u64>,
        /// Thread counts at which parallel must equal sequential.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        check_threads: Vec<usize>,
        /// Threads for the timed parallel runs (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed runs per path and block (0: no timing).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// One JSON object per block on stdout.
        #[arg(long)]
        json: bool,
        /// Time the parallel path without its small-block fallback.
        #[arg(long)]
        force_parallel: bool,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Recompute the state root from every stored account and slot; compare with the head.
    Verify {
        /// The node's datadir.
        #[arg(long)]
        datadir: PathBuf,
    },
    /// Unwind the chain to an earlier block.
    Unwind {
        /// The node's datadir.
        #[arg(long)]
        datadir: PathBuf,
        /// Block to keep as the new head.
        #[arg(long)]
        to: u64,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Incremental state root vs from scratch on a large RocksDB state.
    StateRoot {
        /// Plain accounts in the state.
        #[arg(long, default_value_t = 1_000_000)]
        accounts: u64,
        /// Contracts holding storage.
        #[arg(long, default_value_t = 10_000)]
        contracts: u64,
        /// Slots per contract.
        #[arg(long, default_value_t = 100)]
        slots_per_contract: u64,
        /// Accounts changed, and slots changed, by the timed update.
        #[arg(long, default_value_t = 10_000)]
        updates: u64,
        /// Timed runs of the incremental root.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Folder for the temporary datadir.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Transaction pool: admission rate, best-first ordering, memory per transaction.
    Pool {
        /// Signed transactions to admit.
        #[arg(long, default_value_t = 20_000)]
        txs: usize,
        /// Distinct senders.
        #[arg(long, default_value_t = 2_000)]
        senders: usize,
        /// Threads recovering senders (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed runs (median reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Execute, root and commit 1-gigagas raw-transfer blocks on a RocksDB datadir.
    Commit {
        /// Blocks to commit.
        #[arg(long, default_value_t = 5)]
        blocks: usize,
        /// Threads of the executor (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Folder for the temporary datadir.
        #[arg(long, default_value = "target")]
        work_dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Execute synthetic blocks sequentially and in parallel; print medians.
    Exec {
        /// Workloads (comma separated): raw-transfers, erc20, hot-recipient, sequential-chain,
        /// uniswap, erc20-hot-recipient, contended (synthetic, the default set), and mainnet,
        /// eest-benchmark (the blocks of the corpora, timed block by block).
        #[arg(long, value_delimiter = ',', default_value = "raw-transfers,erc20,hot-recipient,sequential-chain,uniswap,erc20-hot-recipient,contended")]
        workload: Vec<String>,
        /// Threads of the parallel path (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Transactions per block (default: each workload's own size).
        #[arg(long)]
        txs: Option<usize>,
        /// Timed runs per path (medians reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Time the parallel path without its small-block fallback.
        #[arg(long)]
        force_parallel: bool,
        /// Time the partitioned path wherever its plan splits the block (Block-STM, forced,
        /// where it does not), whatever the block's size and transactions.
        #[arg(long, conflicts_with = "force_parallel")]
        partitioned: bool,
        /// For the corpus workloads, also bound each block from its own dependencies: the
        /// critical path and the best schedule on `--threads` threads, with no overhead
        /// (`bound` fields; docs/benchmarks.md, "How far the mainnet blocks can go").
        #[arg(long)]
        bound: bool,
        /// Time the parallel path against itself without these Block-STM techniques (comma
        /// separated: hoisting, nonce-waits, lazy-token-credits, held-balances) instead of
        /// against sequential execution: what they buy, measured in one process. The
        /// `sequential_ms` fields then hold the baseline's time, and `baseline` names it.
        #[arg(long, value_delimiter = ',', value_parser = parse_technique, conflicts_with = "bound")]
        without: Vec<pseq_executor::Techniques>,
        /// One JSON object per workload.
        #[arg(long)]
        json: bool,
        /// Folder for PNG charts of the speedups (per workload; per block for the corpora).
        #[arg(long)]
        chart: Option<PathBuf>,
    },
}

/// A Block-STM technique by the name `--without` takes.
fn parse_technique(name: &str) -> Result<pseq_executor::Techniques, String> {
    pseq_executor::Techniques::named(name).ok_or_else(|| {
        let known: Vec<&str> = pseq_executor::Techniques::NAMED.iter().map(|(known, _)| *known).collect();
        format!("unknown technique {name:?} (known: {})", known.join(", "))
    })
}

/// How the executor runs.
#[derive(Args, Clone, Debug)]
struct ExecArgs {
    /// Worker threads of the parallel path (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Use the sequential reference path.
    #[arg(long, conflicts_with = "force_parallel")]
    sequential: bool,
    /// Never take the small-block fallback: every block goes through Block-STM.
    #[arg(long)]
    force_parallel: bool,
    /// Also run the sequential path and fail any case where the results differ.
    #[arg(long)]
    compare: bool,
}

impl ExecArgs {
    fn options(&self) -> ExecutionOptions {
        let threads = self.threads.unwrap_or_else(default_threads);
        if self.sequential {
            ExecutionOptions::sequential()
        } else if self.force_parallel {
            ExecutionOptions::force_parallel(threads)
        } else {
            ExecutionOptions::parallel(threads)
        }
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn finish(result: Result<Counts, String>) -> ExitCode {
    match result {
        Ok(counts) => {
            counts.print_summary(50);
            if counts.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_result<T: serde::Serialize>(result: Result<T, String>, json: bool, text: impl Fn(&T) -> String) -> ExitCode {
    match result {
        Ok(r) if json => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!("{}", text(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Load { rpc, accounts, rate, duration, kind, json } => {
            let kind = match pseq::load::LoadKind::parse(&kind, &corpus::corpora_dir().join("contracts")) {
                Ok(kind) => kind,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let duration = match pseq_config::node::parse_block_time(&duration) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: --duration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let params = pseq::load::LoadParams { rpc, accounts, rate, duration, drain: std::time::Duration::from_secs(30), kind };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(pseq::load::run(&params)) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string(&report).unwrap_or_default());
                    } else {
                        println!("{}", pseq::load::summary(&report));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Enginetest { paths, threads, per_file } => {
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            finish(pseq::enginetest::run(&paths, &pseq::enginetest::EngineTestOptions { threads, per_file }))
        }
        Command::RpcCompat { tests } => match pseq::rpc_compat::run(&tests) {
            Ok(counts) => {
                // Every failure: this suite's list is the to-do list of the RPC surface.
                counts.print_summary(usize::MAX);
                if counts.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Fetch { rpc, block, out, fork } => match pseq::fetch::fetch(&rpc, block, &out, fork.as_deref()) {
            Ok(summary) => {
                println!(
                    "block {block}: {} transactions, {} accounts and {} slots of pre-state written to {}",
                    summary.transactions,
                    summary.accounts,
                    summary.slots,
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Node(args) => match pseq::node::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Statetest { paths, exec, forks } => {
            let options = statetest::StateTestOptions { exec: exec.options(), compare: exec.compare, forks };
            finish(statetest::run(&paths, &options))
        }
        Command::Bench { what: BenchCommand::Exec { workload, threads, txs, runs, force_parallel, partitioned, bound, without, json, chart } } => {
            let path = pseq::bench::ParallelPath::from_flags(force_parallel, partitioned);
            let baseline = match without.into_iter().reduce(pseq_executor::Techniques::union) {
                Some(techniques) => pseq::bench::Baseline::Without(techniques),
                None => pseq::bench::Baseline::Sequential,
            };
            let request = pseq::bench_exec::ExecBench { workloads: workload, threads: threads.unwrap_or_else(default_threads), txs, runs, path, bound, baseline, json };
            if let Some(dir) = &chart {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    eprintln!("error: {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
            }
            match pseq::bench_exec::run(&request, chart.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { what: BenchCommand::StateRoot { accounts, contracts, slots_per_contract, updates, runs, work_dir, json } } => {
            let params = bench_state::StateRootParams { accounts, contracts, slots_per_contract, updates, runs };
            print_result(bench_state::state_root(params, &work_dir), json, |r| {
                format!(
                    "state of {} accounts and {} slots (built in {:.1} s); update of {} accounts and {} slots: incremental root {:.1} ms with the bottom-branch cache warm (accounts {:.1} ms, then the account trie {:.1} ms), {:.1} ms cold, {:.1} ms with the state cache empty; from scratch {:.1} ms: {:.1}x warm, {:.1}x cold, {:.1}x with the state cache empty; cache warm-up {:.0} ms ({} branches, {:.0} MiB); {} trie nodes changed; datadir {:.0} MiB; peak RSS {:.0} MiB",
                    r.accounts, r.slots, r.build_s, r.updated_accounts, r.updated_slots, r.incremental_ms, r.accounts_ms, r.account_trie_ms, r.incremental_cold_ms, r.incremental_uncached_ms, r.from_scratch_ms, r.speedup, r.speedup_cold, r.speedup_uncached, r.warm_up_ms, r.trie_cache_branches, r.trie_cache_mb, r.trie_nodes_changed, r.datadir_mb, r.peak_rss_mb
                )
            })
        }
        Command::Bench { what: BenchCommand::Pool { txs, senders, threads, runs, json } } => {
            let threads = threads.unwrap_or_else(default_threads);
            print_result(bench_pool::run(txs, senders, threads, runs), json, |r| {
                format!(
                    "{} transactions from {} senders, {} threads: admission {:.0} tx/s (decode + sender recovery + stateless checks); first 10,000 best of {} pending in {:.2} ms; {:.0} bytes per pooled transaction",
                    r.txs, r.senders, r.threads, r.admission_tx_per_s, r.pool_txs, r.best_first_10k_ms, r.bytes_per_tx
                )
            })
        }
        Command::Bench { what: BenchCommand::Commit { blocks, threads, work_dir, json } } => {
            let threads = threads.unwrap_or_else(default_threads);
            let contracts = corpus::corpora_dir().join("contracts");
            print_result(bench_state::commit(blocks, threads, &contracts, &work_dir), json, |r| {
                format!(
                    "{} blocks of {} txs ({} gas): execute {:.0} ms, state root {:.0} ms, commit {:.0} ms per block: {:.2} blocks/s (root + commit), {:.0} MB/s written, datadir +{:.1} MiB per block",
                    r.blocks, r.txs_per_block, r.gas_per_block, r.execute_ms, r.state_root_ms, r.commit_ms, r.blocks_per_s, r.commit_mb_per_s, r.mb_per_block
                )
            })
        }
        Command::Blocktest { paths, exec, storage } => {
            let backend = if storage == "rocksdb" { blocktest::StateBackend::RocksDb } else { blocktest::StateBackend::Memory };
            let options = blocktest::BlockTestOptions { exec: exec.options(), compare: exec.compare, backend };
            finish(blocktest::run(&paths, &options))
        }
        Command::Import { datadir, genesis, chain, exec } => match chain_import::import(&datadir, &genesis, &chain, &exec.options()) {
            Ok(summary) => {
                println!("{} blocks imported ({} already present), head {}", summary.imported, summary.already_present, summary.head);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Db { what: DbCommand::Verify { datadir } } => match chain_import::verify(&datadir) {
            Ok(report) => {
                println!(
                    "head {}: computed state root {}, header {}; {} accounts, {} slots, {} storage-root mismatches: {}",
                    report.head,
                    report.computed_root,
                    report.header_root,
                    report.accounts,
                    report.slots,
                    report.storage_root_mismatches,
                    if report.ok() { "OK" } else { "MISMATCH" }
                );
                if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Db { what: DbCommand::Unwind { datadir, to } } => {
            let result = pseq_storage::Storage::open(&datadir, &pseq_storage::StorageOptions::default())
                .and_then(|s| s.unwind_to(to).map(|()| s.head().0));
            match result {
                Ok(head) => {
                    println!("unwound to block {head}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay { dir, blocks, check_threads, threads, runs, json, force_parallel } => {
            let threads = threads.unwrap_or_else(default_threads);
            let options = replay::ReplayOptions { blocks, check_threads, threads, runs, json, force_parallel };
            finish(replay::run(&dir, &options).map(|(counts, timings)| {
                let total_seq: f64 = timings.iter().map(|t| t.sequential_ms).sum();
                let total_par: f64 = timings.iter().map(|t| t.parallel_ms).sum();
                if total_par > 0.0 {
                    eprintln!("total sequential {total_seq:.1} ms, parallel {total_par:.1} ms ({threads} threads): {:.2}x", total_seq / total_par);
                }
                counts
            }))
        }
    }
}
