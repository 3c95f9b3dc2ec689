//! The JSON-RPC surface of a real `pseq node --dev` over raw HTTP: bad input of every kind gets
//! the JSON-RPC error it should (parse error, unknown method, invalid params, geth's transaction
//! rejection strings, oversized bodies, oversized batches), random and mutated bodies never stop
//! the server; and the polled filters, fee history, pool and dev methods behave as clients expect.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{hex, Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use pseq_config::dev::dev_signer;
use pseq_tests::node::NodeProcess;
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// POSTs `body` and returns (HTTP status, body).
fn post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading everything; a broken pipe then is fine.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let (_, body) = post(addr, json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string().as_bytes());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {body}"))
}

fn error_code(response: &Value) -> i64 {
    response["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected an error: {response}"))
}

fn signed_transfer(index: u32, chain_id: u64, nonce: u64) -> String {
    let signer = dev_signer(index).unwrap();
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(Address::repeat_byte(7)),
        value: U256::from(1),
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    format!("0x{}", hex::encode(envelope.encoded_2718()))
}

fn alive(addr: SocketAddr) {
    assert_eq!(rpc(addr, "eth_chainId", json!([]))["result"], json!("0x7a69"), "node stopped answering");
}

#[test]
fn bad_requests_get_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_dev(&dir.path().join("data"), &[]);
    let addr = node.rpc;

    let (_, body) = post(addr, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":");
    assert_eq!(error_code(&serde_json::from_str(&body).unwrap()), -32700, "{body}");
    assert_eq!(error_code(&rpc(addr, "eth_noSuchMethod", json!([]))), -32601);
    assert_eq!(error_code(&rpc(addr, "eth_getBalance", json!(["0xzz", "latest"]))), -32602);
    assert_eq!(error_code(&rpc(addr, "eth_getBlockByNumber", json!([]))), -32602);
    assert_eq!(error_code(&rpc(addr, "eth_getStorageAt", json!([Address::ZERO, "0x" .to_string() + &"1".repeat(65), "latest"]))), -32602);

    // Transactions: geth's rejection strings as -32000.
    let garbage = rpc(addr, "eth_sendRawTransaction", json!(["0x02c0ffee"]));
    assert_eq!(error_code(&garbage), -32000);
    assert!(garbage["error"]["message"].as_str().unwrap().starts_with("failed to decode signed transaction"), "{garbage}");
    let wrong_chain = rpc(addr, "eth_sendRawTransaction", json!([signed_transfer(5, 1, 0)]));
    assert_eq!(wrong_chain["error"]["message"], json!("invalid chain id for signer"), "{wrong_chain}");
    let first = rpc(addr, "eth_sendRawTransaction", json!([signed_transfer(5, 31337, 0)]));
    let hash = first["result"].as_str().expect("accepted").to_string();
    let again = rpc(addr, "eth_sendRawTransaction", json!([signed_transfer(5, 31337, 0)]));
    let message = again["error"]["message"].as_str().unwrap().to_string();
    assert!(message == "already known" || message == "nonce too low", "{again}");
    for _ in 0..200 {
        if !rpc(addr, "eth_getTransactionReceipt", json!([hash]))["result"].is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rpc(addr, "eth_sendRawTransaction", json!([signed_transfer(5, 31337, 0)]))["error"]["message"], json!("nonce too low"));

    // A call that reverts: code 3 and the revert data (a contract that reverts with Error("nope")).
    let reverter_init = "0x6070600c60003960706000f36064600c60003960646000fd08c379a0000000000000000000000000000000000000000000000000000000000000002000000000000000000000000000000000000000000000000000000000000000046e6f706500000000000000000000000000000000000000000000000000000000";
    let revert = rpc(addr, "eth_call", json!([{ "data": reverter_init }, "latest"]));
    assert!(revert["result"].is_string(), "deployment call: {revert}");
    let deploy = rpc(addr, "eth_sendTransaction", json!([{ "from": dev_signer(0).unwrap().address(), "data": reverter_init }]));
    let deploy_hash = deploy["result"].as_str().expect("deploy accepted").to_string();
    let mut receipt = Value::Null;
    for _ in 0..200 {
        receipt = rpc(addr, "eth_getTransactionReceipt", json!([deploy_hash]))["result"].clone();
        if !receipt.is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let reverter = receipt["contractAddress"].as_str().expect("contract address").to_string();
    let reverted = rpc(addr, "eth_call", json!([{ "to": reverter }, "latest"]));
    assert_eq!(error_code(&reverted), 3, "{reverted}");
    assert_eq!(reverted["error"]["message"], json!("execution reverted: nope"));
    assert!(reverted["error"]["data"].as_str().unwrap().starts_with("0x08c379a0"));
    assert_eq!(error_code(&rpc(addr, "eth_estimateGas", json!([{ "to": reverter }]))), 3);

    // Tracing: the deployment as a CREATE frame; a reverting transaction with its reason; the
    // prestate of a transfer.
    let created = rpc(addr, "debug_traceTransaction", json!([deploy_hash, { "tracer": "callTracer" }]))["result"].clone();
    assert_eq!(created["type"], json!("CREATE"), "{created}");
    assert_eq!(created["to"].as_str().unwrap().to_lowercase(), reverter.to_lowercase());
    assert_eq!(created["gasUsed"], receipt["gasUsed"]);
    let failing = rpc(addr, "eth_sendTransaction", json!([{ "from": dev_signer(0).unwrap().address(), "to": reverter, "gas": "0x30000" }]))["result"].as_str().unwrap().to_string();
    let mut failed_receipt = Value::Null;
    for _ in 0..200 {
        failed_receipt = rpc(addr, "eth_getTransactionReceipt", json!([failing]))["result"].clone();
        if !failed_receipt.is_null() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(failed_receipt["status"], json!("0x0"));
    let trace = rpc(addr, "debug_traceTransaction", json!([failing, { "tracer": "callTracer" }]))["result"].clone();
    assert_eq!(trace["type"], json!("CALL"));
    assert_eq!(trace["error"], json!("execution reverted"));
    assert_eq!(trace["revertReason"], json!("nope"));
    let logs = rpc(addr, "debug_traceTransaction", json!([failing]))["result"].clone();
    assert_eq!(logs["failed"], json!(true), "{logs}");
    let steps = logs["structLogs"].as_array().unwrap();
    assert_eq!(steps.last().unwrap()["op"], json!("REVERT"));
    assert_eq!(steps.iter().filter(|s| s["op"] == json!("CODECOPY")).count(), 1);
    let pre = rpc(addr, "debug_traceTransaction", json!([hash, { "tracer": "prestateTracer" }]))["result"].clone();
    let sender = format!("{:?}", dev_signer(5).unwrap().address());
    assert_eq!(pre[&sender]["balance"], json!("0x21e19e0c9bab2400000"), "{pre}");
    assert!(pre[&sender].get("nonce").is_none(), "nonce 0 is left out, as geth does: {pre}");
    let block_traces = rpc(addr, "debug_traceBlockByNumber", json!([failed_receipt["blockNumber"], { "tracer": "callTracer" }]))["result"].clone();
    assert_eq!(block_traces[0]["txHash"], json!(failing));
    assert_eq!(error_code(&rpc(addr, "debug_traceTransaction", json!([failing, { "tracer": "4byteTracer" }]))), -32602);

    // Oversized body and oversized batch.
    let huge = vec![b' '; 17 * 1024 * 1024];
    let (status, _) = post(addr, &huge);
    assert_eq!(status, 413, "oversized body");
    let batch: Vec<Value> = (0..1_001).map(|i| json!({ "jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": [] })).collect();
    let (_, body) = post(addr, serde_json::to_string(&batch).unwrap().as_bytes());
    assert!(body.contains("-32600") || body.contains("batch"), "oversized batch answered: {}", &body[..body.len().min(200)]);
    alive(addr);

    // Random and mutated bodies (a fixed-seed generator: failures reproduce).
    let seeds = [
        json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["latest", true] }).to_string(),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{ "to": reverter, "data": "0x" }, "latest"] }).to_string(),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{ "fromBlock": "0x0", "toBlock": "latest" }] }).to_string(),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [signed_transfer(6, 31337, 0)] }).to_string(),
        json!([{ "jsonrpc": "2.0", "id": 1, "method": "eth_feeHistory", "params": ["0x4", "latest", [10, 50]] }]).to_string(),
    ];
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..600 {
        let mut body = seeds[i % seeds.len()].as_bytes().to_vec();
        for _ in 0..(1 + next() % 8) {
            if body.is_empty() {
                body.push(b'{');
            }
            let at = (next() as usize) % body.len();
            match next() % 4 {
                0 => body[at] = next() as u8,
                1 => body.insert(at, b"{}[]\",:0x-9e"[(next() % 12) as usize]),
                2 => {
                    body.remove(at);
                }
                _ => body.truncate(at.max(1)),
            }
        }
        let (status, _) = post(addr, &body);
        assert!(status == 200 || status == 400 || status == 413 || status == 415, "body {i}: HTTP {status}");
    }
    alive(addr);

    // CORS: a browser's preflight is answered and responses allow any origin.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"OPTIONS / HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:5173\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n").unwrap();
    let mut preflight = String::new();
    let _ = stream.read_to_string(&mut preflight);
    assert!(preflight.starts_with("HTTP/1.1 204"), "{preflight}");
    assert!(preflight.to_ascii_lowercase().contains("access-control-allow-origin: *"), "{preflight}");
    assert!(node.terminate().success());
}

