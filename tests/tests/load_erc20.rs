//! `pseq load --kind erc20` against a real `pseq node --dev`: the corpus's ERC20Token is deployed
//! over RPC, every sender gets tokens from the deployer, the ERC-20 transfers are all included
//! without a revert, and the token's own `balanceOf` shows a recipient's unit arrived.

use alloy_primitives::{Address, Bytes};
use pseq_tests::node::{call, pseq_binary, NodeProcess};
use serde_json::{json, Value};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erc20_load_is_included_and_moves_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_dev(&dir.path().join("n"), &["--block-time", "500ms"]);
    let output = Command::new(pseq_binary())
        .args(["load", "--rpc", &format!("http://{}", node.rpc), "--kind", "erc20", "--accounts", "20", "--rate", "200", "--duration", "2s", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kind"], json!("erc20"));
    assert_eq!(report["submitted"], json!(400), "{report}");
    assert_eq!(report["included"], json!(400), "{report}");
    assert_eq!(report["receipts_checked"], json!(400), "every receipt checked at this size: {report}");
    assert_eq!(report["reverted"], json!(0), "{report}");
    // The first load transaction paid 1 unit to 0x5e5e…5e00000000.
    let token: Address = serde_json::from_value(report["token"].clone()).unwrap();
    let mut recipient = Address::repeat_byte(0x5e);
    recipient.0[16..].copy_from_slice(&0u32.to_be_bytes());
    let mut data = vec![0x70, 0xa0, 0x82, 0x31];
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(recipient.as_slice());
    let balance = call(&node.http(), "eth_call", json!([{ "to": token, "data": Bytes::from(data) }, "latest"])).await.unwrap();
    assert_eq!(balance, json!(format!("0x{:064x}", 1)));
    assert!(node.terminate().success());
}
