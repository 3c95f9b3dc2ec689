//! `pseq fetch`: snapshots what re-executing block N needs from any JSON-RPC node, in the
//! `mainnet-blocks` format `pseq replay` reads: `<N>/block.json` (`eth_getBlockByNumber(N,
//! true)`), `<N>/pre_state.json` (every account and slot the block touches, as they stood after
//! block N-1) and `block_hashes.json` (the ancestor hashes BLOCKHASH reads). The pre-state is
//! gathered by executing the block against the node's state at N-1, read one account or slot at
//! a time (`eth_getBalance`, `eth_getTransactionCount`, `eth_getCode`, `eth_getStorageAt`,
//! `eth_getBlockByNumber`), recording every read.

use crate::replay::{load_block_without_state, ChainHint};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use jsonrpsee::{
    core::{client::ClientT, params::ArrayParams},
    http_client::{HttpClient, HttpClientBuilder},
};
use parking_lot::Mutex;
use pseq_executor::{
    execute_block,
    revm::{bytecode::Bytecode, database::DatabaseRef, primitives::KECCAK_EMPTY, state::AccountInfo},
    ExecutionOptions, StateError,
};
use serde_json::{json, Map, Value};
use std::{collections::BTreeMap, path::Path, time::Duration};

/// An account as read from the node: balance, nonce, code.
type Fetched = Option<(U256, u64, Bytes)>;

/// The node's state after block `at`, read over JSON-RPC and recorded.
struct RemoteState {
    runtime: tokio::runtime::Runtime,
    client: HttpClient,
    at: String,
    accounts: Mutex<BTreeMap<Address, Fetched>>,
    storage: Mutex<BTreeMap<Address, BTreeMap<U256, U256>>>,
    codes: Mutex<BTreeMap<B256, Bytes>>,
    hashes: Mutex<BTreeMap<u64, B256>>,
}

impl RemoteState {
    fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, StateError> {
        let mut array = ArrayParams::new();
        for p in params {
            array.insert(p).map_err(|e| StateError(e.to_string()))?;
        }
        self.runtime.block_on(self.client.request::<Value, _>(method, array)).map_err(|e| StateError(format!("{method}: {e}")))
    }

    fn quantity(&self, method: &str, params: Vec<Value>) -> Result<U256, StateError> {
        let value = self.call(method, params)?;
        let text = value.as_str().ok_or_else(|| StateError(format!("{method}: not a quantity: {value}")))?;
        U256::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| StateError(format!("{method}: {e}")))
    }
}

impl DatabaseRef for RemoteState {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let cached = self.accounts.lock().get(&address).cloned();
        let fetched = match cached {
            Some(fetched) => fetched,
            None => {
                let at = json!(self.at);
                let balance = self.quantity("eth_getBalance", vec![json!(address), at.clone()])?;
                let nonce = self.quantity("eth_getTransactionCount", vec![json!(address), at.clone()])?.to::<u64>();
                let code: Bytes = serde_json::from_value(self.call("eth_getCode", vec![json!(address), at])?).map_err(|e| StateError(e.to_string()))?;
                let fetched = (!(balance.is_zero() && nonce == 0 && code.is_empty())).then_some((balance, nonce, code));
                self.accounts.lock().insert(address, fetched.clone());
                fetched
            }
        };
        Ok(fetched.map(|(balance, nonce, code)| {
            let (code_hash, bytecode) = if code.is_empty() { (KECCAK_EMPTY, None) } else { (keccak256(&code), Some(Bytecode::new_raw(code.clone()))) };
            if !code.is_empty() {
                self.codes.lock().insert(code_hash, code);
            }
            AccountInfo { balance, nonce, code_hash, code: bytecode, ..Default::default() }
        }))
    }

    fn code_by_hash_ref(&self, hash: B256) -> Result<Bytecode, StateError> {
        self.codes.lock().get(&hash).cloned().map(Bytecode::new_raw).ok_or_else(|| StateError(format!("code {hash} not fetched")))
    }

    fn storage_ref(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        if let Some(value) = self.storage.lock().get(&address).and_then(|s| s.get(&slot)) {
            return Ok(*value);
        }
        let value = self.call("eth_getStorageAt", vec![json!(address), json!(format!("{slot:#x}")), json!(self.at)])?;
        let word: B256 = serde_json::from_value(value).map_err(|e| StateError(e.to_string()))?;
        let value = U256::from_be_bytes(word.0);
        self.storage.lock().entry(address).or_default().insert(slot, value);
        Ok(value)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        if let Some(hash) = self.hashes.lock().get(&number) {
            return Ok(*hash);
        }
        let block = self.call("eth_getBlockByNumber", vec![json!(format!("{number:#x}")), json!(false)])?;
        let hash: B256 = serde_json::from_value(block["hash"].clone()).map_err(|e| StateError(format!("block {number}: {e}")))?;
        self.hashes.lock().insert(number, hash);
        Ok(hash)
    }
}

