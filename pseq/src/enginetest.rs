//! `pseq enginetest`: runs EEST `blockchain_test_engine` fixtures through the Engine API over
//! HTTP with a JWT, as a consensus client drives a node. For each test: a fresh RocksDB datadir
//! initialised from the fixture's genesis header and `pre` state, a sequencer on it, the
//! authenticated Engine API server on a free port; then every payload goes through
//! `engine_newPayloadV<n>` (it must be VALID) followed by `engine_forkchoiceUpdatedV<m>` to it
//! (VALID), and the final head must be the fixture's `lastblockhash`.

use crate::{
    blocktest::{FixtureAccount, FixtureConfig},
    fork::Network,
    report::{Counts, Progress},
    testfiles::json_files,
};
use alloy_consensus::Header;
use alloy_primitives::{Address, Bloom, Bytes, B256, B64, U256, U64};
use alloy_rpc_types_engine::{Claims, JwtSecret};
use jsonrpsee::{
    core::{client::ClientT, params::ArrayParams},
    http_client::{HeaderMap, HeaderValue, HttpClientBuilder},
};
use pseq_builder::{BuilderSettings, Sequencer};
use pseq_config::{AllocAccount, ChainSpec};
use pseq_storage::{GenesisAccount, Storage, StorageOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    network: String,
    genesis_block_header: FixtureHeader,
    pre: BTreeMap<Address, FixtureAccount>,
    engine_new_payloads: Vec<FixturePayload>,
    lastblockhash: B256,
    config: Option<FixtureConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureHeader {
    parent_hash: B256,
    uncle_hash: B256,
    coinbase: Address,
    state_root: B256,
    transactions_trie: B256,
    receipt_trie: B256,
    bloom: Bloom,
    difficulty: U256,
    number: U64,
    gas_limit: U64,
    gas_used: U64,
    timestamp: U64,
    extra_data: Bytes,
    mix_hash: B256,
    nonce: B64,
    base_fee_per_gas: Option<U64>,
    withdrawals_root: Option<B256>,
    blob_gas_used: Option<U64>,
    excess_blob_gas: Option<U64>,
    parent_beacon_block_root: Option<B256>,
    requests_hash: Option<B256>,
    hash: B256,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixturePayload {
    params: Vec<Value>,
    new_payload_version: String,
    forkchoice_updated_version: String,
    validation_error: Option<String>,
}

impl FixtureHeader {
    fn header(&self) -> Header {
        Header {
            parent_hash: self.parent_hash,
            ommers_hash: self.uncle_hash,
            beneficiary: self.coinbase,
            state_root: self.state_root,
            transactions_root: self.transactions_trie,
            receipts_root: self.receipt_trie,
            logs_bloom: self.bloom,
            difficulty: self.difficulty,
            number: self.number.to(),
            gas_limit: self.gas_limit.to(),
            gas_used: self.gas_used.to(),
            timestamp: self.timestamp.to(),
            extra_data: self.extra_data.clone(),
            mix_hash: self.mix_hash,
            nonce: self.nonce,
            base_fee_per_gas: self.base_fee_per_gas.map(|v| v.to()),
            withdrawals_root: self.withdrawals_root,
            blob_gas_used: self.blob_gas_used.map(|v| v.to()),
            excess_blob_gas: self.excess_blob_gas.map(|v| v.to()),
            parent_beacon_block_root: self.parent_beacon_block_root,
            requests_hash: self.requests_hash,
            ..Default::default()
        }
    }
}

/// Options of an engine-test run.
#[derive(Debug, Clone)]
pub struct EngineTestOptions {
    /// Executor threads of each node.
    pub threads: usize,
    /// At most this many tests per fixture file (`None`: all).
    pub per_file: Option<usize>,
}

/// Runs every engine test under `paths`.
pub fn run(paths: &[PathBuf], options: &EngineTestOptions) -> Result<Counts, String> {
    let files = json_files(paths)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let mut counts = Counts::default();
    let mut progress = Progress::new("enginetest", files.len());
    for file in &files {
        run_file(&runtime, file, options, &mut counts);
        progress.tick(&counts);
    }
    Ok(counts)
}

fn run_file(runtime: &tokio::runtime::Runtime, path: &Path, options: &EngineTestOptions, counts: &mut Counts) {
    let display = path.display();
    let tests: BTreeMap<String, Value> = match std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string())) {
        Ok(tests) => tests,
        Err(e) => return counts.fail(format!("{display}: not an engine test fixture: {e}")),
    };
    for (name, value) in tests.into_iter().take(options.per_file.unwrap_or(usize::MAX)) {
        let result = serde_json::from_value::<Fixture>(value).map_err(|e| format!("malformed test: {e}")).and_then(|f| runtime.block_on(run_test(&f, options)));
        match result {
            Ok(()) => counts.pass(),
            Err(e) => counts.fail(format!("{display} {name}: {e}")),
        }
    }
}

