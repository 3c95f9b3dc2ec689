//! `pseq load`: a load generator for any Ethereum JSON-RPC node (pseq, anvil, geth, reth). It
//! derives sender keys from the dev mnemonic, funds them from the dev accounts, signs every
//! transaction ahead of time on all cores, sends them at a fixed rate in JSON-RPC batches, and
//! watches blocks to time each transaction from submission to inclusion. Transactions are ETH
//! transfers (`--kind transfer`) or ERC-20 `transfer` calls (`--kind erc20`: the corpus's
//! ERC20Token is deployed over RPC first and every sender gets tokens from the deployer).

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::{coins_bip39::English, MnemonicBuilder, PrivateKeySigner};
use jsonrpsee::{
    core::{client::ClientT, params::BatchRequestBuilder},
    http_client::{HttpClient, HttpClientBuilder},
    rpc_params,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// Mnemonic index of the first load account (clear of the 20 dev accounts).
const FIRST_LOAD_ACCOUNT: u32 = 1_000;
/// Transactions per JSON-RPC batch.
const BATCH: usize = 250;
/// Max fee per gas of load transactions: 50 gwei.
const MAX_FEE: u128 = 50_000_000_000;
/// Priority fee of load transactions: 1 gwei.
const TIP: u128 = 1_000_000_000;

/// Gas limit of a load ERC-20 transfer (about 52,000 used when the recipient is new).
const ERC20_GAS: u64 = 70_000;

/// What the load transactions do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadKind {
    /// ETH transfers of 1 wei to fresh addresses.
    Transfer,
    /// ERC-20 `transfer(address,uint256)` calls of 1 token unit to fresh addresses, on a token
    /// with this runtime bytecode.
    Erc20 {
        /// Runtime bytecode of the token (`_balances` mapping at slot 0, `_totalSupply` at 2).
        runtime: Bytes,
    },
}

impl LoadKind {
    /// `transfer`, or `erc20` with the token's runtime bytecode read from
    /// `contracts_dir/ERC20Token.hex`.
    pub fn parse(kind: &str, contracts_dir: &std::path::Path) -> Result<Self, String> {
        match kind {
            "transfer" => Ok(Self::Transfer),
            "erc20" => {
                let path = contracts_dir.join("ERC20Token.hex");
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let runtime = alloy_primitives::hex::decode(text.trim()).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Self::Erc20 { runtime: runtime.into() })
            }
            other => Err(format!("--kind {other}: expected transfer or erc20")),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Erc20 { .. } => "erc20",
        }
    }

    fn gas(&self) -> u64 {
        match self {
            Self::Transfer => 21_000,
            Self::Erc20 { .. } => ERC20_GAS,
        }
    }
}

/// Init code deploying `runtime` with `supply` tokens credited to `holder` (balance and total
/// supply written by the constructor: `_balances[holder]` at keccak(holder ‖ 0), `_totalSupply`
/// at slot 2).
pub fn erc20_init_code(runtime: &[u8], holder: Address, supply: U256) -> Result<Bytes, String> {
    let len = u16::try_from(runtime.len()).map_err(|_| "token runtime longer than 64 KiB")?;
    let mut code = Vec::with_capacity(runtime.len() + 128);
    let push32 = |code: &mut Vec<u8>, word: [u8; 32]| {
        code.push(0x7f);
        code.extend_from_slice(&word);
    };
    push32(&mut code, supply.to_be_bytes());
    push32(&mut code, crate::bench::erc20_balance_slot(holder).to_be_bytes());
    code.push(0x55); // SSTORE
    push32(&mut code, supply.to_be_bytes());
    code.extend_from_slice(&[0x60, 0x02, 0x55]); // PUSH1 2 SSTORE
    let prefix_len = code.len() + 13;
    let offset = u16::try_from(prefix_len).map_err(|_| "init code prefix too long")?;
    code.push(0x61); // PUSH2 len
    code.extend_from_slice(&len.to_be_bytes());
    code.push(0x80); // DUP1
    code.push(0x61); // PUSH2 offset
    code.extend_from_slice(&offset.to_be_bytes());
    code.extend_from_slice(&[0x60, 0x00, 0x39, 0x60, 0x00, 0xf3]); // PUSH1 0 CODECOPY PUSH1 0 RETURN
    debug_assert_eq!(code.len(), prefix_len);
    code.extend_from_slice(runtime);
    Ok(code.into())
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadParams {
    /// JSON-RPC URL.
    pub rpc: String,
    /// Sending accounts.
    pub accounts: usize,
    /// Transactions per second.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// How long to wait for the last inclusions after sending stops.
    pub drain: Duration,
    /// What the transactions do.
    pub kind: LoadKind,
}

/// Latency distribution in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
}

