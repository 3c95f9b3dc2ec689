//! EIP-1186 Merkle proofs (`eth_getProof`) of an account and some of its slots at the head or
//! an earlier block, built with alloy-trie's `HashBuilder` and a proof retainer over every
//! stored leaf (for an earlier block, with the keys changed since put back from the history). The cost
//! grows with the size of the state (every hashed account, and every slot of the account, is
//! visited): right for dev chains and test networks; an incremental proof over the stored branch
//! nodes is future work.

use crate::{
    codec::{decode_value, storage_leaf_rlp, StoredAccount},
    db::{cf, Storage},
    error::{Result, StorageError},
    tables,
    update::ChangeSet,
};
use std::collections::BTreeMap;
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_trie::{proof::ProofRetainer, HashBuilder, Nibbles, EMPTY_ROOT_HASH, KECCAK_EMPTY};

/// An account, its slots, and the proofs of both against the head's state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProof {
    /// Balance (zero for an account that does not exist).
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code hash (`KECCAK_EMPTY` for none).
    pub code_hash: B256,
    /// Storage root (the empty root for none).
    pub storage_root: B256,
    /// Nodes from the state root down to the account's leaf (or to where it would be).
    pub account_proof: Vec<Bytes>,
    /// Per requested slot: its value and the nodes from the storage root down to it.
    pub storage_proofs: Vec<(U256, Vec<Bytes>)>,
}

fn path_nodes(nodes: &alloy_trie::proof::ProofNodes, target: &Nibbles) -> Vec<Bytes> {
    nodes.matching_nodes_sorted(target).into_iter().map(|(_, node)| node).collect()
}

/// Values at an older block of the keys that changed since, from the history (`None`: the
/// account did not exist; a zero slot: not set).
struct Then {
    accounts: BTreeMap<B256, Option<StoredAccount>>,
    slots: BTreeMap<B256, U256>,
}

/// Walks stored leaves (`stored`, ascending keys) merged with older values (`then`, which win
/// where both have a key), calling `emit` for every leaf that exists.
fn merge_leaves<V: Copy>(
    mut stored: rocksdb::DBRawIteratorWithThreadMode<'_, rocksdb::DB>,
    key_of: impl Fn(&[u8]) -> Option<B256>,
    decode: impl Fn(&[u8]) -> Result<Option<V>>,
    then: &BTreeMap<B256, Option<V>>,
    mut emit: impl FnMut(B256, V),
) -> Result<()> {
    let mut older = then.iter().peekable();
    while let Some((key, value)) = stored.item() {
        let Some(key) = key_of(key) else { break };
        while let Some((k, v)) = older.next_if(|(k, _)| **k < key) {
            if let Some(v) = v {
                emit(*k, *v);
            }
        }
        match older.next_if(|(k, _)| **k == key) {
            Some((_, Some(v))) => emit(key, *v),
            Some((_, None)) => {}
            None => {
                if let Some(v) = decode(value)? {
                    emit(key, v);
                }
            }
        }
        stored.next();
    }
    stored.status()?;
    for (k, v) in older {
        if let Some(v) = v {
            emit(*k, *v);
        }
    }
    Ok(())
}

impl Storage {
    /// The proof of `address` and `slots` at the head.
    pub fn proof(&self, address: Address, slots: &[U256]) -> Result<AccountProof> {
        self.proof_at(self.head().0, address, slots)
    }

