//! Property tests of the RocksDB state against the in-memory reference state: random blocks of
//! account and storage changes (creations, updates, deletions, storage wipes) committed through
//! the incremental trie must give the from-scratch root of the reference after every block;
//! historical views must read what the reference held then; unwinding to any block and
//! importing other blocks must end exactly where a fresh import of the same blocks ends.

mod common;

use alloy_consensus::{Block, BlockBody, Header};
use alloy_primitives::{keccak256, B256, U256};
use alloy_trie::{proof::verify_proof, Nibbles, TrieAccount};
use common::*;
use pseq_executor::{revm::database::DatabaseRef, InMemoryState};
use pseq_storage::{Storage, StorageOptions};

/// Every account's EIP-1186 proof at block `k` (with slots that random blocks write) verifies
/// with alloy-trie's verifier against `k`'s state root and carries the reference's values then;
/// so does every storage proof against the proven storage root.
fn assert_proofs(storage: &Storage, k: u64, reference: &InMemoryState, context: &str) {
    let root = storage.header_by_number(k).unwrap().unwrap().state_root;
    let slots: Vec<U256> = (0..SLOTS).step_by(5).flat_map(|s| [U256::from(s), U256::from(s) << 8]).collect();
    for a in 0..ADDRESSES {
        let address = address(a);
        let proof = storage.proof_at(k, address, &slots).unwrap();
        let key = Nibbles::unpack(keccak256(address));
        let leaf = reference.basic_ref(address).unwrap().map(|info| {
            assert_eq!((proof.balance, proof.nonce, proof.code_hash), (info.balance, info.nonce, info.code_hash), "{context}: {address}");
            alloy_rlp::encode(TrieAccount { nonce: info.nonce, balance: info.balance, storage_root: proof.storage_root, code_hash: info.code_hash })
        });
        verify_proof(root, key, leaf, &proof.account_proof).unwrap_or_else(|e| panic!("{context}: account {address}: {e}"));
        for (slot, (value, nodes)) in slots.iter().zip(&proof.storage_proofs) {
            assert_eq!(*value, reference.storage_ref(address, *slot).unwrap(), "{context}: {address} slot {slot}");
            let leaf = (!value.is_zero()).then(|| alloy_rlp::encode(value));
            verify_proof(proof.storage_root, Nibbles::unpack(keccak256(B256::from(*slot))), leaf, nodes).unwrap_or_else(|e| panic!("{context}: {address} slot {slot}: {e}"));
        }
    }
}

#[test]
fn incremental_roots_history_and_unwind_match_the_reference() {
    for seed in 1..=6u64 {
        let mut rng = Rng(seed * 0x2545_f491_4f6c_dd1d);
        let dir = tempfile::tempdir().unwrap();
        let (alloc, genesis_state, genesis_header) = genesis(&mut rng);
        let storage = Storage::open_or_init(dir.path(), &StorageOptions::default(), 1337, &genesis_header, &alloc).unwrap();
        assert_eq!(storage.head().0, 0);

        // Forward: N blocks, root checked after each against the reference.
        let blocks = 25;
        let mut snapshots = vec![genesis_state.clone()];
        let mut diffs = Vec::new();
        let mut state = genesis_state.clone();
        for n in 1..=blocks {
            let diff = random_diff(&mut rng, &state);
            state.apply_diff(&diff);
            commit(&storage, &diff, n);
            let header = storage.header_by_number(n).unwrap().unwrap();
            assert_eq!(header.state_root, state.state_root(), "seed {seed} block {n}");
            snapshots.push(state.clone());
            diffs.push(diff);
        }
        let report = storage.verify(&mut |_| {}).unwrap();
        assert!(report.ok(), "seed {seed}: {report:?}");

        // History: every block's view reads what the reference held then, and every account's
        // proof at that block verifies against its state root.
        for k in [0, 1, blocks / 2, blocks - 1, blocks] {
            assert_same_reads(&storage.state_at(k).unwrap(), &snapshots[k as usize], &format!("seed {seed} history at {k}"));
            assert_proofs(&storage, k, &snapshots[k as usize], &format!("seed {seed} proofs at {k}"));
        }
        assert_same_reads(&storage.latest(), &state, &format!("seed {seed} head"));

        // Unwind to k, then import different blocks; compare with a fresh import of the same.
        let k = 1 + rng.below(blocks - 1);
        storage.unwind_to(k).unwrap();
        assert_eq!(storage.head().0, k);
        assert!(storage.header_by_number(k + 1).unwrap().is_none());
        assert_same_reads(&storage.latest(), &snapshots[k as usize], &format!("seed {seed} after unwind to {k}"));
        let mut state = snapshots[k as usize].clone();
        let mut new_diffs = diffs[..k as usize].to_vec();
        for n in k + 1..=k + 10 {
            let diff = random_diff(&mut rng, &state);
            state.apply_diff(&diff);
            commit(&storage, &diff, 1000 + n);
            assert_eq!(storage.header_by_number(n).unwrap().unwrap().state_root, state.state_root(), "seed {seed} re-import block {n}");
            new_diffs.push(diff);
        }
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Storage::open_or_init(fresh_dir.path(), &StorageOptions::default(), 1337, &genesis_header, &alloc).unwrap();
        for (i, diff) in new_diffs.iter().enumerate() {
            let n = i as u64 + 1;
            commit(&fresh, diff, if n <= k { n } else { 1000 + n });
        }
        assert_eq!(fresh.head(), storage.head(), "seed {seed}: same blocks, same head hash");
        assert_same_reads(&storage.latest(), &fresh.latest(), &format!("seed {seed} unwound vs fresh"));
        assert!(storage.verify(&mut |_| {}).unwrap().ok());

        // A reopened datadir has the same head and reads.
        let head = storage.head();
        drop(storage);
        let reopened = Storage::open(dir.path(), &StorageOptions::default()).unwrap();
        assert_eq!(reopened.head(), head);
        assert_same_reads(&reopened.latest(), &state, &format!("seed {seed} reopened"));
    }
}

