//! The node's configuration: one [`NodeConfig`] resolved from layers of settings (command-line
//! flags over `PSEQ_*` environment variables over a TOML file over defaults) and checked before
//! the node starts.

use serde::Deserialize;
use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

/// One layer of settings; every field is optional. The TOML file uses the same names as the
/// command-line flags (`http-port`, `block-time`, …).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigLayer {
    /// Run the built-in dev chain.
    pub dev: Option<bool>,
    /// The RocksDB datadir.
    pub datadir: Option<PathBuf>,
    /// A geth-format genesis file (instead of the dev chain).
    pub genesis: Option<PathBuf>,
    /// Chain id of the dev chain.
    pub chain_id: Option<u64>,
    /// Address of the HTTP and WebSocket JSON-RPC server.
    pub http_addr: Option<IpAddr>,
    /// Port of the HTTP and WebSocket JSON-RPC server.
    pub http_port: Option<u16>,
    /// Address of the Engine API server.
    pub authrpc_addr: Option<IpAddr>,
    /// Port of the Engine API server.
    pub authrpc_port: Option<u16>,
    /// File holding the Engine API's hex JWT secret.
    pub authrpc_jwtsecret: Option<PathBuf>,
    /// Port of the `/metrics` and `/health` endpoints.
    pub metrics_port: Option<u16>,
    /// Interval between blocks (`1s`, `200ms`, `2`); none: a block per arriving batch.
    pub block_time: Option<String>,
    /// Block gas limit (of the dev genesis and the blocks built).
    pub gas_limit: Option<u64>,
    /// Executor threads.
    pub threads: Option<usize>,
    /// In interval mode, execute arriving transactions into the open next block (default true).
    pub continuous: Option<bool>,
}

impl ConfigLayer {
    /// Parses a TOML configuration file.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => format!("line {line}: {}", e.message()),
                None => e.message().to_string(),
            }
        })
    }

    /// Reads and parses a TOML configuration file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// This layer with unset fields taken from `below`.
    pub fn over(self, below: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            dev: self.dev.or(below.dev),
            datadir: self.datadir.or(below.datadir),
            genesis: self.genesis.or(below.genesis),
            chain_id: self.chain_id.or(below.chain_id),
            http_addr: self.http_addr.or(below.http_addr),
            http_port: self.http_port.or(below.http_port),
            authrpc_addr: self.authrpc_addr.or(below.authrpc_addr),
            authrpc_port: self.authrpc_port.or(below.authrpc_port),
            authrpc_jwtsecret: self.authrpc_jwtsecret.or(below.authrpc_jwtsecret),
            metrics_port: self.metrics_port.or(below.metrics_port),
            block_time: self.block_time.or(below.block_time),
            gas_limit: self.gas_limit.or(below.gas_limit),
            threads: self.threads.or(below.threads),
            continuous: self.continuous.or(below.continuous),
        }
    }
}

/// How the node produces blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MiningMode {
    /// A block every interval, empty or not.
    Interval(Duration),
    /// A block as soon as transactions arrive (those arriving within a few milliseconds of each
    /// other share one block).
    Auto,
    /// Only on request (`evm_mine`).
    Manual,
}

/// The resolved, checked configuration of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Whether the built-in dev chain runs (and the dev RPC namespace is on).
    pub dev: bool,
    /// The RocksDB datadir.
    pub datadir: PathBuf,
    /// A genesis file; `None` for the dev chain.
    pub genesis: Option<PathBuf>,
    /// Chain id of the dev chain.
    pub chain_id: u64,
    /// HTTP and WebSocket JSON-RPC address.
    pub http_addr: IpAddr,
    /// HTTP and WebSocket JSON-RPC port (0: any free port).
    pub http_port: u16,
    /// Engine API address.
    pub authrpc_addr: IpAddr,
    /// Engine API port.
    pub authrpc_port: u16,
    /// JWT secret file; `None`: `jwt.hex` in the datadir, generated when missing.
    pub authrpc_jwtsecret: Option<PathBuf>,
    /// Metrics and health port.
    pub metrics_port: u16,
    /// Block production.
    pub mining: MiningMode,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Executor threads.
    pub threads: usize,
    /// Continuous building in interval mode: the next block stays open and executes
    /// transactions as they arrive.
    pub continuous: bool,
}

/// Parses a block time: `1s`, `200ms`, `1m`, or a plain number of seconds.
pub fn parse_block_time(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Duration::from_secs_f64(seconds),
        Ok(_) => return Err(format!("invalid block time {text:?}")),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("invalid block time {text:?}: {e}"))?,
    };
    if duration < Duration::from_millis(10) || duration > Duration::from_secs(3600) {
        return Err(format!("block time {text:?} is outside 10ms..1h"));
    }
    Ok(duration)
}

