//! The `pseq` command line.

use clap::{Args, Parser, Subcommand};
use pseq::{blocktest, replay, report::Counts, statetest};
use pseq_executor::ExecutionOptions;
use std::{path::PathBuf, process::ExitCode};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "pseq", version, about = "Parallel EVM block builder and sequencer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Run EEST blockchain tests: import every block, validate headers and state.
    Blocktest {
        /// Fixture files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        exec: ExecArgs,
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
    },
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Statetest { paths, exec, forks } => {
            let options = statetest::StateTestOptions { exec: exec.options(), compare: exec.compare, forks };
            finish(statetest::run(&paths, &options))
        }
        Command::Blocktest { paths, exec } => {
            let options = blocktest::BlockTestOptions { exec: exec.options(), compare: exec.compare };
            finish(blocktest::run(&paths, &options))
        }
        Command::Replay { dir, blocks, check_threads, threads, runs, json } => {
            let threads = threads.unwrap_or_else(default_threads);
            let options = replay::ReplayOptions { blocks, check_threads, threads, runs, json };
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
