//! `pseq node`: opens (or initialises) the datadir, starts the pool, the block producer, the
//! JSON-RPC server (HTTP + WebSocket) and the metrics endpoint, and runs until SIGINT or
//! SIGTERM; then it finishes the block in progress, writes the pool journal, flushes and exits.

use crate::chain_import::{open_datadir, read_genesis};
use clap::Args;
use pseq_builder::{BuilderSettings, Miner, Sequencer};
use pseq_config::{
    dev::{dev_chain_spec, dev_signers},
    node::ConfigLayer,
    ChainSpec, NodeConfig,
};
use alloy_rpc_types_engine::JwtSecret;
use pseq_mempool::journal;
use pseq_rpc::RpcContext;
use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    path::PathBuf,
    sync::Arc,
};

/// Flags of `pseq node`; each also reads a `PSEQ_*` environment variable, and a TOML file
/// (`--config`) fills what neither gives.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// TOML configuration file (keys as the flags: `http-port = 8545`, `block-time = "1s"`).
    #[arg(long, env = "PSEQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run the built-in dev chain (chain id 31337, 20 funded accounts, dev RPC methods).
    #[arg(long, env = "PSEQ_DEV")]
    pub dev: bool,
    /// RocksDB datadir (default: ~/.local/share/pseq/dev or …/chain).
    #[arg(long, env = "PSEQ_DATADIR")]
    pub datadir: Option<PathBuf>,
    /// geth-format genesis file of the chain to run (instead of --dev).
    #[arg(long, env = "PSEQ_GENESIS")]
    pub genesis: Option<PathBuf>,
    /// Chain id of the dev chain.
    #[arg(long, env = "PSEQ_CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// Address of the JSON-RPC server (HTTP and WebSocket).
    #[arg(long = "http.addr", env = "PSEQ_HTTP_ADDR")]
    pub http_addr: Option<IpAddr>,
    /// Port of the JSON-RPC server (HTTP and WebSocket; 0: any free port).
    #[arg(long = "http.port", env = "PSEQ_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Address of the Engine API server.
    #[arg(long = "authrpc.addr", env = "PSEQ_AUTHRPC_ADDR")]
    pub authrpc_addr: Option<IpAddr>,
    /// Port of the Engine API server.
    #[arg(long = "authrpc.port", env = "PSEQ_AUTHRPC_PORT")]
    pub authrpc_port: Option<u16>,
    /// File with the Engine API's hex JWT secret.
    #[arg(long = "authrpc.jwtsecret", env = "PSEQ_AUTHRPC_JWTSECRET")]
    pub authrpc_jwtsecret: Option<PathBuf>,
    /// Port of /metrics and /health (0: any free port).
    #[arg(long = "metrics.port", env = "PSEQ_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Interval between blocks (`1s`, `200ms`); without it, a block as soon as transactions
    /// arrive (automine).
    #[arg(long, env = "PSEQ_BLOCK_TIME")]
    pub block_time: Option<String>,
    /// Block gas limit.
    #[arg(long, env = "PSEQ_GAS_LIMIT")]
    pub gas_limit: Option<u64>,
    /// Executor threads (default: all cores).
    #[arg(long, env = "PSEQ_THREADS")]
    pub threads: Option<usize>,
    /// With --block-time: keep the next block open and execute transactions into it as they
    /// arrive, so that little is left to do when it is due (default true).
    #[arg(long, env = "PSEQ_CONTINUOUS", value_name = "BOOL")]
    pub continuous: Option<bool>,
}

impl NodeArgs {
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            dev: self.dev.then_some(true),
            datadir: self.datadir.clone(),
            genesis: self.genesis.clone(),
            chain_id: self.chain_id,
            http_addr: self.http_addr,
            http_port: self.http_port,
            authrpc_addr: self.authrpc_addr,
            authrpc_port: self.authrpc_port,
            authrpc_jwtsecret: self.authrpc_jwtsecret.clone(),
            metrics_port: self.metrics_port,
            block_time: self.block_time.clone(),
            gas_limit: self.gas_limit,
            threads: self.threads,
            continuous: self.continuous,
        }
    }
}