/// The result of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// JSON-RPC URL.
    pub rpc: String,
    /// `web3_clientVersion` of the node.
    pub client: String,
    /// `transfer` or `erc20`.
    pub kind: String,
    /// The token the ERC-20 load used.
    pub token: Option<Address>,
    /// Sending accounts.
    pub accounts: usize,
    /// Requested rate.
    pub target_rate: u64,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Transactions the node accepted.
    pub submitted: u64,
    /// Transactions the node refused.
    pub rejected: u64,
    /// Transactions seen in blocks.
    pub included: u64,
    /// Receipts checked after the run: a sample of up to 1,000 included transactions, spread
    /// over the run (a full check takes minutes on anvil).
    pub receipts_checked: u64,
    /// Of those, the ones whose receipt says they failed.
    pub reverted: u64,
    /// Accepted transactions per second of sending.
    pub submitted_per_s: f64,
    /// Included transactions per second, over the time from the first submission to the last
    /// inclusion.
    pub included_per_s: f64,
    /// Blocks that included load transactions.
    pub blocks: u64,
    /// Submission to inclusion (as the client observes it, polling every 10 ms).
    pub latency: Latency,
    /// First refusal message, if any.
    pub first_error: Option<String>,
}

fn signer(index: u32) -> Result<PrivateKeySigner, String> {
    MnemonicBuilder::<English>::default()
        .phrase(pseq_config::dev::DEV_MNEMONIC)
        .index(index)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())
}

fn sign_transfer(signer: &PrivateKeySigner, chain_id: u64, nonce: u64, to: Address, value: U256) -> Result<(B256, Bytes), String> {
    sign_tx(signer, chain_id, nonce, TxKind::Call(to), value, Bytes::new(), 21_000)
}

fn sign_tx(signer: &PrivateKeySigner, chain_id: u64, nonce: u64, to: TxKind, value: U256, input: Bytes, gas_limit: u64) -> Result<(B256, Bytes), String> {
    let tx = TxEip1559 { chain_id, nonce, gas_limit, max_fee_per_gas: MAX_FEE, max_priority_fee_per_gas: TIP, to, value, access_list: Default::default(), input };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).map_err(|e| e.to_string())?;
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    Ok((*envelope.tx_hash(), Bytes::from(envelope.encoded_2718())))
}

fn quantity(value: &Value) -> Result<u64, String> {
    let text = value.as_str().ok_or_else(|| format!("expected a quantity, got {value}"))?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| format!("{text}: {e}"))
}

async fn request(client: &HttpClient, method: &str, params: jsonrpsee::core::params::ArrayParams) -> Result<Value, String> {
    client.request::<Value, _>(method, params).await.map_err(|e| format!("{method}: {e}"))
}

/// Sends a batch of raw transactions; returns (accepted hashes, first error, refused count).
async fn send_batch(client: &HttpClient, raws: &[(B256, Bytes)]) -> (Vec<B256>, Option<String>, u64) {
    let mut batch = BatchRequestBuilder::new();
    for (_, raw) in raws {
        if batch.insert("eth_sendRawTransaction", rpc_params![raw]).is_err() {
            return (Vec::new(), Some("cannot encode request".into()), raws.len() as u64);
        }
    }
    match client.batch_request::<Value>(batch).await {
        Ok(response) => {
            let mut accepted = Vec::new();
            let mut error = None;
            let mut refused = 0;
            for ((hash, _), entry) in raws.iter().zip(response) {
                match entry {
                    Ok(_) => accepted.push(*hash),
                    Err(e) => {
                        refused += 1;
                        error.get_or_insert_with(|| e.message().to_string());
                    }
                }
            }
            (accepted, error, refused)
        }
        Err(e) => (Vec::new(), Some(e.to_string()), raws.len() as u64),
    }
}