#[test]
fn a_datadir_of_another_chain_or_schema_is_refused() {
    let mut rng = Rng(99);
    let dir = tempfile::tempdir().unwrap();
    let (alloc, _, header) = genesis(&mut rng);
    drop(Storage::open_or_init(dir.path(), &StorageOptions::default(), 1, &header, &alloc).unwrap());
    let wrong_id = Storage::open_or_init(dir.path(), &StorageOptions::default(), 2, &header, &alloc).unwrap_err();
    assert!(matches!(wrong_id, pseq_storage::StorageError::WrongChain(_)), "{wrong_id}");
    let other = Header { timestamp: 5, ..header.clone() };
    let wrong_genesis = Storage::open_or_init(dir.path(), &StorageOptions::default(), 1, &other, &alloc).unwrap_err();
    assert!(matches!(wrong_genesis, pseq_storage::StorageError::WrongChain(_)), "{wrong_genesis}");

    // Another schema version: refused with both numbers in the error.
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), pseq_storage::tables::ALL).unwrap();
        let meta = db.cf_handle(pseq_storage::tables::META).unwrap();
        db.put_cf(meta, pseq_storage::tables::META_SCHEMA, 999u32.to_be_bytes()).unwrap();
    }
    let err = Storage::open(dir.path(), &StorageOptions::default()).unwrap_err();
    assert!(matches!(err, pseq_storage::StorageError::WrongSchema { found: 999, expected: pseq_storage::SCHEMA_VERSION }), "{err}");
    assert!(err.to_string().contains("schema version 999"), "{err}");

    // A corrupt head pointer: an error, not a panic.
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), pseq_storage::tables::ALL).unwrap();
        let meta = db.cf_handle(pseq_storage::tables::META).unwrap();
        db.put_cf(meta, pseq_storage::tables::META_SCHEMA, pseq_storage::SCHEMA_VERSION.to_be_bytes()).unwrap();
        db.put_cf(meta, pseq_storage::tables::META_HEAD, [1u8, 2, 3]).unwrap();
    }
    let err = Storage::open(dir.path(), &StorageOptions::default()).unwrap_err();
    assert!(matches!(err, pseq_storage::StorageError::Corrupt(_)), "{err}");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Storage::open(empty.path(), &StorageOptions::default()).unwrap_err(), pseq_storage::StorageError::NotInitialised(_)));

    let bad_root = Header { state_root: B256::repeat_byte(1), ..header };
    let fresh = tempfile::tempdir().unwrap();
    let err = Storage::open_or_init(fresh.path(), &StorageOptions::default(), 1, &bad_root, &alloc).unwrap_err();
    assert!(matches!(err, pseq_storage::StorageError::StateRootMismatch { .. }), "{err}");
}

