//! `pseq import` into RocksDB datadirs, on the execution-apis chains (pre-merge proof-of-work
//! blocks, the merge, then Shanghai, Cancun, Prague and Osaka by timestamp), and what bad input
//! does to it: truncated or corrupt chain files, a block with a wrong state root, a datadir of
//! another chain, a full disk and a read-only disk. Every failure must be a clear error, leave
//! the datadir at a consistent head (`db verify`), and a later import must finish the job.

use alloy_consensus::{Block, Header, TxEnvelope};
use alloy_primitives::B256;
use alloy_rlp::{Decodable, Encodable};
use pseq::{chain_import, corpus, import::split_rlp_blocks};
use pseq_executor::ExecutionOptions;
use pseq_storage::{Storage, StorageOptions};
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn chains() -> Vec<PathBuf> {
    let root = corpus::rpc_compat().expect("execution-apis corpus");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("corpus folder")
        .filter_map(Result::ok)
        .map(|e| e.path().join("tests"))
        .filter(|p| p.join("chain.rlp").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "expected the osaka and prague chains in {}", root.display());
    dirs
}

/// The head the suite's `headfcu.json` names.
fn expected_head(chain: &Path) -> B256 {
    let text = std::fs::read_to_string(chain.join("headfcu.json")).expect("headfcu.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("headfcu.json is JSON");
    value["params"][0]["headBlockHash"].as_str().expect("headBlockHash").parse().expect("a hash")
}

fn exec() -> ExecutionOptions {
    ExecutionOptions::force_parallel(2)
}

fn head_and_verify(datadir: &Path) -> (u64, B256) {
    let storage = Storage::open(datadir, &StorageOptions::default()).expect("reopen datadir");
    let report = storage.verify(&mut |_| {}).expect("verify");
    assert!(report.ok(), "datadir inconsistent: {report:?}");
    storage.head()
}

#[test]
fn execution_apis_chains_import_with_every_root_matching() {
    for chain in chains() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = split_rlp_blocks(&std::fs::read(chain.join("chain.rlp")).unwrap()).unwrap().len() as u64;
        let summary = chain_import::import(dir.path(), &chain.join("genesis.json"), &chain.join("chain.rlp"), &exec()).expect("import");
        assert_eq!(summary.imported, blocks, "{}", chain.display());
        let (head, hash) = head_and_verify(dir.path());
        assert_eq!(head, blocks);
        assert_eq!(hash, expected_head(&chain), "{}: head hash", chain.display());
        // Importing again finds every block already there.
        let again = chain_import::import(dir.path(), &chain.join("genesis.json"), &chain.join("chain.rlp"), &exec()).expect("re-import");
        assert_eq!((again.imported, again.already_present), (0, blocks));
        // Unwinding and importing again ends at the same head.
        Storage::open(dir.path(), &StorageOptions::default()).unwrap().unwind_to(blocks / 2).unwrap();
        assert_eq!(head_and_verify(dir.path()).0, blocks / 2);
        let resumed = chain_import::import(dir.path(), &chain.join("genesis.json"), &chain.join("chain.rlp"), &exec()).expect("resume");
        assert_eq!(resumed.imported, blocks - blocks / 2);
        assert_eq!(head_and_verify(dir.path()), (blocks, expected_head(&chain)));
    }
}