/// Waits until every address's nonce reached the wanted value.
async fn wait_nonces(client: &HttpClient, wanted: &[(Address, u64)], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    for (address, nonce) in wanted {
        loop {
            let n = quantity(&request(client, "eth_getTransactionCount", rpc_params![address, "latest"]).await?)?;
            if n >= *nonce {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("funding of {address} not included within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Deploys the token from `deployer` (its nonce `nonce`, holding the whole supply) and sends each
/// sender `per_account` token units; returns the token's address once every transfer is in.
async fn deploy_and_distribute(
    client: &HttpClient,
    chain_id: u64,
    deployer: &PrivateKeySigner,
    nonce: u64,
    runtime: &Bytes,
    senders: &[PrivateKeySigner],
    per_account: u128,
) -> Result<Address, String> {
    let supply = U256::from(per_account) * U256::from(senders.len() + 1) * U256::from(1_000u64);
    let init = erc20_init_code(runtime, deployer.address(), supply)?;
    let token = deployer.address().create(nonce);
    let mut txs = vec![sign_tx(deployer, chain_id, nonce, TxKind::Create, U256::ZERO, init, 3_000_000)?];
    for (i, sender) in senders.iter().enumerate() {
        let amount = U256::from(per_account) * U256::from(1_000u64);
        txs.push(sign_tx(deployer, chain_id, nonce + 1 + i as u64, TxKind::Call(token), U256::ZERO, crate::bench::erc20_transfer(sender.address(), amount), ERC20_GAS)?);
    }
    for chunk in txs.chunks(BATCH) {
        let (_, error, refused) = send_batch(client, chunk).await;
        if refused > 0 {
            return Err(format!("token deployment or distribution refused: {}", error.unwrap_or_default()));
        }
    }
    wait_nonces(client, &[(deployer.address(), nonce + txs.len() as u64)], Duration::from_secs(120)).await?;
    let code = request(client, "eth_getCode", rpc_params![token, "latest"]).await?;
    if code.as_str().is_none_or(|c| c.len() <= 2) {
        return Err(format!("token not deployed at {token}"));
    }
    // The last holder's balance proves the distribution (and the token's `balanceOf`).
    let last = senders.last().map_or(deployer.address(), |s| s.address());
    let mut call = vec![0x70, 0xa0, 0x82, 0x31];
    call.extend_from_slice(&[0u8; 12]);
    call.extend_from_slice(last.as_slice());
    let balance = request(client, "eth_call", rpc_params![serde_json::json!({ "to": token, "data": Bytes::from(call) }), "latest"]).await?;
    let balance = balance.as_str().and_then(|b| U256::from_str_radix(b.trim_start_matches("0x"), 16).ok()).unwrap_or_default();
    if balance.is_zero() {
        return Err(format!("token distribution failed: {last} holds no tokens"));
    }
    tracing::info!(%token, holders = senders.len(), "token deployed and distributed");
    Ok(token)
}

/// Runs the load.
pub async fn run(params: &LoadParams) -> Result<LoadReport, String> {
    let client = HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(120))
        .max_request_size(64 << 20)
        .max_response_size(64 << 20)
        .build(&params.rpc)
        .map_err(|e| format!("{}: {e}", params.rpc))?;
    let client_version = request(&client, "web3_clientVersion", rpc_params![]).await.unwrap_or(Value::Null).as_str().unwrap_or("?").to_string();
    let chain_id = quantity(&request(&client, "eth_chainId", rpc_params![]).await?)?;
    let accounts = params.accounts.max(1);
    let total = params.rate.saturating_mul(params.duration.as_secs().max(1)) as usize;
    tracing::info!(rpc = %params.rpc, client = %client_version, accounts, total, "deriving and funding accounts");

    let senders: Vec<PrivateKeySigner> = (0..accounts as u32).map(|i| signer(FIRST_LOAD_ACCOUNT + i)).collect::<Result<_, _>>()?;
    // anvil funds 10 dev accounts by default, pseq 20: use the first 10.
    let funders: Vec<PrivateKeySigner> = (0..10).map(signer).collect::<Result<_, _>>()?;
    // Fund: each load account gets enough for its share of transactions, from the dev accounts.
    let per_account = (total / accounts + 1) as u128;
    let funding = U256::from(per_account * params.kind.gas() as u128 * MAX_FEE + 1_000_000);
    let mut funder_nonces = Vec::new();
    for f in &funders {
        funder_nonces.push(quantity(&request(&client, "eth_getTransactionCount", rpc_params![f.address(), "pending"]).await?)?);
    }
    let mut fund_txs = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let f = i % funders.len();
        fund_txs.push(sign_transfer(&funders[f], chain_id, funder_nonces[f], s.address(), funding)?);
        funder_nonces[f] += 1;
    }
    for chunk in fund_txs.chunks(BATCH) {
        let (_, error, refused) = send_batch(&client, chunk).await;
        if refused > 0 {
            return Err(format!("funding refused: {}", error.unwrap_or_default()));
        }
    }
    let wanted: Vec<(Address, u64)> = funders.iter().zip(&funder_nonces).map(|(f, n)| (f.address(), *n)).collect();
    wait_nonces(&client, &wanted, Duration::from_secs(120)).await?;
    let token = match &params.kind {
        LoadKind::Transfer => None,
        LoadKind::Erc20 { runtime } => Some(deploy_and_distribute(&client, chain_id, &funders[0], funder_nonces[0], runtime, &senders, per_account).await?),
    };

    // Sign everything ahead of time, on all cores.
    let mut start_nonces = Vec::with_capacity(accounts);
    for s in &senders {
        start_nonces.push(quantity(&request(&client, "eth_getTransactionCount", rpc_params![s.address(), "pending"]).await?)?);
    }
    let sign_started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let recipient_base = Address::repeat_byte(0x5e);
    let signed: Vec<(B256, Bytes)> = {
        let per_thread = total.div_ceil(threads);
        let results: Vec<Result<Vec<(B256, Bytes)>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (senders, start_nonces) = (&senders, &start_nonces);
                    scope.spawn(move || {
                        let range = (t * per_thread)..((t + 1) * per_thread).min(total);
                        range
                            .map(|i| {
                                let a = i % accounts;
                                let nonce = start_nonces[a] + (i / accounts) as u64;
                                let mut to = recipient_base;
                                to.0[16..].copy_from_slice(&(i as u32).to_be_bytes());
                                match token {
                                    None => sign_transfer(&senders[a], chain_id, nonce, to, U256::from(1)),
                                    Some(token) => sign_tx(&senders[a], chain_id, nonce, TxKind::Call(token), U256::ZERO, crate::bench::erc20_transfer(to, U256::from(1)), ERC20_GAS),
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("signing thread panicked".into()))).collect()
        });
        let mut all = Vec::with_capacity(total);
        for r in results {
            all.extend(r?);
        }
        all
    };
    tracing::info!(transactions = signed.len(), seconds = format!("{:.1}", sign_started.elapsed().as_secs_f64()), "signed");

    // Watch blocks: inclusion time of every hash.
    let submitted_at: Arc<Mutex<HashMap<B256, Instant>>> = Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let included_hashes: Arc<Mutex<Vec<B256>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let blocks_with_load = Arc::new(Mutex::new(0u64));
    let last_inclusion = Arc::new(Mutex::new(None::<Instant>));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start_block = quantity(&request(&client, "eth_blockNumber", rpc_params![]).await?)?;
    let watcher = {
        let (client, submitted_at, latencies, blocks_with_load, last_inclusion, stop, included_hashes) =
            (client.clone(), submitted_at.clone(), latencies.clone(), blocks_with_load.clone(), last_inclusion.clone(), stop.clone(), included_hashes.clone());
        tokio::spawn(async move {
            let mut next = start_block + 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let head = match request(&client, "eth_blockNumber", rpc_params![]).await.and_then(|v| quantity(&v)) {
                    Ok(h) => h,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                while next <= head {
                    let Ok(block) = request(&client, "eth_getBlockByNumber", rpc_params![format!("{next:#x}"), false]).await else { break };
                    let seen = Instant::now();
                    let hashes: Vec<B256> =
                        block["transactions"].as_array().map(|a| a.iter().filter_map(|h| h.as_str()?.parse().ok()).collect()).unwrap_or_default();
                    let mut found = 0;
                    {
                        let mut submitted = submitted_at.lock();
                        let mut lat = latencies.lock();
                        let mut ours = included_hashes.lock();
                        for h in &hashes {
                            if let Some(t) = submitted.remove(h) {
                                lat.push(seen.saturating_duration_since(t));
                                ours.push(*h);
                                found += 1;
                            }
                        }
                    }
                    if found > 0 {
                        *blocks_with_load.lock() += 1;
                        *last_inclusion.lock() = Some(seen);
                    }
                    next += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Send at the rate, in batches, without waiting for one batch before the next.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    let errors: Arc<Mutex<(u64, Option<String>)>> = Arc::new(Mutex::new((0, None)));
    let mut last_progress = Instant::now();
    while sent < signed.len() {
        let due = ((started.elapsed().as_secs_f64() * params.rate as f64) as usize).min(signed.len());
        while sent < due {
            let end = (sent + BATCH).min(due);
            let chunk: Vec<(B256, Bytes)> = signed[sent..end].to_vec();
            {
                let now = Instant::now();
                let mut submitted = submitted_at.lock();
                for (h, _) in &chunk {
                    submitted.insert(*h, now);
                }
            }
            let (client, errors, submitted_at) = (client.clone(), errors.clone(), submitted_at.clone());
            in_flight.spawn(async move {
                let (accepted, error, refused) = send_batch(&client, &chunk).await;
                if refused > 0 {
                    let accepted: std::collections::HashSet<B256> = accepted.into_iter().collect();
                    let mut submitted = submitted_at.lock();
                    for (h, _) in &chunk {
                        if !accepted.contains(h) {
                            submitted.remove(h);
                        }
                    }
                    let mut e = errors.lock();
                    e.0 += refused;
                    if e.1.is_none() {
                        e.1 = error;
                    }
                }
            });
            sent = end;
        }
        while in_flight.try_join_next().is_some() {}
        if last_progress.elapsed() >= Duration::from_secs(5) {
            let included = latencies.lock().len();
            tracing::info!(sent, included, elapsed_s = started.elapsed().as_secs(), "load progress");
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let send_time = started.elapsed();
    while in_flight.join_next().await.is_some() {}
    let (rejected, first_error) = errors.lock().clone();
    let submitted = signed.len() as u64 - rejected;
    let drain_deadline = Instant::now() + params.drain;
    while (latencies.lock().len() as u64) < submitted && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;

    // Receipts after the run: an included transaction that reverted is not a served one.
    let included_hashes = included_hashes.lock().clone();
    let step = (included_hashes.len() / 1_000).max(1);
    let (mut receipts_checked, mut reverted) = (0u64, 0u64);
    for hash in included_hashes.iter().step_by(step) {
        let receipt = request(&client, "eth_getTransactionReceipt", rpc_params![hash]).await?;
        receipts_checked += 1;
        if receipt["status"] != "0x1" {
            reverted += 1;
        }
    }

    let mut lat = latencies.lock().clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    let included = lat.len() as u64;
    let blocks = *blocks_with_load.lock();
    let window = last_inclusion.lock().map_or(send_time, |t| t.saturating_duration_since(started)).max(send_time);
    Ok(LoadReport {
        rpc: params.rpc.clone(),
        client: client_version,
        kind: params.kind.name().to_string(),
        token,
        accounts,
        target_rate: params.rate,
        duration_s: send_time.as_secs_f64(),
        submitted,
        rejected,
        included,
        receipts_checked,
        reverted,
        submitted_per_s: submitted as f64 / send_time.as_secs_f64(),
        included_per_s: included as f64 / window.as_secs_f64(),
        blocks,
        latency: Latency { p50_ms: pct(0.50), p90_ms: pct(0.90), p99_ms: pct(0.99), max_ms: lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3) },
        first_error,
    })
}

/// The report as one line of text.
pub fn summary(r: &LoadReport) -> String {
    format!(
        "{} {}: submitted {} ({:.0}/s), rejected {}, included {} ({:.0}/s) in {} blocks, {} of {} sampled receipts failed; latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        r.client,
        r.kind,
        r.submitted,
        r.submitted_per_s,
        r.rejected,
        r.included,
        r.included_per_s,
        r.blocks,
        r.reverted,
        r.receipts_checked,
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms,
        r.first_error.as_ref().map(|e| format!("; first error: {e}")).unwrap_or_default()
    )
}