/// Resolves the configuration: flags and environment over the TOML file over defaults.
pub fn resolve_config(args: &NodeArgs) -> Result<NodeConfig, String> {
    let file = match &args.config {
        Some(path) => ConfigLayer::read(path)?,
        None => ConfigLayer::default(),
    };
    NodeConfig::resolve(args.layer().over(file))
}

/// Fails when a port is taken, before anything is written.
fn check_port(addr: SocketAddr, what: &str) -> Result<(), String> {
    if addr.port() == 0 {
        return Ok(());
    }
    TcpListener::bind(addr).map(drop).map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

fn chain_spec(config: &NodeConfig) -> Result<ChainSpec, String> {
    match &config.genesis {
        Some(path) => read_genesis(path),
        None => dev_chain_spec(config.chain_id, config.gas_limit),
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run(args: &NodeArgs) -> Result<(), String> {
    let config = resolve_config(args)?;
    let spec = chain_spec(&config)?;
    let rpc_addr = SocketAddr::new(config.http_addr, config.http_port);
    let metrics_addr = SocketAddr::new(config.http_addr, config.metrics_port);
    check_port(rpc_addr, "JSON-RPC")?;
    check_port(metrics_addr, "metrics")?;
    check_port(SocketAddr::new(config.authrpc_addr, config.authrpc_port), "Engine API")?;
    if let Some(path) = &config.authrpc_jwtsecret {
        JwtSecret::from_file(path).map_err(|e| format!("--authrpc.jwtsecret {}: {e}", path.display()))?;
    }

    let storage = Arc::new(open_datadir(&config.datadir, &spec)?);
    let (head, head_hash) = storage.head();
    tracing::info!(datadir = %config.datadir.display(), chain_id = spec.chain_id, head, %head_hash, "datadir opened");
    spawn_trie_cache_warm_up(storage.clone());
    spawn_kzg_setup_load();
    let gas_limit = if config.dev { config.gas_limit } else { args.gas_limit.unwrap_or(spec.genesis_header.gas_limit) };
    let settings = BuilderSettings { gas_limit, threads: config.threads, continuous: config.continuous, ..Default::default() };
    let sequencer = Arc::new(Sequencer::new(storage.clone(), spec, settings).map_err(|e| e.to_string())?);

    let journal_path = config.datadir.join("txpool.journal");
    reload_journal(&sequencer, &journal_path);

    let miner = Miner::spawn(sequencer.clone(), config.mining).map_err(|e| format!("cannot start block production: {e}"))?;
    let mut context = RpcContext::new(sequencer.clone());
    context.miner = Some(miner.commands());
    context.dev = config.dev;
    if config.dev {
        let signers = dev_signers()?;
        print_dev_accounts(&signers);
        context = context.with_signers(signers);
    }
    let engine_module = pseq_rpc::engine_module(RpcContext::new(sequencer.clone()))?;
    let module = pseq_rpc::module(context)?;
    let jwt = load_or_create_jwt(&config)?;
    let engine_addr = SocketAddr::new(config.authrpc_addr, config.authrpc_port);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads.clamp(2, 8))
        .thread_name("pseq-rpc")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(async {
        let (bound, handle) = pseq_rpc::start_rpc(rpc_addr, module).await?;
        let metrics = pseq_rpc::start_metrics(metrics_addr, sequencer.clone()).await?;
        let (engine, engine_handle) = pseq_rpc::start_engine(engine_addr, engine_module, jwt).await?;
        tracing::info!(http = %format!("http://{bound}"), ws = %format!("ws://{bound}"), engine = %format!("http://{engine}"), metrics = %format!("http://{metrics}/metrics"), "JSON-RPC listening");
        // A machine-readable line for scripts and tests that start the node on port 0.
        println!("pseq node listening: rpc={bound} metrics={metrics} engine={engine}");
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = handle.stop();
        let _ = engine_handle.stop();
        handle.stopped().await;
        engine_handle.stopped().await;
        Ok::<_, String>(())
    });
    miner.shutdown();
    match journal::save(&sequencer.pool().lock(), &journal_path) {
        Ok(n) => tracing::info!(transactions = n, path = %journal_path.display(), "pool journal written"),
        Err(e) => tracing::error!(error = %e, "pool journal not written"),
    }
    storage.flush().map_err(|e| format!("flush: {e}"))?;
    let (head, hash) = storage.head();
    tracing::info!(head, %hash, "stopped");
    result
}

/// The Engine API's JWT secret: `--authrpc.jwtsecret`, else `jwt.hex` in the datadir (created
/// with a random secret when missing).
fn load_or_create_jwt(config: &NodeConfig) -> Result<JwtSecret, String> {
    match &config.authrpc_jwtsecret {
        Some(path) => JwtSecret::from_file(path).map_err(|e| format!("--authrpc.jwtsecret {}: {e}", path.display())),
        None => {
            let path = config.datadir.join("jwt.hex");
            if path.exists() {
                JwtSecret::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))
            } else {
                JwtSecret::try_create_random(&path).map_err(|e| format!("{}: {e}", path.display()))
            }
        }
    }
}