#[test]
fn bad_chain_files_give_clear_errors_and_keep_the_datadir_consistent() {
    let chain = &chains()[0];
    let genesis = chain.join("genesis.json");
    let data = std::fs::read(chain.join("chain.rlp")).unwrap();
    let blocks = split_rlp_blocks(&data).unwrap();
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = work.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };

    // Truncated: refused before anything is imported.
    let dir = tempfile::tempdir().unwrap();
    let truncated = write("truncated.rlp", &data[..data.len() - 100]);
    let err = chain_import::import(dir.path(), &genesis, &truncated, &exec()).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(head_and_verify(dir.path()).0, 0);

    // A corrupt byte in the last transaction's signature of a block past the tenth: blocks
    // before it are committed, the error names it. (A flipped proof-of-work nonce would not be
    // caught: test chains use fake proof of work, and the seal is not checked.)
    let index = (10..blocks.len())
        .find(|&i| {
            let block = Block::<TxEnvelope, Header>::decode(&mut &blocks[i][..]).unwrap();
            !block.body.transactions.is_empty() && block.body.ommers.is_empty() && block.body.withdrawals.is_none()
        })
        .expect("a block with transactions");
    let offset: usize = blocks[..index].iter().map(|b| b.len()).sum::<usize>() + blocks[index].len() - 5;
    let mut corrupt = data.clone();
    corrupt[offset] ^= 0xff;
    let corrupt = write("corrupt.rlp", &corrupt);
    let dir = tempfile::tempdir().unwrap();
    let err = chain_import::import(dir.path(), &genesis, &corrupt, &exec()).unwrap_err();
    assert!(err.starts_with(&format!("block {}:", index + 1)), "{err}");
    assert_eq!(head_and_verify(dir.path()).0, index as u64);

    // The last block with a wrong state root: rejected, the head stays at its parent.
    let last = blocks.len() - 1;
    let mut block = Block::<TxEnvelope, Header>::decode(&mut &blocks[last][..]).unwrap();
    block.header.state_root = B256::repeat_byte(0x42);
    let mut tampered: Vec<u8> = blocks[..last].concat();
    block.encode(&mut tampered);
    let tampered = write("wrong-root.rlp", &tampered);
    let dir = tempfile::tempdir().unwrap();
    let err = chain_import::import(dir.path(), &genesis, &tampered, &exec()).unwrap_err();
    assert!(err.contains("state root"), "{err}");
    assert_eq!(head_and_verify(dir.path()).0, last as u64);

    // A datadir of the other chain.
    let other = &chains()[1];
    let err = chain_import::import(dir.path(), &other.join("genesis.json"), &other.join("chain.rlp"), &exec()).unwrap_err();
    assert!(err.contains("another chain"), "{err}");
    assert_eq!(head_and_verify(dir.path()).0, last as u64);

    // Not a genesis file, not a chain file.
    let not_genesis = write("not-genesis.json", br#"{"config": 5}"#);
    let err = chain_import::import(dir.path(), &not_genesis, &chain.join("chain.rlp"), &exec()).unwrap_err();
    assert!(err.contains("not a genesis file"), "{err}");
    let err = chain_import::import(dir.path(), &truncated, &chain.join("chain.rlp"), &exec()).unwrap_err();
    assert!(err.contains("cannot read"), "{err}");
    let err = chain_import::import(dir.path(), &genesis, &genesis, &exec()).unwrap_err();
    assert!(err.contains("block 0"), "{err}");
}

/// Mounts a tmpfs of `size` at `path` (needs root, as CI runs).
fn mount_tmpfs(path: &Path, size: &str) -> Result<(), String> {
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status().map_err(|e| e.to_string())?;
    if status.success() { Ok(()) } else { Err(format!("mount exited with {status}")) }
}

fn umount(path: &Path) {
    let _ = Command::new("umount").arg(path).status();
}

#[test]
fn a_full_or_read_only_disk_gives_an_error_and_loses_nothing() {
    let is_root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if !is_root {
        eprintln!("SKIPPED a_full_or_read_only_disk_gives_an_error_and_loses_nothing: mounting a small tmpfs needs root");
        return;
    }
    let chain = &chains()[0];
    let (genesis, rlp) = (chain.join("genesis.json"), chain.join("chain.rlp"));
    let mount = tempfile::tempdir().unwrap();
    mount_tmpfs(mount.path(), "64M").expect("mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            umount(self.0);
        }
    }
    let _unmount = Unmount(mount.path());
    let datadir = mount.path().join("datadir");

    // Initialise, then fill the disk and import: a clear error, no panic.
    let spec = chain_import::read_genesis(&genesis).unwrap();
    drop(chain_import::open_datadir(&datadir, &spec).expect("init datadir"));
    let filler = mount.path().join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    let err = chain_import::import(&datadir, &genesis, &rlp, &exec()).unwrap_err();
    assert!(err.to_lowercase().contains("space") || err.contains("database"), "unclear error on a full disk: {err}");
    eprintln!("full disk: {err}");
    std::fs::remove_file(&filler).unwrap();
    let (head, _) = head_and_verify(&datadir);
    let summary = chain_import::import(&datadir, &genesis, &rlp, &exec()).expect("import after space is freed");
    assert_eq!(summary.already_present, head);
    assert_eq!(head_and_verify(&datadir).1, expected_head(chain));

    // Read-only: opening for writes fails with an error.
    let status = Command::new("mount").args(["-o", "remount,ro"]).arg(mount.path()).status().unwrap();
    assert!(status.success(), "remount read-only");
    let err = chain_import::import(&datadir, &genesis, &rlp, &exec()).unwrap_err();
    assert!(err.contains("datadir"), "unclear error on a read-only disk: {err}");
    eprintln!("read-only disk: {err}");
    let status = Command::new("mount").args(["-o", "remount,rw"]).arg(mount.path()).status().unwrap();
    assert!(status.success(), "remount read-write");
    assert_eq!(head_and_verify(&datadir).1, expected_head(chain));
}
