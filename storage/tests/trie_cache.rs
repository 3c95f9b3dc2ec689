//! The state root's cache of the trie's lowest branches on RocksDB: with the cache warmed from
//! the datadir, filled by the blocks themselves, or turned off, a state large enough to have
//! them (thousands of accounts, contracts with hundreds of slots) gets the reference's
//! from-scratch root after every block of updates, insertions, deletions and storage wipes.

mod common;

use alloy_primitives::{Address, U256};
use common::{commit, Rng};
use pseq_executor::{revm::primitives::KECCAK_EMPTY, AccountDiff, AccountState, InMemoryState, StateDiff};
use pseq_storage::{Storage, StorageOptions};
use std::collections::BTreeMap;

const ACCOUNTS: u64 = 6_000;
const CONTRACTS: u64 = 20;
const SLOTS: u64 = 300;

fn account(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&i.to_be_bytes());
    bytes[19] = 0xaa;
    Address::from(bytes)
}

fn contract(i: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&i.to_be_bytes());
    bytes[19] = 0xcc;
    Address::from(bytes)
}

fn info(balance: u64, nonce: u64) -> Option<AccountState> {
    Some(AccountState { balance: U256::from(balance), nonce, code_hash: KECCAK_EMPTY, code: None })
}

/// A block of changes: balance updates, new accounts, deleted accounts, slot updates and
/// deletions, new slots, and now and then a wiped storage.
fn block(rng: &mut Rng, n: u64) -> StateDiff {
    let mut diff = StateDiff::default();
    for _ in 0..400 {
        let i = rng.below(ACCOUNTS + 200);
        let change = match rng.below(20) {
            0 => AccountDiff { info: None, storage_cleared: true, storage: BTreeMap::new() },
            _ => AccountDiff { info: info(rng.below(1 << 40), n), storage_cleared: false, storage: BTreeMap::new() },
        };
        diff.accounts.insert(account(i), change);
    }
    for _ in 0..6 {
        let c = rng.below(CONTRACTS);
        let mut storage = BTreeMap::new();
        for _ in 0..40 {
            let value = if rng.below(5) == 0 { U256::ZERO } else { U256::from(rng.next()) };
            storage.insert(U256::from(rng.below(SLOTS + 30)), value);
        }
        let wiped = rng.below(30) == 0;
        diff.accounts.insert(contract(c), AccountDiff { info: info(0, 1), storage_cleared: wiped, storage });
    }
    diff
}

/// A block that only changes values: balances of existing accounts and existing slots of six
/// contracts to new non-zero values.
fn in_place(rng: &mut Rng, n: u64) -> StateDiff {
    let mut diff = StateDiff::default();
    for _ in 0..400 {
        diff.accounts.insert(account(rng.below(ACCOUNTS)), AccountDiff { info: info(1 + rng.below(1 << 40), n), storage_cleared: false, storage: BTreeMap::new() });
    }
    for _ in 0..6 {
        let storage = (0..40).map(|_| (U256::from(rng.below(SLOTS)), U256::from(1 + rng.below(1 << 40)))).collect();
        diff.accounts.insert(contract(rng.below(CONTRACTS)), AccountDiff { info: info(0, 1), storage_cleared: false, storage });
    }
    diff
}