fn reload_journal(sequencer: &Sequencer, path: &std::path::Path) {
    if !path.exists() {
        return;
    }
    match journal::load(path) {
        Ok(entries) => {
            let mut account_of = |address| sequencer.sender_account(address).unwrap_or_default();
            let reloaded = journal::reload(&mut sequencer.pool().lock(), &entries, &mut account_of);
            tracing::info!(?reloaded, "pool journal reloaded");
        }
        Err(e) => tracing::warn!(error = %e, path = %path.display(), "pool journal unreadable, starting with an empty pool"),
    }
}

fn print_dev_accounts(signers: &[alloy_signer_local::PrivateKeySigner]) {
    println!("Available accounts (10000 ETH each), mnemonic \"{}\":", pseq_config::dev::DEV_MNEMONIC);
    for (i, signer) in signers.iter().enumerate() {
        println!("({i}) {:?} 0x{}", signer.address(), hex::encode(signer.to_bytes()));
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers, stop on Ctrl-C through the portable path.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Loads the KZG trusted setup of the point-evaluation precompile in the background: loaded on
/// first use instead, it would hold up the first block that calls the precompile for as long as
/// loading takes (about a second).
fn spawn_kzg_setup_load() {
    let spawned = std::thread::Builder::new().name("kzg-setup".into()).spawn(|| {
        let took = pseq_executor::evm::preload_kzg_setup();
        tracing::info!(ms = took.as_millis() as u64, "KZG trusted setup loaded");
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start loading the KZG trusted setup; the first block calling the point-evaluation precompile loads it");
    }
}

/// Fills the state root's cache of the trie's lowest branches from the datadir in the
/// background, so that the first blocks after a start are not slower than later ones. The
/// cache is content-addressed, so blocks committed meanwhile are safe.
fn spawn_trie_cache_warm_up(storage: Arc<pseq_storage::Storage>) {
    let spawned = std::thread::Builder::new().name("trie-cache-warm-up".into()).spawn(move || {
        let started = std::time::Instant::now();
        match storage.warm_trie_cache() {
            Ok(report) => {
                let (_, bytes, _, _) = storage.trie_cache_stats();
                tracing::info!(
                    branches = report.branches,
                    leaves = report.leaves,
                    full = report.full,
                    mib = bytes >> 20,
                    ms = started.elapsed().as_millis() as u64,
                    "state-root cache warmed"
                );
                if report.mismatches > 0 {
                    tracing::warn!(mismatches = report.mismatches, "stored trie branches whose leaves hash to something else were left out of the cache; run `pseq db verify`");
                }
            }
            Err(e) => tracing::warn!(error = %e, "state-root cache warm-up failed; state roots read the datadir instead"),
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the state-root cache warm-up");
    }
}

