//! A replica: a second `pseq node` follows the first through the Engine API. Node A (dev chain)
//! builds blocks from transfers and a contract deployment; every block is taken from A's RPC
//! (`debug_getRawBlock`), turned into an execution payload and sent to node B's authenticated
//! port (`engine_newPayloadV4`, then `engine_forkchoiceUpdatedV3`). B ends with A's head, state
//! root, balances and receipts.

use alloy_consensus::{Block, TxEnvelope};
use alloy_primitives::{Bytes, B256};
use alloy_rlp::Decodable;
use alloy_rpc_types_engine::{ExecutionPayloadV3, JwtSecret};
use pseq_config::dev::dev_signer;
use pseq_tests::node::{call, engine_call, engine_try, wait_receipt, NodeProcess};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_through_new_payload() {
    let dir = tempfile::tempdir().unwrap();
    let a = NodeProcess::start_dev(&dir.path().join("a"), &[]);
    let b = NodeProcess::start_dev(&dir.path().join("b"), &[]);
    let b_secret = JwtSecret::from_file(&dir.path().join("b/jwt.hex")).unwrap();
    let client_a = a.http();
    let client_b = b.http();

    // Blocks on A: transfers from two accounts and a deployment.
    let mut hashes = Vec::new();
    for i in 0..6u64 {
        let from = dev_signer((i % 2) as u32).unwrap().address();
        let to = format!("0x{:040x}", 0x1000 + i);
        hashes.push(call(&client_a, "eth_sendTransaction", json!([{ "from": from, "to": to, "value": "0x100" }])).await.unwrap());
    }
    let init = "0x602a60005260206000f3600052600a6016f3"; // a contract whose runtime is empty
    hashes.push(call(&client_a, "eth_sendTransaction", json!([{ "from": dev_signer(2).unwrap().address(), "data": init }])).await.unwrap());
    for h in &hashes {
        wait_receipt(&client_a, h.as_str().unwrap()).await;
    }
    call(&client_a, "evm_mine", json!([])).await.unwrap();
    let head: u64 = u64::from_str_radix(call(&client_a, "eth_blockNumber", json!([])).await.unwrap().as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert!(head >= 2, "A built {head} blocks");

    // Follow: every block of A into B.
    for n in 1..=head {
        let raw = call(&client_a, "debug_getRawBlock", json!([format!("{n:#x}")])).await.unwrap();
        let bytes: Bytes = serde_json::from_value(raw).unwrap();
        let block = Block::<TxEnvelope>::decode(&mut bytes.as_ref()).unwrap();
        let hash = block.header.hash_slow();
        let payload = ExecutionPayloadV3::from_block_unchecked(hash, &block);
        let beacon_root = block.header.parent_beacon_block_root.unwrap_or_default();
        let status = engine_call(&b, &b_secret, "engine_newPayloadV4", json!([payload, Vec::<B256>::new(), beacon_root, Vec::<Bytes>::new()])).await;
        assert_eq!(status["status"], json!("VALID"), "block {n}: {status}");
        let zero = B256::ZERO;
        let updated = engine_call(&b, &b_secret, "engine_forkchoiceUpdatedV3", json!([{ "headBlockHash": hash, "safeBlockHash": zero, "finalizedBlockHash": zero }, null])).await;
        assert_eq!(updated["payloadStatus"]["status"], json!("VALID"), "block {n}: {updated}");
    }

    let latest_a = call(&client_a, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap();
    let latest_b = call(&client_b, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap();
    assert_eq!(latest_a["hash"], latest_b["hash"]);
    assert_eq!(latest_a["stateRoot"], latest_b["stateRoot"]);
    for h in &hashes {
        let ra = call(&client_a, "eth_getTransactionReceipt", json!([h])).await.unwrap();
        let rb = call(&client_b, "eth_getTransactionReceipt", json!([h])).await.unwrap();
        assert_eq!(ra, rb);
    }
    let account = format!("0x{:040x}", 0x1000);
    assert_eq!(
        call(&client_a, "eth_getBalance", json!([account, "latest"])).await.unwrap(),
        call(&client_b, "eth_getBalance", json!([account, "latest"])).await.unwrap()
    );
    // A payload with a wrong state root is INVALID on B and changes nothing.
    let raw = call(&client_a, "debug_getRawBlock", json!(["latest"])).await.unwrap();
    let bytes: Bytes = serde_json::from_value(raw).unwrap();
    let mut block = Block::<TxEnvelope>::decode(&mut bytes.as_ref()).unwrap();
    let _ = call(&client_a, "evm_mine", json!([])).await.unwrap();
    block.header.parent_hash = latest_b["hash"].as_str().unwrap().parse().unwrap();
    block.header.number += 1;
    block.header.timestamp += 1;
    block.header.state_root = B256::repeat_byte(1);
    let payload = ExecutionPayloadV3::from_block_unchecked(block.header.hash_slow(), &block);
    let status = engine_call(&b, &b_secret, "engine_newPayloadV4", json!([payload, Vec::<B256>::new(), block.header.parent_beacon_block_root.unwrap_or_default(), Vec::<Bytes>::new()])).await;
    assert_eq!(status["status"], json!("INVALID"), "{status}");
    assert_eq!(call(&client_b, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap()["hash"], latest_b["hash"]);
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}

/// A consensus client drives block building: forkchoiceUpdatedV3 with payload attributes builds a
/// block from the pool (with a withdrawal), getPayloadV4 returns it, newPayloadV4 + forkchoice
/// make it the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consensus_client_builds_through_payload_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_dev(&dir.path().join("n"), &[]);
    let secret = JwtSecret::from_file(&dir.path().join("n/jwt.hex")).unwrap();
    let client = node.http();
    call(&client, "evm_setAutomine", json!([false])).await.unwrap();
    let from = dev_signer(3).unwrap().address();
    let tx = call(&client, "eth_sendTransaction", json!([{ "from": from, "to": "0x00000000000000000000000000000000000000aa", "value": "0x7" }])).await.unwrap();

    let head = call(&client, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap();
    let timestamp = u64::from_str_radix(head["timestamp"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap() + 12;
    let recipient = "0x00000000000000000000000000000000000000bb";
    let zero = B256::ZERO;
    let attributes = json!({
        "timestamp": format!("{timestamp:#x}"),
        "prevRandao": B256::repeat_byte(9),
        "suggestedFeeRecipient": "0x00000000000000000000000000000000000000fe",
        "withdrawals": [{ "index": "0x0", "validatorIndex": "0x1", "address": recipient, "amount": "0x3" }],
        "parentBeaconBlockRoot": B256::repeat_byte(4),
    });
    let updated = engine_call(&node, &secret, "engine_forkchoiceUpdatedV3", json!([{ "headBlockHash": head["hash"], "safeBlockHash": zero, "finalizedBlockHash": zero }, attributes])).await;
    assert_eq!(updated["payloadStatus"]["status"], json!("VALID"), "{updated}");
    let id = updated["payloadId"].clone();
    assert!(id.is_string(), "{updated}");

    let envelope = engine_call(&node, &secret, "engine_getPayloadV4", json!([id])).await;
    let payload = envelope["executionPayload"].clone();
    assert_eq!(payload["transactions"].as_array().unwrap().len(), 1, "{payload}");
    assert_eq!(payload["withdrawals"].as_array().unwrap().len(), 1);
    assert_eq!(payload["prevRandao"], json!(B256::repeat_byte(9)));
    assert_ne!(envelope["blockValue"], json!("0x0"));
    // Nothing is committed until the payload comes back.
    assert_eq!(call(&client, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap()["hash"], head["hash"]);

    let status = engine_call(&node, &secret, "engine_newPayloadV4", json!([payload, Vec::<B256>::new(), B256::repeat_byte(4), envelope["executionRequests"]])).await;
    assert_eq!(status["status"], json!("VALID"), "{status}");
    let updated = engine_call(&node, &secret, "engine_forkchoiceUpdatedV3", json!([{ "headBlockHash": payload["blockHash"], "safeBlockHash": zero, "finalizedBlockHash": zero }, null])).await;
    assert_eq!(updated["payloadStatus"]["status"], json!("VALID"));
    let latest = call(&client, "eth_getBlockByNumber", json!(["latest", false])).await.unwrap();
    assert_eq!(latest["hash"], payload["blockHash"]);
    assert_eq!(latest["parentBeaconBlockRoot"], json!(B256::repeat_byte(4)));
    let receipt = wait_receipt(&client, tx.as_str().unwrap()).await;
    assert_eq!(receipt["blockHash"], payload["blockHash"]);
    // The withdrawal credited 3 gwei.
    assert_eq!(call(&client, "eth_getBalance", json!([recipient, "latest"])).await.unwrap(), json!("0xb2d05e00"));
    let missing = engine_try(&node, &secret, "engine_getPayloadV4", json!(["0x0102030405060708"])).await.expect_err("unknown payload id");
    assert!(missing.contains("-38001") || missing.contains("Unknown payload"), "{missing}");
    assert!(node.terminate().success());
}