#[test]
fn roots_with_the_trie_cache_warm_filled_or_off_equal_the_reference() {
    let mut rng = Rng(0x5eed_cafe);
    let (alloc, genesis_state, genesis_header) = common::genesis(&mut rng);
    let open = |dir: &std::path::Path, trie_cache_bytes: usize| {
        Storage::open_or_init(dir, &StorageOptions { trie_cache_bytes, ..Default::default() }, 1337, &genesis_header, &alloc).unwrap()
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let filled = open(dirs[0].path(), 64 << 20);
    let off = open(dirs[1].path(), 0);

    // The initial state, in a few large blocks.
    let mut state: InMemoryState = genesis_state;
    let mut initial = StateDiff::default();
    for i in 0..ACCOUNTS {
        initial.accounts.insert(account(i), AccountDiff { info: info(1 + i, 1), storage_cleared: false, storage: BTreeMap::new() });
    }
    for c in 0..CONTRACTS {
        let storage = (0..SLOTS).map(|s| (U256::from(s), U256::from(1 + s * 7 + c))).collect();
        initial.accounts.insert(contract(c), AccountDiff { info: info(0, 1), storage_cleared: false, storage });
    }
    state.apply_diff(&initial);
    for storage in [&filled, &off] {
        commit(storage, &initial, 1);
    }
    // A third datadir with the same state, reopened so that its cache starts empty, then warmed.
    let warm_dir = dirs[2].path();
    commit(&open(warm_dir, 64 << 20), &initial, 1);
    let warm = Storage::open(warm_dir, &StorageOptions { trie_cache_bytes: 64 << 20, ..Default::default() }).unwrap();
    assert_eq!(warm.trie_cache_stats().0, 0, "a reopened datadir starts with an empty cache");
    let report = warm.warm_trie_cache().unwrap();
    assert_eq!(report.mismatches, 0);
    assert!(report.branches > 500 && !report.full, "{report:?}");

    for n in 2..=12 {
        let diff = if n == 2 { in_place(&mut rng, n) } else { block(&mut rng, n) };
        state.apply_diff(&diff);
        let expected = state.state_root();
        let hits_before = [warm.trie_cache_stats().2, filled.trie_cache_stats().2];
        let (_, _, warm_hits_before, warm_misses_before) = warm.trie_cache_stats();
        let by_path_before = warm.trie_cache_path_lookups();
        for (name, storage) in [("warm", &warm), ("filled", &filled), ("off", &off)] {
            commit(storage, &diff, n);
            let root = storage.header_by_number(n).unwrap().unwrap().state_root;
            assert_eq!(root, expected, "block {n}, cache {name}");
        }
        if n == 2 {
            // Values changed in place (nothing inserted or deleted): the warmed cache is walked
            // from branch to child by slot, and its map searched only for the account trie's root
            // and root children, for each contract's storage root, and for what it misses (a
            // branch it does not follow, then walked from its stored node).
            let (_, _, warm_hits, warm_misses) = warm.trie_cache_stats();
            let (hits, misses) = (warm_hits - warm_hits_before, warm_misses - warm_misses_before);
            let by_path = warm.trie_cache_path_lookups() - by_path_before;
            assert!(by_path <= 1 + 16 + 6 + misses && hits > 20 * by_path, "block {n}: {hits} hits, {misses} misses, {by_path} by path");
        }
        if n == 2 {
            // The warm-up covers every lowest branch; the blocks before filled most of them.
            let warm_hits = warm.trie_cache_stats().2 - hits_before[0];
            let filled_hits = filled.trie_cache_stats().2 - hits_before[1];
            assert!(warm_hits > 200 && warm_hits >= filled_hits, "first block's hits: warm {warm_hits}, filled {filled_hits}");
        }
    }
    let fingerprint = off.trie_fingerprint().unwrap();
    for (name, storage) in [("warm", &warm), ("filled", &filled), ("off", &off)] {
        assert!(storage.verify(&mut |_| {}).unwrap().ok(), "{name}");
        assert_eq!(storage.trie_fingerprint().unwrap(), fingerprint, "cache {name}: stored trie nodes differ from those written without the cache");
    }
    let (_, _, warm_hits, _) = warm.trie_cache_stats();
    let (_, _, filled_hits, _) = filled.trie_cache_stats();
    let (branches, bytes, off_hits, _) = off.trie_cache_stats();
    assert!(warm_hits > 1_000 && filled_hits > 1_000, "hits: warm {warm_hits}, filled {filled_hits}");
    assert_eq!((branches, bytes, off_hits), (0, 0, 0), "a cache of 0 bytes holds nothing");
}

/// A block that empties one root child of the account trie, or leaves it one account, while
/// hundreds of other accounts change: the root computation built by root child finds that child
/// no longer a stored branch and builds the account trie whole. The roots equal the reference's
/// and the stored nodes a from-scratch check's, with the cache warm and off.
#[test]
fn a_root_child_emptied_or_collapsed_in_a_large_block_gives_the_reference_root() {
    let mut rng = Rng(0xc011_a95e);
    let (alloc, genesis_state, genesis_header) = common::genesis(&mut rng);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let storages: Vec<Storage> = [64 << 20, 0]
        .iter()
        .zip(&dirs)
        .map(|(bytes, dir)| Storage::open_or_init(dir.path(), &StorageOptions { trie_cache_bytes: *bytes, ..Default::default() }, 1337, &genesis_header, &alloc).unwrap())
        .collect();
    let mut state: InMemoryState = genesis_state;
    let mut initial = StateDiff::default();
    for i in 0..3_000 {
        initial.accounts.insert(account(i), AccountDiff { info: info(1 + i, 1), storage_cleared: false, storage: BTreeMap::new() });
    }
    state.apply_diff(&initial);
    for storage in &storages {
        commit(storage, &initial, 1);
        storage.warm_trie_cache().unwrap();
    }
    // The accounts under root child `nibble` of the account trie.
    let under = |nibble: u8| (0..3_000).filter(move |i| alloy_primitives::keccak256(account(*i))[0] >> 4 == nibble).collect::<Vec<_>>();
    for (n, (nibble, keep)) in [(0u8, 0usize), (5, 1)].into_iter().enumerate() {
        let block = n as u64 + 2;
        let mut diff = StateDiff::default();
        let doomed = under(nibble);
        assert!(doomed.len() > 100, "{} accounts under root child {nibble}", doomed.len());
        for i in doomed.into_iter().skip(keep) {
            diff.accounts.insert(account(i), AccountDiff { info: None, storage_cleared: true, storage: BTreeMap::new() });
        }
        // (Not under root child 0 either, emptied by the first block: a new child of the root
        // is built whole anyway.)
        for i in (0..3_000).filter(|i| ![0, nibble].contains(&(alloy_primitives::keccak256(account(*i))[0] >> 4))).step_by(7) {
            diff.accounts.insert(account(i), AccountDiff { info: info(7 + i, block), storage_cleared: false, storage: BTreeMap::new() });
        }
        assert!(diff.accounts.len() > 500);
        state.apply_diff(&diff);
        let expected = state.state_root();
        for (storage, name) in storages.iter().zip(["warm", "off"]) {
            commit(storage, &diff, block);
            assert_eq!(storage.header_by_number(block).unwrap().unwrap().state_root, expected, "block {block}, cache {name}");
            assert!(storage.verify(&mut |_| {}).unwrap().ok(), "block {block}, cache {name}");
        }
        assert_eq!(storages[0].trie_fingerprint().unwrap(), storages[1].trie_fingerprint().unwrap(), "block {block}");
    }
}