#[test]
fn filters_fee_history_pool_and_dev_methods() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_dev(&dir.path().join("data"), &[]);
    let addr = node.rpc;
    // Manual mining: transactions wait in the pool until evm_mine.
    assert!(rpc(addr, "evm_setAutomine", json!([false]))["error"].is_null());
    let block_filter = rpc(addr, "eth_newBlockFilter", json!([]))["result"].as_str().unwrap().to_string();
    let log_filter = rpc(addr, "eth_newFilter", json!([{ "fromBlock": "0x0" }]))["result"].as_str().unwrap().to_string();
    let pending_filter = rpc(addr, "eth_newPendingTransactionFilter", json!([]))["result"].as_str().unwrap().to_string();

    let hash = rpc(addr, "eth_sendRawTransaction", json!([signed_transfer(7, 31337, 0)]))["result"].as_str().unwrap().to_string();
    let status = rpc(addr, "txpool_status", json!([]))["result"].clone();
    assert_eq!(status["pending"], json!("0x1"), "{status}");
    assert_eq!(rpc(addr, "eth_getTransactionCount", json!([dev_signer(7).unwrap().address(), "pending"]))["result"], json!("0x1"));
    assert_eq!(rpc(addr, "eth_getTransactionCount", json!([dev_signer(7).unwrap().address(), "latest"]))["result"], json!("0x0"));
    assert!(rpc(addr, "eth_getTransactionByHash", json!([hash]))["result"]["blockHash"].is_null());
    assert_eq!(rpc(addr, "eth_getFilterChanges", json!([pending_filter]))["result"], json!([hash]));
    assert_eq!(rpc(addr, "eth_blockNumber", json!([]))["result"], json!("0x0"));

    assert_eq!(rpc(addr, "evm_mine", json!([]))["result"], json!("0x0"));
    assert_eq!(rpc(addr, "eth_blockNumber", json!([]))["result"], json!("0x1"));
    let receipt = rpc(addr, "eth_getTransactionReceipt", json!([hash]))["result"].clone();
    assert_eq!(receipt["blockNumber"], json!("0x1"));
    let block = rpc(addr, "eth_getBlockByNumber", json!(["0x1", false]))["result"].clone();
    assert_eq!(rpc(addr, "eth_getFilterChanges", json!([block_filter]))["result"], json!([block["hash"]]));
    assert_eq!(rpc(addr, "eth_getFilterChanges", json!([block_filter]))["result"], json!([]));
    assert_eq!(rpc(addr, "eth_getFilterChanges", json!([log_filter]))["result"], json!([]));
    assert_eq!(rpc(addr, "eth_getBlockReceipts", json!(["0x1"]))["result"][0]["transactionHash"], json!(hash));

    // anvil_mine: several blocks at once; time travel moves the next timestamp.
    assert!(rpc(addr, "anvil_mine", json!(["0x3"]))["error"].is_null());
    assert_eq!(rpc(addr, "eth_blockNumber", json!([]))["result"], json!("0x4"));
    let t4 = u64::from_str_radix(rpc(addr, "eth_getBlockByNumber", json!(["0x4", false]))["result"]["timestamp"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert!(rpc(addr, "evm_setNextBlockTimestamp", json!([t4 + 1000]))["error"].is_null());
    rpc(addr, "evm_mine", json!([]));
    let t5 = rpc(addr, "eth_getBlockByNumber", json!(["latest", false]))["result"]["timestamp"].clone();
    assert_eq!(t5, json!(format!("{:#x}", t4 + 1000)));

    // Snapshots: revert undoes the blocks mined since, through storage's unwind.
    let snapshot = rpc(addr, "evm_snapshot", json!([]))["result"].clone();
    let before = rpc(addr, "eth_getBlockByNumber", json!(["latest", false]))["result"]["hash"].clone();
    rpc(addr, "eth_sendRawTransaction", json!([signed_transfer(7, 31337, 1)]));
    rpc(addr, "anvil_mine", json!(["0x2"]));
    assert_eq!(rpc(addr, "eth_blockNumber", json!([]))["result"], json!("0x7"));
    assert_eq!(rpc(addr, "eth_getTransactionCount", json!([dev_signer(7).unwrap().address(), "latest"]))["result"], json!("0x2"));
    assert_eq!(rpc(addr, "evm_revert", json!([snapshot]))["result"], json!(true));
    assert_eq!(rpc(addr, "eth_blockNumber", json!([]))["result"], json!("0x5"));
    assert_eq!(rpc(addr, "eth_getBlockByNumber", json!(["latest", false]))["result"]["hash"], before);
    assert_eq!(rpc(addr, "eth_getTransactionCount", json!([dev_signer(7).unwrap().address(), "latest"]))["result"], json!("0x1"));
    assert_eq!(rpc(addr, "evm_revert", json!([snapshot]))["result"], json!(false), "a snapshot is used up by its revert");

    // Account edits: each lands in a block of its own; the state root stays true (the node's own
    // root check on commit) and reads see the new values.
    let target = "0x00000000000000000000000000000000000000e1";
    let before_edit = rpc(addr, "eth_blockNumber", json!([]))["result"].clone();
    assert!(rpc(addr, "anvil_setBalance", json!([target, "0x1234"]))["error"].is_null());
    assert!(rpc(addr, "anvil_setNonce", json!([target, "0x7"]))["error"].is_null());
    assert!(rpc(addr, "hardhat_setCode", json!([target, "0x602a60005260206000f3"]))["error"].is_null());
    assert_eq!(rpc(addr, "anvil_setStorageAt", json!([target, "0x1", format!("0x{:064x}", 0x99)]))["result"], json!(true));
    assert_eq!(rpc(addr, "eth_getBalance", json!([target, "latest"]))["result"], json!("0x1234"));
    assert_eq!(rpc(addr, "eth_getTransactionCount", json!([target, "latest"]))["result"], json!("0x7"));
    assert_eq!(rpc(addr, "eth_getCode", json!([target, "latest"]))["result"], json!("0x602a60005260206000f3"));
    assert_eq!(rpc(addr, "eth_getStorageAt", json!([target, "0x1", "latest"]))["result"], json!(format!("0x{:064x}", 0x99)));
    assert_eq!(rpc(addr, "eth_call", json!([{ "to": target }, "latest"]))["result"], json!(format!("0x{:064x}", 42)));
    let after_edit = rpc(addr, "eth_blockNumber", json!([]))["result"].clone();
    let blocks = |v: &Value| u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(blocks(&after_edit), blocks(&before_edit) + 4);
    let proof = rpc(addr, "eth_getProof", json!([target, ["0x1"], "latest"]))["result"].clone();
    assert_eq!(proof["balance"], json!("0x1234"));
    assert_eq!(proof["storageProof"][0]["value"], json!("0x99"));
    // Proofs at earlier blocks: the state then, rooted in that block's state root.
    for (block, balance, value) in [(blocks(&before_edit), "0x0", "0x0"), (blocks(&before_edit) + 3, "0x1234", "0x0"), (blocks(&after_edit), "0x1234", "0x99")] {
        let tag = format!("{block:#x}");
        let proof = rpc(addr, "eth_getProof", json!([target, ["0x1"], tag]))["result"].clone();
        assert_eq!(proof["balance"], json!(balance), "block {block}: {proof}");
        assert_eq!(proof["storageProof"][0]["value"], json!(value), "block {block}");
        let first: alloy_primitives::Bytes = serde_json::from_value(proof["accountProof"][0].clone()).unwrap();
        let root = rpc(addr, "eth_getBlockByNumber", json!([tag, false]))["result"]["stateRoot"].clone();
        assert_eq!(json!(alloy_primitives::keccak256(&first)), root, "block {block}: the proof starts at the state root");
    }

    // Impersonation: a keyless account sends once impersonated, and reads show it as the sender.
    let whale = "0x00000000000000000000000000000000000000e3";
    assert!(rpc(addr, "anvil_setBalance", json!([whale, "0xde0b6b3a7640000"]))["error"].is_null());
    let send = json!([{ "from": whale, "to": "0x00000000000000000000000000000000000000e2", "value": "0x10", "gas": "0x5208" }]);
    assert_eq!(rpc(addr, "eth_sendTransaction", send.clone())["error"]["message"], json!("unknown account"));
    assert!(rpc(addr, "anvil_impersonateAccount", json!([whale]))["error"].is_null());
    let sent = rpc(addr, "eth_sendTransaction", send.clone());
    let hash = sent["result"].clone();
    assert!(hash.is_string(), "impersonated send: {sent}");
    rpc(addr, "evm_mine", json!([]));
    let receipt = rpc(addr, "eth_getTransactionReceipt", json!([hash]))["result"].clone();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    assert_eq!(receipt["from"], json!(whale));
    assert_eq!(rpc(addr, "eth_getTransactionByHash", json!([hash]))["result"]["from"], json!(whale));
    assert_eq!(rpc(addr, "eth_getBalance", json!(["0x00000000000000000000000000000000000000e2", "latest"]))["result"], json!("0x10"));
    let trace = rpc(addr, "debug_traceTransaction", json!([hash, { "tracer": "callTracer" }]))["result"].clone();
    assert_eq!(trace["from"], json!(whale), "{trace}");
    assert!(rpc(addr, "anvil_stopImpersonatingAccount", json!([whale]))["error"].is_null());
    assert_eq!(rpc(addr, "eth_sendTransaction", send)["error"]["message"], json!("unknown account"));
    let after_edit = rpc(addr, "eth_blockNumber", json!([]))["result"].clone();

    let history = rpc(addr, "eth_feeHistory", json!(["0x5", "latest", [25, 75]]))["result"].clone();
    assert_eq!(history["oldestBlock"], json!(format!("{:#x}", blocks(&after_edit) - 4)));
    assert_eq!(history["baseFeePerGas"].as_array().unwrap().len(), 6);
    assert_eq!(history["reward"].as_array().unwrap().len(), 5);
    assert_eq!(rpc(addr, "eth_uninstallFilter", json!([block_filter]))["result"], json!(true));
    assert_eq!(rpc(addr, "eth_getFilterChanges", json!([block_filter]))["error"]["message"], json!("filter not found"));
    assert!(node.terminate().success());
}
