//! `pseq fetch` against a real `pseq node --dev`: blocks with a deployment, contract calls and
//! transfers are snapshotted over JSON-RPC (the block and the pre-state it touches), then
//! `pseq replay` re-executes the snapshot offline: gas used, logs bloom and receipts root (so every
//! receipt) equal the node's, on the sequential and the parallel path.

use pseq::{fetch, replay};
use pseq_config::dev::dev_signer;
use pseq_tests::node::{call, wait_receipt, NodeProcess};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_blocks_replay_with_identical_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_dev(&dir.path().join("data"), &[]);
    let client = node.http();
    call(&client, "evm_setAutomine", json!([false])).await.unwrap();
    // Block 1: a contract that logs in its constructor and returns 42, and a transfer.
    let emitter = "0x602a6000527f111111111111111111111111111111111111111111111111111111111111111160206000a169602a60005260206000f3600052600a6016f3";
    let deployer = dev_signer(0).unwrap().address();
    let deploy = call(&client, "eth_sendTransaction", json!([{ "from": deployer, "data": emitter }])).await.unwrap();
    call(&client, "eth_sendTransaction", json!([{ "from": dev_signer(1).unwrap().address(), "to": "0x4242424242424242424242424242424242424242", "value": "0x99" }])).await.unwrap();
    call(&client, "evm_mine", json!([])).await.unwrap();
    let contract = wait_receipt(&client, deploy.as_str().unwrap()).await["contractAddress"].clone();
    // Block 2: calls into the contract from two accounts, and another transfer.
    for i in 2..4 {
        call(&client, "eth_sendTransaction", json!([{ "from": dev_signer(i).unwrap().address(), "to": contract, "gas": "0x10000" }])).await.unwrap();
    }
    call(&client, "eth_sendTransaction", json!([{ "from": dev_signer(1).unwrap().address(), "to": "0x4343434343434343434343434343434343434343", "value": "0x1" }])).await.unwrap();
    call(&client, "evm_mine", json!([])).await.unwrap();

    let url = format!("http://{}", node.rpc);
    let out = dir.path().join("snapshot");
    let (url2, out2) = (url.clone(), out.clone());
    let summaries = tokio::task::spawn_blocking(move || {
        let refused = fetch::fetch(&url2, 1, &out2, None).expect_err("a non-mainnet chain needs --fork");
        assert!(refused.contains("--fork"), "{refused}");
        (1..=2).map(|n| fetch::fetch(&url2, n, &out2, Some("Osaka")).unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(summaries[0].transactions, 2);
    assert_eq!(summaries[1].transactions, 3);
    assert!(summaries.iter().all(|s| s.accounts >= 3), "{summaries:?}");
    let _ = url;

    let options = replay::ReplayOptions { blocks: vec![], check_threads: vec![1, 2], threads: 2, runs: 0, json: false, force_parallel: true };
    let (counts, _) = replay::run(&out, &options).unwrap();
    assert_eq!((counts.passed, counts.failed()), (2, 0), "{:?}", counts.failures);
    assert!(node.terminate().success());
}