/// The default datadir: `$XDG_DATA_HOME/pseq` (else `~/.local/share/pseq`), `dev` or `chain`
/// below it.
pub fn default_datadir(dev: bool) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pseq").join(if dev { "dev" } else { "chain" })
}

impl NodeConfig {
    /// Resolves and checks a layer of settings (already merged from flags, environment and
    /// file). Errors name the setting.
    pub fn resolve(layer: ConfigLayer) -> Result<Self, String> {
        let dev = layer.dev.unwrap_or(false);
        if dev && layer.genesis.is_some() {
            return Err("--dev and --genesis exclude each other".into());
        }
        if !dev && layer.genesis.is_none() {
            return Err("either --dev or --genesis <genesis.json> is needed".into());
        }
        let gas_limit = layer.gas_limit.unwrap_or(crate::dev::DEV_GAS_LIMIT);
        if gas_limit < 5_000 {
            return Err(format!("--gas-limit {gas_limit} is below the protocol minimum of 5000"));
        }
        let threads = layer.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 || threads > 1024 {
            return Err(format!("--threads {threads} is outside 1..1024"));
        }
        let chain_id = layer.chain_id.unwrap_or(crate::dev::DEV_CHAIN_ID);
        if chain_id == 0 {
            return Err("--chain-id 0 is not a valid EIP-155 chain id".into());
        }
        let mining = match &layer.block_time {
            Some(text) => MiningMode::Interval(parse_block_time(text)?),
            None if dev => MiningMode::Auto,
            // A chain of its own genesis is driven by a consensus client through the Engine API.
            None => MiningMode::Manual,
        };
        let http_port = layer.http_port.unwrap_or(8545);
        let authrpc_port = layer.authrpc_port.unwrap_or(8551);
        let metrics_port = layer.metrics_port.unwrap_or(9001);
        let ports = [("--http.port", http_port), ("--authrpc.port", authrpc_port), ("--metrics.port", metrics_port)];
        for (i, (name, port)) in ports.iter().enumerate() {
            for (other, other_port) in &ports[i + 1..] {
                if port == other_port && *port != 0 {
                    return Err(format!("{name} and {other} are both {port}"));
                }
            }
        }
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Ok(Self {
            dev,
            datadir: layer.datadir.unwrap_or_else(|| default_datadir(dev)),
            genesis: layer.genesis,
            chain_id,
            http_addr: layer.http_addr.unwrap_or(localhost),
            http_port,
            authrpc_addr: layer.authrpc_addr.unwrap_or(localhost),
            authrpc_port,
            authrpc_jwtsecret: layer.authrpc_jwtsecret,
            metrics_port,
            mining,
            gas_limit,
            threads,
            continuous: layer.continuous.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file = ConfigLayer::from_toml("dev = true\nhttp-port = 9545\nblock-time = \"200ms\"\ngas-limit = 1000000000\n").unwrap();
        let flags = ConfigLayer { http_port: Some(7545), ..Default::default() };
        let config = NodeConfig::resolve(flags.over(file)).unwrap();
        assert_eq!(config.http_port, 7545);
        assert_eq!(config.mining, MiningMode::Interval(Duration::from_millis(200)));
        assert_eq!(config.gas_limit, 1_000_000_000);
        assert!(config.dev);
        assert_eq!(config.authrpc_port, 8551);
    }

    #[test]
    fn bad_settings_are_named() {
        let err = ConfigLayer::from_toml("http-prot = 1").unwrap_err();
        assert!(err.contains("http-prot"), "{err}");
        let dev = |layer: ConfigLayer| NodeConfig::resolve(ConfigLayer { dev: Some(true), ..layer });
        assert!(dev(ConfigLayer { block_time: Some("fast".into()), ..Default::default() }).unwrap_err().contains("block time"));
        assert!(dev(ConfigLayer { block_time: Some("0".into()), ..Default::default() }).unwrap_err().contains("outside"));
        assert!(dev(ConfigLayer { gas_limit: Some(10), ..Default::default() }).unwrap_err().contains("--gas-limit"));
        assert!(dev(ConfigLayer { threads: Some(0), ..Default::default() }).unwrap_err().contains("--threads"));
        assert!(dev(ConfigLayer { http_port: Some(9001), ..Default::default() }).unwrap_err().contains("--metrics.port"));
        assert!(NodeConfig::resolve(ConfigLayer::default()).unwrap_err().contains("--dev"));
    }

    #[test]
    fn block_times() {
        assert_eq!(parse_block_time("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_block_time("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_block_time("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_block_time("-1").is_err());
    }
}