/// What a fetch wrote.
#[derive(Debug, Clone)]
pub struct FetchSummary {
    /// Accounts in the pre-state.
    pub accounts: usize,
    /// Storage slots in the pre-state.
    pub slots: usize,
    /// Transactions of the block.
    pub transactions: usize,
}

fn write_json(path: &Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Fetches block `number` from `rpc` into `out`. Chains other than mainnet need `fork` (the
/// fork the block runs under), written to `chain.json` for `pseq replay`.
pub fn fetch(rpc: &str, number: u64, out: &Path, fork: Option<&str>) -> Result<FetchSummary, String> {
    if number == 0 {
        return Err("block 0 has no parent state to execute on".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let client = HttpClientBuilder::default().request_timeout(Duration::from_secs(60)).max_response_size(256 << 20).build(rpc).map_err(|e| format!("{rpc}: {e}"))?;
    let state = RemoteState {
        runtime,
        client,
        at: format!("{:#x}", number - 1),
        accounts: Mutex::default(),
        storage: Mutex::default(),
        codes: Mutex::default(),
        hashes: Mutex::default(),
    };
    let chain_id = state.quantity("eth_chainId", vec![]).map_err(|e| e.0)?.to::<u64>();
    let block = state.call("eth_getBlockByNumber", vec![json!(format!("{number:#x}")), json!(true)]).map_err(|e| e.0)?;
    if block.is_null() {
        return Err(format!("{rpc} has no block {number}"));
    }
    let block_dir = out.join(number.to_string());
    std::fs::create_dir_all(&block_dir).map_err(|e| format!("{}: {e}", block_dir.display()))?;
    match (chain_id, fork) {
        (_, Some(fork)) => {
            let hint = ChainHint { chain_id, fork: fork.to_string() };
            write_json(&out.join("chain.json"), &serde_json::to_value(hint).map_err(|e| e.to_string())?)?;
        }
        (1, None) => {}
        (other, None) => return Err(format!("chain id {other} is not mainnet: name the fork its blocks run under with --fork")),
    }
    write_json(&block_dir.join("block.json"), &block)?;
    write_json(&block_dir.join("pre_state.json"), &json!({}))?;
    let loaded = load_block_without_state(out, number)?;
    let output = execute_block(&state, &loaded.input, &loaded.txs, &ExecutionOptions::sequential()).map_err(|e| format!("executing block {number}: {e}"))?;
    crate::replay::check_header(&loaded, &output).map_err(|e| format!("block {number} re-executed against {rpc} does not match its header: {e}"))?;

    let mut pre = Map::new();
    let accounts = state.accounts.lock().clone();
    let storage = state.storage.lock().clone();
    let mut slots = 0;
    for (address, fetched) in &accounts {
        let Some((balance, nonce, code)) = fetched else { continue };
        let mut account = json!({ "balance": format!("{balance:#x}"), "nonce": nonce });
        if !code.is_empty() {
            account["code"] = json!(code);
        }
        if let Some(slots_of) = storage.get(address) {
            let map: Map<String, Value> = slots_of.iter().map(|(k, v)| (format!("{k:#x}"), json!(format!("{v:#x}")))).collect();
            slots += map.len();
            account["storage"] = Value::Object(map);
        }
        pre.insert(format!("{address:?}"), account);
    }
    let accounts_written = pre.len();
    write_json(&block_dir.join("pre_state.json"), &Value::Object(pre))?;

    let hashes_path = out.join("block_hashes.json");
    let mut hashes: BTreeMap<String, B256> = std::fs::read_to_string(&hashes_path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    for (n, hash) in state.hashes.lock().iter() {
        hashes.insert(n.to_string(), *hash);
    }
    write_json(&hashes_path, &serde_json::to_value(hashes).map_err(|e| e.to_string())?)?;
    let list_path = out.join("BLOCKS.txt");
    let mut numbers: Vec<u64> = std::fs::read_to_string(&list_path).unwrap_or_default().split_whitespace().filter_map(|n| n.parse().ok()).collect();
    if !numbers.contains(&number) {
        numbers.push(number);
        numbers.sort_unstable();
    }
    let text: String = numbers.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(&list_path, text).map_err(|e| format!("{}: {e}", list_path.display()))?;
    Ok(FetchSummary { accounts: accounts_written, slots, transactions: loaded.txs.len() })
}
