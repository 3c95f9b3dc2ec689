//! End to end: a real `pseq node --dev` process on a temporary datadir, driven over real HTTP
//! and WebSocket JSON-RPC clients. Transfers and a contract deployment go in, receipts, logs,
//! balances and calls come out; the node is stopped with SIGTERM and restarted (same head,
//! balances, receipts, logs), then killed with SIGKILL under load and restarted (every block a
//! client saw a receipt for is still there, with the same hash).

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{hex, Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use jsonrpsee::{
    core::client::SubscriptionClientT,
    ws_client::WsClientBuilder,
};
use pseq_config::dev::{dev_signer, DEV_CHAIN_ID};
use pseq_tests::node::{call, wait_receipt, NodeProcess};
use serde_json::{json, Value};
use std::time::Duration;

/// Topic of the log the test contract's constructor emits.
const TOPIC: &str = "0x1111111111111111111111111111111111111111111111111111111111111111";

/// Init code: `LOG1(42, TOPIC)`, then deploy runtime code that returns 42 from any call.
fn init_code() -> Bytes {
    let runtime = "602a60005260206000f3"; // mstore(0, 42); return(0, 32)
    let code = format!("602a600052 7f{} 60206000a1 69{runtime} 600052 600a6016f3", &TOPIC[2..]).replace(' ', "");
    Bytes::from(hex::decode(code).unwrap())
}

fn transfer(signer: &PrivateKeySigner, nonce: u64, to: Address, value: u64) -> String {
    let tx = TxEip1559 {
        chain_id: DEV_CHAIN_ID,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value: U256::from(value),
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    format!("0x{}", hex::encode(envelope.encoded_2718()))
}

fn hex_u64(value: &Value) -> u64 {
    u64::from_str_radix(value.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// What the test checks after each restart.
#[derive(Debug, PartialEq)]
struct Snapshot {
    head: Value,
    balances: Vec<Value>,
    receipts: Vec<Value>,
    logs: Value,
    code: Value,
}

async fn snapshot(node: &NodeProcess, addresses: &[Address], hashes: &[String], contract: &str) -> Snapshot {
    let client = node.http();
    let head = call(&client, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap();
    let mut balances = Vec::new();
    for a in addresses {
        balances.push(call(&client, "eth_getBalance", json!([a, "latest"])).await.unwrap());
    }
    let mut receipts = Vec::new();
    for h in hashes {
        receipts.push(call(&client, "eth_getTransactionReceipt", json!([h])).await.unwrap());
    }
    let logs = call(&client, "eth_getLogs", json!([{ "fromBlock": "0x0", "toBlock": "latest", "topics": [TOPIC] }])).await.unwrap();
    let code = call(&client, "eth_getCode", json!([contract, "latest"])).await.unwrap();
    Snapshot { head, balances, receipts, logs, code }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_node_serves_restarts_and_survives_kill() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("data");
    let node = NodeProcess::start_dev(&datadir, &[]);
    let client = node.http();

    assert_eq!(call(&client, "eth_chainId", json!([])).await.unwrap(), json!("0x7a69"));
    let accounts = call(&client, "eth_accounts", json!([])).await.unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 20);

    // A WebSocket subscription to new heads, opened before any block.
    let ws = WsClientBuilder::default().build(node.ws_url()).await.unwrap();
    let mut heads = ws.subscribe::<Value, _>("eth_subscribe", jsonrpsee::rpc_params!["newHeads"], "eth_unsubscribe").await.unwrap();

    // Three signed transfers from account 1 to a fresh address.
    let sender = dev_signer(1).unwrap();
    let recipient = Address::repeat_byte(0x42);
    let mut hashes = Vec::new();
    for nonce in 0..3 {
        let raw = transfer(&sender, nonce, recipient, 1_000 + nonce);
        hashes.push(call(&client, "eth_sendRawTransaction", json!([raw])).await.unwrap().as_str().unwrap().to_string());
    }
    // A contract deployment through eth_sendTransaction (signed by the node for account 0).
    let deployer = dev_signer(0).unwrap().address();
    let deploy = call(&client, "eth_sendTransaction", json!([{ "from": deployer, "data": init_code() }])).await.unwrap();
    hashes.push(deploy.as_str().unwrap().to_string());

    let mut receipts = Vec::new();
    for h in &hashes {
        receipts.push(wait_receipt(&client, h).await);
    }
    for r in &receipts {
        assert_eq!(r["status"], json!("0x1"), "{r}");
    }
    assert_eq!(receipts[0]["gasUsed"], json!("0x5208"));
    let contract = receipts[3]["contractAddress"].as_str().unwrap().to_string();
    assert_eq!(receipts[3]["logs"][0]["topics"][0], json!(TOPIC));
    assert_eq!(hex_u64(&receipts[3]["logs"][0]["data"]), 42);

    // Balances, nonce, call, logs.
    let balance = call(&client, "eth_getBalance", json!([recipient, "latest"])).await.unwrap();
    assert_eq!(balance, json!(format!("{:#x}", 1_000 + 1_001 + 1_002)));
    assert_eq!(call(&client, "eth_getTransactionCount", json!([sender.address(), "latest"])).await.unwrap(), json!("0x3"));
    let out = call(&client, "eth_call", json!([{ "to": contract }, "latest"])).await.unwrap();
    assert_eq!(out.as_str().unwrap(), format!("0x{:064x}", 42));
    let logs = call(&client, "eth_getLogs", json!([{ "fromBlock": "0x0", "toBlock": "latest", "address": contract }])).await.unwrap();
    assert_eq!(logs.as_array().unwrap().len(), 1);
    // Reading a block past the head is a geth error; a revert of a call shows as code 3.
    let missing = call(&client, "eth_getBalance", json!([recipient, "0x999999"])).await.unwrap_err();
    assert!(missing.contains("header not found"), "{missing}");

    // The subscription saw the blocks.
    let first = tokio::time::timeout(Duration::from_secs(10), heads.next()).await.unwrap().unwrap().unwrap();
    assert!(hex_u64(&first["number"]) >= 1, "{first}");

    // Stop with SIGTERM, restart: same head, balances, receipts, logs, code.
    let addresses = [recipient, sender.address(), deployer];
    let before = snapshot(&node, &addresses, &hashes, &contract).await;
    drop(heads);
    drop(ws);
    let status = node.terminate();
    assert!(status.success(), "exit status {status}");
    let node = NodeProcess::start_dev(&datadir, &[]);
    let after = snapshot(&node, &addresses, &hashes, &contract).await;
    assert_eq!(before, after);

    // Load from several accounts; SIGKILL in the middle; restart.
    let client = node.http();
    let senders: Vec<PrivateKeySigner> = (2..10).map(|i| dev_signer(i).unwrap()).collect();
    let mut seen_blocks: Vec<(Value, Value)> = Vec::new();
    let mut pending = Vec::new();
    for round in 0..40u64 {
        for s in &senders {
            let raw = transfer(s, round, recipient, 1);
            pending.push(call(&client, "eth_sendRawTransaction", json!([raw])).await.unwrap().as_str().unwrap().to_string());
        }
        if round % 4 == 3 {
            // Receipts the client got before the kill.
            for h in pending.drain(..) {
                let r = wait_receipt(&client, &h).await;
                seen_blocks.push((r["blockNumber"].clone(), r["blockHash"].clone()));
            }
        }
    }
    node.kill9();
    assert!(!seen_blocks.is_empty());
    let node = NodeProcess::start_dev(&datadir, &[]);
    let client = node.http();
    for (number, hash) in &seen_blocks {
        let block = call(&client, "eth_getBlockByNumber", json!([number, false])).await.unwrap();
        assert_eq!(&block["hash"], hash, "block {number} lost or changed after kill -9");
    }
    let status = node.terminate();
    assert!(status.success());
}
