//! Real clients against a real `pseq node --dev`: cast (a transfer, a deployment from bytecode,
//! a call, event logs, a revert reason), viem over WebSocket (`watchBlocks`, `watchEvent`, the
//! same calls) and web3.py (balance, nonce, a signed transfer and its receipt). The clients come
//! from npm and PyPI through `scripts/install-clients.sh` (`.ci/run` runs it); without them the
//! test fails under CI and says SKIPPED elsewhere.

use pseq_tests::node::NodeProcess;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn clients_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PSEQ_CLIENTS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pseq-clients")))?;
    let ready = dir.join("node_modules/@foundry-rs/cast-linux-amd64/bin/cast").exists()
        && dir.join("node_modules/viem").exists()
        && dir.join("venv/bin/python").exists();
    ready.then_some(dir)
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn run(what: &str, command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed ({}):\n{stdout}\n{stderr}", out.status);
    println!("{}", stdout.trim());
}

#[test]
fn cast_viem_and_web3py_against_dev_node() {
    let Some(clients) = clients_dir() else {
        if let Some(reason) = std::env::var_os("PSEQ_CLIENTS_UNAVAILABLE") {
            eprintln!("SKIPPED: real-client tests: {}", reason.to_string_lossy());
            return;
        }
        assert!(std::env::var_os("CI").is_none(), "clients missing under CI: scripts/install-clients.sh must run first");
        eprintln!("SKIPPED: real-client tests need scripts/install-clients.sh (cast, viem, web3.py)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start_dev(&dir.path().join("data"), &[]);
    let http = format!("http://{}", node.rpc);
    let cast = clients.join("node_modules/@foundry-rs/cast-linux-amd64/bin/cast");
    run("cast", Command::new("bash").arg(scripts().join("cast.sh")).arg(&cast).arg(&http));
    // viem resolves from the clients folder's node_modules.
    let viem_script = clients.join("viem-e2e.mjs");
    std::fs::copy(scripts().join("viem.mjs"), &viem_script).unwrap();
    std::fs::copy(scripts().join("contracts.env"), clients.join("contracts.env")).unwrap();
    run("viem", Command::new("node").arg(&viem_script).arg(node.ws_url()).arg(&http));
    run("web3.py", Command::new(clients.join("venv/bin/python")).arg(scripts().join("web3_check.py")).arg(&http));
    let status = node.terminate();
    assert!(status.success());
}
