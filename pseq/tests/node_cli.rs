//! `pseq node` refuses bad settings with a one-line error naming the problem and exit code 1,
//! before writing anything: an invalid config value, an unknown TOML key, a port in use, an
//! unreadable genesis, a datadir of another chain.

use std::{net::TcpListener, path::Path, process::Command};

fn node(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pseq")).arg("node").args(args).env("RUST_LOG", "error").output().expect("run pseq");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

fn assert_refused(args: &[&str], needle: &str, datadir: &Path) {
    let (code, stderr) = node(args);
    assert_eq!(code, 1, "{args:?}: {stderr}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{args:?}: {stderr}");
    assert!(error_lines[0].contains(needle), "{args:?}: expected {needle:?} in {stderr}");
    assert!(!datadir.exists(), "{args:?} wrote {}", datadir.display());
}

#[test]
fn bad_settings_exit_1_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("data");
    let d = datadir.to_str().unwrap();
    assert_refused(&["--dev", "--datadir", d, "--block-time", "fast"], "invalid block time", &datadir);
    assert_refused(&["--dev", "--datadir", d, "--gas-limit", "100"], "--gas-limit", &datadir);
    assert_refused(&["--datadir", d], "--dev or --genesis", &datadir);

    let config = dir.path().join("pseq.toml");
    std::fs::write(&config, "dev = true\nhttp-prot = 1\n").unwrap();
    assert_refused(&["--config", config.to_str().unwrap(), "--datadir", d], "http-prot", &datadir);

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    assert_refused(&["--dev", "--datadir", d, "--http.port", &port, "--metrics.port", "0", "--authrpc.port", "0"], "cannot listen", &datadir);
    assert_refused(&["--dev", "--datadir", d, "--http.port", "0", "--metrics.port", "0", "--authrpc.port", &port], "Engine API", &datadir);

    let missing = dir.path().join("missing.json");
    assert_refused(&["--genesis", missing.to_str().unwrap(), "--datadir", d], "missing.json", &datadir);
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{ not json").unwrap();
    assert_refused(&["--genesis", garbage.to_str().unwrap(), "--datadir", d], "genesis", &datadir);
}

#[test]
fn datadir_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("data");
    let d = datadir.to_str().unwrap();
    // Initialise a dev datadir (chain 31337) through the real code path, then stop at once.
    let storage = pseq_config::dev::dev_chain_spec(31337, 30_000_000).unwrap();
    drop(pseq::chain_import::open_datadir(&datadir, &storage).unwrap());
    let (code, stderr) = node(&["--dev", "--chain-id", "5", "--datadir", d, "--http.port", "0", "--metrics.port", "0", "--authrpc.port", "0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("chain id 31337") && stderr.contains("expected chain id 5"), "{stderr}");
}
