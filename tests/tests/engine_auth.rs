//! The Engine API of a real `pseq node --dev` (its JWT secret generated into the datadir's
//! `jwt.hex`): requests without a valid token get HTTP 401 (no token, wrong secret, `alg: none`,
//! an `iat` 120 s old, a token from the future); a valid token is served
//! (`engine_exchangeCapabilities`, and a forkchoiceUpdated to the head).

use alloy_rpc_types_engine::{Claims, JwtSecret};
use pseq_tests::node::NodeProcess;
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

fn post(addr: SocketAddr, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64url(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn engine_api_requires_a_valid_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("data");
    let node = NodeProcess::start_dev(&datadir, &[]);
    let secret = JwtSecret::from_file(&datadir.join("jwt.hex")).expect("jwt.hex written by the node");
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "engine_exchangeCapabilities", "params": [[]] }).to_string();

    let valid = secret.encode(&Claims { iat: now(), exp: None }).unwrap();
    let (status, response) = post(node.engine, Some(&valid), &body);
    assert_eq!(status, 200, "{response}");
    let caps: Value = serde_json::from_str(&response).unwrap();
    assert!(caps["result"].as_array().unwrap().contains(&json!("engine_newPayloadV4")), "{caps}");

    assert_eq!(post(node.engine, None, &body).0, 401, "no token");
    let other = JwtSecret::random().encode(&Claims { iat: now(), exp: None }).unwrap();
    assert_eq!(post(node.engine, Some(&other), &body).0, 401, "wrong secret");
    let stale = secret.encode(&Claims { iat: now() - 120, exp: None }).unwrap();
    assert_eq!(post(node.engine, Some(&stale), &body).0, 401, "iat 120 s old");
    let future = secret.encode(&Claims { iat: now() + 120, exp: None }).unwrap();
    assert_eq!(post(node.engine, Some(&future), &body).0, 401, "iat 120 s ahead");
    let none = format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(format!(r#"{{"iat":{}}}"#, now()).as_bytes()));
    assert_eq!(post(node.engine, Some(&none), &body).0, 401, "alg none");
    assert_eq!(post(node.engine, Some("garbage"), &body).0, 401, "garbage token");

    // forkchoiceUpdated to the current head is VALID; to an unknown hash, SYNCING.
    let (_, head) = post(node.rpc, None, &json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": ["latest", false] }).to_string());
    let head: Value = serde_json::from_str(&head).unwrap();
    let hash = head["result"]["hash"].clone();
    let zero = json!(format!("0x{}", "00".repeat(32)));
    let fcu = |h: &Value| json!({ "jsonrpc": "2.0", "id": 1, "method": "engine_forkchoiceUpdatedV3", "params": [{ "headBlockHash": h, "safeBlockHash": zero, "finalizedBlockHash": zero }, null] }).to_string();
    let (status, response) = post(node.engine, Some(&valid), &fcu(&hash));
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&response).unwrap()["result"]["payloadStatus"]["status"], json!("VALID"), "{response}");
    let (_, response) = post(node.engine, Some(&valid), &fcu(&json!(format!("0x{}", "ab".repeat(32)))));
    assert_eq!(serde_json::from_str::<Value>(&response).unwrap()["result"]["payloadStatus"]["status"], json!("SYNCING"), "{response}");
    // The engine namespace is not on the public port.
    let (_, public) = post(node.rpc, None, &body);
    assert!(public.contains("-32601"), "{public}");
    assert!(node.terminate().success());
}