    /// The proof of `address` and `slots` at block `number` (the head or an earlier canonical
    /// block): the stored leaves with every key changed since put back to its value then, from
    /// the history the commits recorded. Read from one RocksDB snapshot, so a block committed
    /// meanwhile does not tear it.
    pub fn proof_at(&self, number: u64, address: Address, slots: &[U256]) -> Result<AccountProof> {
        let db = self.db();
        let snapshot = db.snapshot();
        let head_ref = snapshot.get_cf(cf(db, tables::META)?, tables::META_HEAD)?.ok_or_else(|| StorageError::corrupt("head missing"))?;
        let head = crate::codec::decode_block_ref(&head_ref)?.0;
        if number > head {
            return Err(StorageError::UnknownBlock(number));
        }
        let hashed = keccak256(address);
        let target = Nibbles::unpack(hashed);

        // What changed after `number`, at its value then (the oldest change wins).
        let mut then = Then { accounts: BTreeMap::new(), slots: BTreeMap::new() };
        for n in ((number + 1)..=head).rev() {
            let changes = snapshot.get_cf(cf(db, tables::CHANGESETS)?, tables::number_key(n))?.ok_or(StorageError::UnknownBlock(n))?;
            let changes = ChangeSet::decode(&changes)?;
            for changed in &changes.accounts {
                let old = snapshot
                    .get_cf(cf(db, tables::ACCOUNT_HISTORY)?, tables::account_history_key(changed, n))?
                    .ok_or_else(|| StorageError::corrupt(format!("history of {changed} at {n} missing")))?;
                let old = if old.is_empty() { None } else { Some(StoredAccount::decode(&old)?) };
                then.accounts.insert(keccak256(changed), old);
            }
            for (changed, slot) in changes.slots.iter().filter(|(a, _)| *a == address) {
                let old = snapshot
                    .get_cf(cf(db, tables::STORAGE_HISTORY)?, tables::storage_history_key(changed, slot, n))?
                    .ok_or_else(|| StorageError::corrupt(format!("history of {changed} slot {slot} at {n} missing")))?;
                then.slots.insert(keccak256(B256::from(*slot)), decode_value(&old)?);
            }
        }

        // Account trie: every hashed account, the target's path retained.
        let mut hb = HashBuilder::default().with_proof_retainer(ProofRetainer::from_iter([target]));
        let mut found: Option<StoredAccount> = None;
        let mut accounts = snapshot.raw_iterator_cf(cf(db, tables::HASHED_ACCOUNTS)?);
        accounts.seek_to_first();
        let key_of = |key: &[u8]| (key.len() == 32).then(|| B256::from_slice(key));
        merge_leaves(accounts, key_of, |v| StoredAccount::decode(v).map(Some), &then.accounts, |key, account: StoredAccount| {
            if key == hashed {
                found = Some(account);
            }
            hb.add_leaf(Nibbles::unpack(key), &account.leaf_rlp());
        })?;
        let _ = hb.root();
        let account_proof = path_nodes(&hb.take_proof_nodes(), &target);

        // Storage trie of the account: its slots, the requested ones retained.
        let slot_paths: Vec<Nibbles> = slots.iter().map(|s| Nibbles::unpack(keccak256(B256::from(*s)))).collect();
        let mut values = vec![U256::ZERO; slots.len()];
        let mut storage_hb = HashBuilder::default().with_proof_retainer(ProofRetainer::from_iter(slot_paths.iter().copied()));
        let mut storage = snapshot.raw_iterator_cf(cf(db, tables::HASHED_STORAGE)?);
        storage.seek(hashed.as_slice());
        let slot_key = |key: &[u8]| (key.len() == 64 && key[..32] == hashed[..]).then(|| B256::from_slice(&key[32..]));
        let slots_then: BTreeMap<B256, Option<U256>> = then.slots.iter().map(|(k, v)| (*k, (!v.is_zero()).then_some(*v))).collect();
        merge_leaves(storage, slot_key, |v| decode_value(v).map(|v| (!v.is_zero()).then_some(v)), &slots_then, |key, value: U256| {
            let path = Nibbles::unpack(key);
            for (i, wanted) in slot_paths.iter().enumerate() {
                if *wanted == path {
                    values[i] = value;
                }
            }
            storage_hb.add_leaf(path, &storage_leaf_rlp(&value));
        })?;
        let storage_root = storage_hb.root();
        let storage_nodes = storage_hb.take_proof_nodes();
        let storage_proofs = slot_paths.iter().zip(values).map(|(path, value)| (value, path_nodes(&storage_nodes, path))).collect();

        let account = found.unwrap_or(StoredAccount { nonce: 0, balance: U256::ZERO, code_hash: KECCAK_EMPTY, storage_root: EMPTY_ROOT_HASH });
        if found.is_some() && account.storage_root != storage_root {
            return Err(StorageError::corrupt(format!("storage of {address} at block {number} does not hash to its account's root")));
        }
        Ok(AccountProof {
            balance: account.balance,
            nonce: account.nonce,
            code_hash: account.code_hash,
            storage_root: account.storage_root,
            account_proof,
            storage_proofs,
        })
    }
}
