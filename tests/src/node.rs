//! Running a real `pseq node` process for end-to-end tests: start it on free ports, read the
//! addresses it prints, talk to it over real HTTP and WebSocket JSON-RPC clients, stop it with
//! SIGTERM or SIGKILL.

use jsonrpsee::{
    core::client::ClientT,
    http_client::{HttpClient, HttpClientBuilder},
};
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The `pseq` binary next to the test executables (`target/<profile>/pseq`), or `$PSEQ_BIN`.
pub fn pseq_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PSEQ_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let binary = profile_dir.join("pseq");
    assert!(binary.exists(), "{} not built (cargo test builds it with the pseq package's tests)", binary.display());
    binary
}

/// A running node.
pub struct NodeProcess {
    child: Child,
    /// JSON-RPC address (HTTP and WebSocket).
    pub rpc: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
    /// Engine API address (JWT-authenticated).
    pub engine: SocketAddr,
    stderr_log: PathBuf,
}

impl NodeProcess {
    /// Starts `pseq node --dev` on `datadir` with free ports and `extra` flags; waits until it
    /// listens.
    pub fn start_dev(datadir: &Path, extra: &[&str]) -> NodeProcess {
        let stderr_log = datadir.with_extension("log");
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&stderr_log).expect("log file");
        let mut child = Command::new(pseq_binary())
            .args(["node", "--dev", "--http.port", "0", "--metrics.port", "0", "--authrpc.port", "0", "--threads", "2", "--datadir"])
            .arg(datadir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start pseq node");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        // A node that does not come up is stopped and reaped before the test fails.
        let mut give_up = |why: &str| -> ! {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{why}; log: {}", std::fs::read_to_string(&stderr_log).unwrap_or_default())
        };
        loop {
            if Instant::now() >= deadline {
                give_up("node did not start");
            }
            let Some(Ok(line)) = lines.next() else { give_up("node exited before listening") };
            if let Some(rest) = line.strip_prefix("pseq node listening: ") {
                let mut rpc = None;
                let mut metrics = None;
                let mut engine = None;
                for part in rest.split_whitespace() {
                    if let Some(a) = part.strip_prefix("rpc=") {
                        rpc = a.parse().ok();
                    }
                    if let Some(a) = part.strip_prefix("metrics=") {
                        metrics = a.parse().ok();
                    }
                    if let Some(a) = part.strip_prefix("engine=") {
                        engine = a.parse().ok();
                    }
                }
                // Keep draining stdout so the node never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines.by_ref() {});
                return NodeProcess { child, rpc: rpc.expect("rpc address"), metrics: metrics.expect("metrics address"), engine: engine.expect("engine address"), stderr_log };
            }
        }
    }

    /// An HTTP JSON-RPC client.
    pub fn http(&self) -> HttpClient {
        HttpClientBuilder::default().request_timeout(Duration::from_secs(60)).build(format!("http://{}", self.rpc)).expect("http client")
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.rpc)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
        self.wait(Duration::from_secs(60))
    }

    /// Sends SIGKILL and waits.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("node did not stop within {timeout:?}; log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the node logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `method` with `params` (a JSON array) and returns the result, or the error's text.
pub async fn call(client: &HttpClient, method: &str, params: Value) -> Result<Value, String> {
    let mut builder = jsonrpsee::core::params::ArrayParams::new();
    for p in params.as_array().cloned().unwrap_or_default() {
        builder.insert(p).map_err(|e| e.to_string())?;
    }
    client.request::<Value, _>(method, builder).await.map_err(|e| e.to_string())
}

/// Polls for a receipt until it exists.
pub async fn wait_receipt(client: &HttpClient, hash: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let receipt = call(client, "eth_getTransactionReceipt", serde_json::json!([hash])).await.expect("eth_getTransactionReceipt");
        if !receipt.is_null() {
            return receipt;
        }
        assert!(Instant::now() < deadline, "no receipt for {hash}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls the node's Engine API with a fresh JWT (`iat` now); the result or the error's text.
pub async fn engine_try(node: &NodeProcess, secret: &alloy_rpc_types_engine::JwtSecret, method: &str, params: Value) -> Result<Value, String> {
    let iat = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs();
    let token = secret.encode(&alloy_rpc_types_engine::Claims { iat, exp: None }).map_err(|e| e.to_string())?;
    let mut headers = jsonrpsee::http_client::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").parse().map_err(|e| format!("{e}"))?);
    let client = HttpClientBuilder::default().set_headers(headers).build(format!("http://{}", node.engine)).map_err(|e| e.to_string())?;
    call(&client, method, params).await
}

/// [`engine_try`] that panics on an error.
pub async fn engine_call(node: &NodeProcess, secret: &alloy_rpc_types_engine::JwtSecret, method: &str, params: Value) -> Value {
    engine_try(node, secret, method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
}