#[test]
fn a_block_with_a_wrong_root_or_parent_writes_nothing() {
    let mut rng = Rng(7);
    let dir = tempfile::tempdir().unwrap();
    let (alloc, state, header) = genesis(&mut rng);
    let storage = Storage::open_or_init(dir.path(), &StorageOptions::default(), 1, &header, &alloc).unwrap();
    let diff = random_diff(&mut rng, &state);
    let (number, parent_hash) = storage.head();
    let update = storage.prepare_state(&diff).unwrap();
    let wrong = Header { number: number + 1, parent_hash, state_root: B256::repeat_byte(7), ..Default::default() };
    let err = storage.commit_block(&Block { header: wrong, body: BlockBody::default() }, &[], update).unwrap_err();
    assert!(matches!(err, pseq_storage::StorageError::StateRootMismatch { .. }), "{err}");
    let update = storage.prepare_state(&diff).unwrap();
    let orphan = Header { number: number + 1, parent_hash: B256::repeat_byte(3), state_root: update.state_root, ..Default::default() };
    let err = storage.commit_block(&Block { header: orphan, body: BlockBody::default() }, &[], update).unwrap_err();
    assert!(matches!(err, pseq_storage::StorageError::NotOnHead { .. }), "{err}");
    assert_eq!(storage.head().0, 0);
    assert_same_reads(&storage.latest(), &state, "after refused commits");
    assert!(storage.verify(&mut |_| {}).unwrap().ok());
}

/// State-root work prepared ahead (continuous building) changes nothing: accounts prepared with
/// their final change are reused, accounts prepared with an earlier change and accounts the block
/// did not end up changing are ignored, and work prepared on another head (for a block that
/// repeats the previous block's changes) is dropped. Each block
/// must commit to the reference's root, and the datadir must read like one built without it.
#[test]
fn work_prepared_ahead_gives_the_same_roots_and_writes() {
    for seed in 1..=4u64 {
        let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
        let (alloc, genesis_state, genesis_header) = genesis(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open_or_init(dir.path(), &StorageOptions::default(), 1337, &genesis_header, &alloc).unwrap();
        let plain_dir = tempfile::tempdir().unwrap();
        let plain = Storage::open_or_init(plain_dir.path(), &StorageOptions::default(), 1337, &genesis_header, &alloc).unwrap();
        let mut state = genesis_state;
        // Work prepared on the previous head, for a block that repeats the previous block's diff.
        let mut stale: Option<(pseq_executor::StateDiff, pseq_storage::PreparedAccounts)> = None;
        for n in 1..=20u64 {
            let (diff, prepared) = match stale.take() {
                Some((diff, prepared)) => (diff, prepared),
                None => {
                    let diff = random_diff(&mut rng, &state);
                    let earlier = random_diff(&mut rng, &state);
                    let mut ahead: Vec<_> = earlier.accounts.into_iter().collect();
                    ahead.extend(diff.accounts.iter().filter(|_| rng.below(3) != 0).map(|(a, d)| (*a, d.clone())));
                    let mut prepared = pseq_storage::PreparedAccounts::default();
                    storage.prepare_accounts_ahead(&mut prepared, ahead).unwrap();
                    (diff, prepared)
                }
            };
            if n % 3 == 0 {
                let mut next = pseq_storage::PreparedAccounts::default();
                storage.prepare_accounts_ahead(&mut next, diff.accounts.iter().map(|(a, d)| (*a, d.clone())).collect()).unwrap();
                stale = Some((diff.clone(), next));
            }
            let (number, parent_hash) = storage.head();
            let update = storage.prepare_state_reusing(&diff, prepared).unwrap();
            let reference = plain.prepare_state(&diff).unwrap();
            assert_eq!(update.state_root, reference.state_root, "seed {seed} block {n}");
            assert_eq!((update.len(), update.trie_nodes_changed), (reference.len(), reference.trie_nodes_changed), "seed {seed} block {n}");
            state.apply_diff(&diff);
            assert_eq!(update.state_root, state.state_root(), "seed {seed} block {n}");
            let header = Header { number: number + 1, parent_hash, state_root: update.state_root, timestamp: n, gas_limit: 30_000_000, ..Default::default() };
            storage.commit_block(&Block { header: header.clone(), body: BlockBody::default() }, &[], update).unwrap();
            plain.commit_block(&Block { header, body: BlockBody::default() }, &[], reference).unwrap();
        }
        for k in 0..20 {
            assert_same_reads(&storage.state_at(k).unwrap(), &plain.state_at(k).unwrap(), &format!("seed {seed} history at {k}"));
        }
        assert_same_reads(&storage.latest(), &plain.latest(), &format!("seed {seed}"));
        assert!(storage.verify(&mut |_| {}).unwrap().ok());
    }
}