fn chain_spec(fixture: &Fixture) -> Result<ChainSpec, String> {
    let network = Network::parse(&fixture.network)?;
    let chain_id = FixtureConfig::chain_id(fixture.config.as_ref());
    let blob_schedule = FixtureConfig::blob_schedule(fixture.config.as_ref());
    let alloc = fixture
        .pre
        .iter()
        .map(|(a, acc)| (*a, AllocAccount { balance: acc.balance, nonce: acc.nonce.to(), code: acc.code.clone(), storage: acc.storage.clone() }))
        .collect();
    let genesis_header = fixture.genesis_block_header.header();
    if genesis_header.hash_slow() != fixture.genesis_block_header.hash {
        return Err(format!("genesis header hashes to {}, fixture says {}", genesis_header.hash_slow(), fixture.genesis_block_header.hash));
    }
    Ok(ChainSpec { chain_id, network, blob_schedule, deposit_contract: None, alloc, genesis_header, fork_points: Default::default() })
}

async fn run_test(fixture: &Fixture, options: &EngineTestOptions) -> Result<(), String> {
    let spec = chain_spec(fixture)?;
    let dir = tempfile::tempdir().map_err(|e| format!("temporary datadir: {e}"))?;
    let alloc: Vec<(Address, GenesisAccount)> =
        spec.alloc.iter().map(|(a, acc)| (*a, GenesisAccount { balance: acc.balance, nonce: acc.nonce, code: acc.code.clone(), storage: acc.storage.clone() })).collect();
    let storage_options = StorageOptions { block_cache_bytes: 8 << 20, ..Default::default() };
    let storage = Arc::new(Storage::open_or_init(dir.path(), &storage_options, spec.chain_id, &spec.genesis_header, &alloc).map_err(|e| format!("genesis: {e}"))?);
    let settings = BuilderSettings { gas_limit: spec.genesis_header.gas_limit, threads: options.threads, ..Default::default() };
    let sequencer = Arc::new(Sequencer::new(storage.clone(), spec, settings).map_err(|e| e.to_string())?);
    let module = pseq_rpc::engine_module(pseq_rpc::RpcContext::new(sequencer))?;
    let secret = JwtSecret::random();
    let (addr, handle) = pseq_rpc::start_engine("127.0.0.1:0".parse().map_err(|_| "address")?, module, secret).await?;
    let result = drive(addr, &secret, fixture).await;
    let _ = handle.stop();
    handle.stopped().await;
    let (_, head) = storage.head();
    release(storage).await;
    result?;
    if head != fixture.lastblockhash {
        return Err(format!("head {head} != lastblockhash {}", fixture.lastblockhash));
    }
    Ok(())
}

/// Waits (up to five seconds) until the server's connection tasks have let go of `storage`, so the
/// database is closed before its temporary folder is removed (otherwise RocksDB writes its last
/// manifest into a folder being deleted, and the folder stays behind).
async fn release(storage: Arc<Storage>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Arc::strong_count(&storage) > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A bearer token for `secret`, issued now.
pub fn bearer(secret: &JwtSecret) -> Result<String, String> {
    let iat = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let token = secret.encode(&Claims { iat, exp: None }).map_err(|e| e.to_string())?;
    Ok(format!("Bearer {token}"))
}

async fn drive(addr: std::net::SocketAddr, secret: &JwtSecret, fixture: &Fixture) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", HeaderValue::from_str(&bearer(secret)?).map_err(|e| e.to_string())?);
    let client = HttpClientBuilder::default()
        .set_headers(headers)
        .max_request_size(256 << 20)
        .request_timeout(std::time::Duration::from_secs(600))
        .build(format!("http://{addr}"))
        .map_err(|e| e.to_string())?;
    for (i, payload) in fixture.engine_new_payloads.iter().enumerate() {
        let mut params = ArrayParams::new();
        for p in &payload.params {
            params.insert(p).map_err(|e| e.to_string())?;
        }
        let method = format!("engine_newPayloadV{}", payload.new_payload_version);
        let status: Value = client.request(&method, params).await.map_err(|e| format!("payload {i}: {method}: {e}"))?;
        let expected = if payload.validation_error.is_some() { "INVALID" } else { "VALID" };
        if status["status"] != json!(expected) {
            return Err(format!("payload {i}: {method} answered {status}, expected {expected}"));
        }
        if expected == "INVALID" {
            continue;
        }
        let hash = payload.params.first().and_then(|p| p.get("blockHash")).cloned().ok_or("payload without blockHash")?;
        let zero = json!(B256::ZERO);
        let method = format!("engine_forkchoiceUpdatedV{}", payload.forkchoice_updated_version);
        let mut params = ArrayParams::new();
        params.insert(json!({ "headBlockHash": hash, "safeBlockHash": zero, "finalizedBlockHash": zero })).map_err(|e| e.to_string())?;
        let updated: Value = client.request(&method, params).await.map_err(|e| format!("payload {i}: {method}: {e}"))?;
        if updated["payloadStatus"]["status"] != json!("VALID") {
            return Err(format!("payload {i}: {method} answered {updated}"));
        }
    }
    Ok(())
}
