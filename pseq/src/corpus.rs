//! Locating the external test corpora (`../shared/corpora/*.tar.zst` beside the project) and
//! unpacking them into `target/corpora/` on first use.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The workspace root (the folder holding the top-level `Cargo.toml`): the parent of the crate's
/// folder as cargo names it when it runs us (`cargo test`, `cargo run`), else as it was at build
/// time. (A build folder shared by two checkouts may hold a binary compiled in the other one.)
pub fn workspace_root() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    crate_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Where the packed corpora live: `$PSEQ_CORPORA`, else `../shared/corpora` beside the workspace.
pub fn corpora_dir() -> PathBuf {
    std::env::var_os("PSEQ_CORPORA").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("../shared/corpora"))
}

/// Unpacks `<name>.tar.zst` into `target/corpora/<name>/` unless already there, and returns that
/// folder. Safe under concurrent tests: each unpacks into its own staging folder and renames it
/// into place; a `.complete` marker tells a finished unpack from an interrupted one.
pub fn unpacked(name: &str) -> Result<PathBuf, String> {
    let target = workspace_root().join("target/corpora");
    let destination = target.join(name);
    if destination.join(".complete").exists() {
        return Ok(destination);
    }
    let archive = corpora_dir().join(format!("{name}.tar.zst"));
    let file = fs::File::open(&archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let staging = target.join(format!(".unpack-{name}-{}-{:?}", std::process::id(), std::thread::current().id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let decoder = zstd::Decoder::new(file).map_err(|e| format!("{}: {e}", archive.display()))?;
    tar::Archive::new(decoder).unpack(&staging).map_err(|e| format!("{}: {e}", archive.display()))?;
    fs::write(staging.join(".complete"), b"").map_err(|e| e.to_string())?;
    if !destination.join(".complete").exists() {
        let _ = fs::remove_dir_all(&destination);
        if fs::rename(&staging, &destination).is_ok() {
            return Ok(destination);
        }
    }
    let _ = fs::remove_dir_all(&staging);
    if destination.join(".complete").exists() {
        Ok(destination)
    } else {
        Err(format!("could not unpack {} into {}", archive.display(), destination.display()))
    }
}

/// The EEST state tests folder (`.../state_tests`).
pub fn state_tests() -> Result<PathBuf, String> {
    Ok(unpacked("eest-v5.4.0-develop-state_tests")?.join("eest-v5.4.0-develop/state_tests"))
}

/// The EEST blockchain tests folder (`.../blockchain_tests`).
pub fn blockchain_tests() -> Result<PathBuf, String> {
    Ok(unpacked("eest-v5.4.0-develop-blockchain_tests")?.join("eest-v5.4.0-develop/blockchain_tests"))
}

/// The 67 mainnet blocks (`.../mainnet-blocks`).
pub fn mainnet_blocks() -> Result<PathBuf, String> {
    Ok(unpacked("mainnet-blocks")?.join("mainnet-blocks"))
}

/// The EEST benchmark fixtures (`.../benchmark`, holding `blockchain_tests` and
/// `blockchain_tests_engine`).
pub fn eest_benchmark() -> Result<PathBuf, String> {
    Ok(unpacked("eest-benchmark-v0.0.7")?.join("eest-benchmark-v0.0.7/benchmark"))
}

/// The execution-apis JSON-RPC conformance suite (`.../execution-apis-rpc-compat`, holding
/// `osaka-*/tests` and `prague-*/tests`, each with `genesis.json` and `chain.rlp`).
pub fn rpc_compat() -> Result<PathBuf, String> {
    Ok(unpacked("execution-apis-rpc-compat")?.join("execution-apis-rpc-compat"))
}
