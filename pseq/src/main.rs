//! The `pseq` command line.

use clap::{Args, Parser, Subcommand};
use pseq::{report::Counts, statetest};
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
        let threads = self.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        if self.sequential {
            ExecutionOptions::sequential()
        } else if self.force_parallel {
            ExecutionOptions::force_parallel(threads)
        } else {
            ExecutionOptions::parallel(threads)
        }
    }
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
    }
}
