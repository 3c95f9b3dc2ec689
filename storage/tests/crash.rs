//! Crash test: a child process commits blocks into a datadir as fast as it can and is killed with
//! SIGKILL at a random moment; the parent reopens the datadir each time and checks that the head
//! is consistent (its header's state root equals the root recomputed from scratch), that every
//! block up to the head is there with the root a reference execution gives, that the head never
//! goes back, and that the state reads exactly like the reference. Then the next child resumes.
//!
//! The same binary is the child when `PSEQ_CRASH_CHILD` names a datadir (hence `harness = false`).
//! Iterations: `PSEQ_CRASH_ITERATIONS` (default 30).

mod common;

use alloy_primitives::{Address, U256};
use common::*;
use pseq_executor::{
    revm::{database::DatabaseRef, primitives::KECCAK_EMPTY},
    AccountDiff, AccountState, InMemoryState, StateDiff,
};
use pseq_storage::{Storage, StorageError, StorageOptions};
use std::{path::Path, process::Command, time::Duration};

const SEED: u64 = 0x5eed;

/// Block `n`'s changes: random changes over the shared addresses plus many fresh accounts with
/// storage, so that a commit is a large batch and kills land inside writes too.
fn block_diff(n: u64, state: &impl DatabaseRef<Error = pseq_executor::StateError>) -> StateDiff {
    let mut rng = Rng((SEED ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
    let mut diff = random_diff(&mut rng, state);
    for i in 0..1_500u64 {
        let mut bytes = [0u8; 20];
        bytes[0] = 0xee;
        bytes[4..12].copy_from_slice(&n.to_be_bytes());
        bytes[12..].copy_from_slice(&i.to_be_bytes());
        let info = AccountState { balance: U256::from(rng.next()), nonce: 0, code_hash: KECCAK_EMPTY, code: None };
        let storage = [(U256::from(rng.below(4)), U256::from(rng.next() | 1))].into_iter().collect();
        diff.accounts.insert(Address::from(bytes), AccountDiff { info: Some(info), storage_cleared: false, storage });
    }
    diff
}

fn open_or_init(dir: &Path) -> Storage {
    let (alloc, _, header) = genesis(&mut Rng(SEED));
    Storage::open_or_init(dir, &StorageOptions::default(), 1337, &header, &alloc).expect("open datadir")
}

/// The child: commit blocks until killed.
fn child(dir: &Path) {
    let storage = open_or_init(dir);
    loop {
        let next = storage.head().0 + 1;
        let diff = block_diff(next, &storage.latest());
        commit(&storage, &diff, next);
    }
}

fn main() {
    if let Some(dir) = std::env::var_os("PSEQ_CRASH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let iterations: u64 = std::env::var("PSEQ_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().expect("temporary datadir");
    let exe = std::env::current_exe().expect("own executable");
    let (_, mut reference, _) = genesis(&mut Rng(SEED));
    let mut reference_head = 0u64;
    let mut rng = Rng(0xdead_beef);
    let mut kills_with_progress = 0;
    for iteration in 0..iterations {
        let mut child = Command::new(&exe).env("PSEQ_CRASH_CHILD", dir.path()).spawn().expect("spawn child");
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");

        let storage = match Storage::open(dir.path(), &StorageOptions::default()) {
            Ok(storage) => storage,
            // Killed before the genesis batch landed: nothing may be there yet.
            Err(StorageError::NotInitialised(_)) if reference_head == 0 => continue,
            Err(e) => panic!("iteration {iteration}: reopening failed: {e}"),
        };
        let (head, _) = storage.head();
        assert!(head >= reference_head, "iteration {iteration}: head went back from {reference_head} to {head}");
        if head > reference_head {
            kills_with_progress += 1;
        }
        // Replay the reference to the new head; every block must be there with its root.
        for n in reference_head + 1..=head {
            let diff = block_diff(n, &reference);
            reference.apply_diff(&diff);
            let header = storage.header_by_number(n).expect("read header").unwrap_or_else(|| panic!("iteration {iteration}: block {n} lost"));
            assert_eq!(header.state_root, reference.state_root(), "iteration {iteration}: block {n} root");
        }
        reference_head = head;
        assert!(storage.header_by_number(head + 1).expect("read").is_none(), "iteration {iteration}: data beyond the head");
        let report = storage.verify(&mut |_| {}).expect("verify");
        assert!(report.ok(), "iteration {iteration}: {report:?}");
        assert_same_reads(&storage.latest(), &reference, &format!("iteration {iteration} at head {head}"));
        eprintln!("crash iteration {iteration}: head {head}, root verified");
    }
    let _: &InMemoryState = &reference;
    assert!(reference_head > 0 && kills_with_progress >= iterations / 3, "children made too little progress ({kills_with_progress} of {iterations} kills after new blocks)");
    println!("crash test: {iterations} kills, head {reference_head}, every reopen consistent");
    // The line libtest prints, so the CI summary counts this test too.
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
