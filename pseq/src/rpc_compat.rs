//! `pseq rpc-compat`: the execution-apis JSON-RPC conformance suite, replayed as hive's
//! rpc-compat simulator does it. A node of its own on a temporary datadir: genesis from
//! `genesis.json`, `chain.rlp` imported, `headfcu.json` sent to the Engine API with a JWT; then
//! every `>>` request of every `<method>/<test>.io` file is POSTed to the JSON-RPC server and the
//! answer compared with the `<<` line: results must be equal as JSON (hex quantities compared as
//! numbers); where both sides are errors the codes and messages are not compared. Tests marked
//! `speconly` are checked only for an answer without an error (no schema check here).

use crate::{
    chain_import::{import, open_datadir, read_genesis},
    enginetest::bearer,
    report::{Counts, Progress},
};
use alloy_primitives::U256;
use alloy_rpc_types_engine::JwtSecret;
use pseq_builder::{BuilderSettings, Sequencer};
use pseq_executor::ExecutionOptions;
use pseq_rpc::RpcContext;
use serde_json::Value;
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

/// geth's default block gas limit target (`--miner.gaslimit`).
const GETH_DEFAULT_GAS_CEIL: u64 = 60_000_000;

/// POSTs a JSON body and returns the response body.
fn post(addr: SocketAddr, authorization: Option<&str>, body: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let request = format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    if head.contains("Transfer-Encoding: chunked") || head.contains("transfer-encoding: chunked") {
        return Ok(unchunk(body));
    }
    Ok(body.to_string())
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Whether two JSON values are equal, hex quantities compared as numbers.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y || (quantity(x).is_some() && quantity(x) == quantity(y)),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

fn quantity(text: &str) -> Option<U256> {
    let digits = text.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 64 {
        return None;
    }
    U256::from_str_radix(digits, 16).ok()
}

/// The first difference between two JSON values, as a path.
fn difference(a: &Value, b: &Value, path: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) if !same(v, w) => return difference(v, w, &format!("{path}.{k}")),
                    None => return format!("{path}.{k}: missing in ours"),
                    _ => {}
                }
            }
            y.keys().find(|k| !x.contains_key(*k)).map_or_else(|| path.to_string(), |k| format!("{path}.{k}: extra in ours"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find(|(_, (p, q))| !same(p, q)).map_or(path.to_string(), |(i, (p, q))| difference(p, q, &format!("{path}[{i}]")))
        }
        _ => format!("{path}: expected {}, ours {}", short(a), short(b)),
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 120 {
        format!("{}…", &text[..120])
    } else {
        text
    }
}

/// Runs the suite in `tests_dir` (the folder with `genesis.json`, `chain.rlp`, `headfcu.json` and
/// the method folders).
pub fn run(tests_dir: &Path) -> Result<Counts, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary datadir: {e}"))?;
    let genesis = tests_dir.join("genesis.json");
    import(dir.path(), &genesis, &tests_dir.join("chain.rlp"), &ExecutionOptions::parallel(2))?;
    let spec = read_genesis(&genesis)?;
    let storage = Arc::new(open_datadir(dir.path(), &spec)?);
    // Built blocks move the parent's gas limit towards the configured one; configure geth's
    // default (`--miner.gaslimit` 60M), which the fixtures' expected blocks were built with.
    let settings = BuilderSettings { gas_limit: GETH_DEFAULT_GAS_CEIL, threads: 2, ..Default::default() };
    let sequencer = Arc::new(Sequencer::new(storage, spec, settings).map_err(|e| e.to_string())?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    let secret = JwtSecret::random();
    let (rpc, engine, handles) = runtime.block_on(async {
        let module = pseq_rpc::module(RpcContext::new(sequencer.clone()))?;
        let (rpc, rpc_handle) = pseq_rpc::start_rpc("127.0.0.1:0".parse().map_err(|_| "address")?, module).await?;
        let engine_module = pseq_rpc::engine_module(RpcContext::new(sequencer.clone()))?;
        let (engine, engine_handle) = pseq_rpc::start_engine("127.0.0.1:0".parse().map_err(|_| "address")?, engine_module, secret).await?;
        Ok::<_, String>((rpc, engine, (rpc_handle, engine_handle)))
    })?;
    let fcu = std::fs::read_to_string(tests_dir.join("headfcu.json")).map_err(|e| format!("headfcu.json: {e}"))?;
    let answer = post(engine, Some(&bearer(&secret)?), &fcu)?;
    if !answer.contains("VALID") {
        return Err(format!("headfcu.json was not accepted: {answer}"));
    }

    let mut files: Vec<PathBuf> = Vec::new();
    let mut methods: Vec<PathBuf> = std::fs::read_dir(tests_dir).map_err(|e| e.to_string())?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    methods.sort();
    for method in methods {
        let mut tests: Vec<PathBuf> = std::fs::read_dir(&method).map_err(|e| e.to_string())?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "io")).collect();
        tests.sort();
        files.extend(tests);
    }
    let mut counts = Counts::default();
    let mut progress = Progress::new("rpc-compat", files.len());
    for file in &files {
        let name = file.strip_prefix(tests_dir).unwrap_or(file).display().to_string();
        match run_file(rpc, file) {
            Ok(()) => counts.pass(),
            Err(e) => counts.fail(format!("{name}: {e}")),
        }
        progress.tick(&counts);
    }
    runtime.block_on(async {
        let _ = handles.0.stop();
        let _ = handles.1.stop();
    });
    Ok(counts)
}

fn run_file(rpc: SocketAddr, file: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let spec_only = text.lines().any(|l| l.starts_with("//") && l.contains("speconly"));
    let mut pending: Option<Value> = None;
    for line in text.lines() {
        if let Some(request) = line.strip_prefix(">> ") {
            let answer = post(rpc, None, request)?;
            pending = Some(serde_json::from_str(&answer).map_err(|e| format!("answer is not JSON ({e}): {answer}"))?);
        } else if let Some(expected) = line.strip_prefix("<< ") {
            let expected: Value = serde_json::from_str(expected).map_err(|e| format!("expected line is not JSON: {e}"))?;
            let ours = pending.take().ok_or("<< without >>")?;
            if spec_only {
                match (expected.get("error").is_some(), ours.get("error")) {
                    (false, Some(e)) => return Err(format!("error where a result was expected: {}", short(e))),
                    (true, None) => return Err(format!("result where an error was expected: {}", short(&ours["result"]))),
                    _ => continue,
                }
            }
            match (expected.get("error"), ours.get("error")) {
                (Some(_), Some(_)) => {}
                (Some(e), None) => return Err(format!("expected error {}, got result {}", short(e), short(&ours["result"]))),
                (None, Some(e)) => return Err(format!("expected a result, got error {}", short(e))),
                (None, None) => {
                    let (want, got) = (&expected["result"], &ours["result"]);
                    if !same(want, got) {
                        return Err(difference(want, got, "result"));
                    }
                }
            }
        }
    }
    Ok(())
}
