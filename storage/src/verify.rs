//! `db verify`: the state root recomputed from scratch from every stored leaf, ignoring the
//! stored trie nodes, and compared with the head header.

use crate::{
    codec::{decode_value, storage_leaf_rlp, StoredAccount},
    db::{cf, Storage},
    error::{Result, StorageError},
    tables,
};
use alloy_primitives::B256;
use alloy_trie::{HashBuilder, Nibbles};

/// What a from-scratch verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Head block number.
    pub head: u64,
    /// State root the head header commits to.
    pub header_root: B256,
    /// State root recomputed from the leaves.
    pub computed_root: B256,
    /// Accounts visited.
    pub accounts: u64,
    /// Storage slots visited.
    pub slots: u64,
    /// Accounts whose stored storage root differs from the recomputed one.
    pub storage_root_mismatches: u64,
}

impl VerifyReport {
    /// Whether everything matched.
    pub fn ok(&self) -> bool {
        self.header_root == self.computed_root && self.storage_root_mismatches == 0
    }
}

impl Storage {
    /// Recomputes the state root from every stored account and slot and compares it with the
    /// head header's. `progress` is called every 100,000 accounts with the count so far.
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
        let db = self.db();
        let (head, hash) = self.head();
        let header = self.header(&hash)?.ok_or(StorageError::UnknownBlock(head))?;
        let mut accounts_iter = db.raw_iterator_cf(cf(db, tables::HASHED_ACCOUNTS)?);
        let mut storage_iter = db.raw_iterator_cf(cf(db, tables::HASHED_STORAGE)?);
        let mut hb = HashBuilder::default();
        let (mut accounts, mut slots, mut mismatches) = (0u64, 0u64, 0u64);
        accounts_iter.seek_to_first();
        while let Some((key, value)) = accounts_iter.item() {
            if key.len() != 32 {
                return Err(StorageError::corrupt("hashed account key length"));
            }
            let mut account = StoredAccount::decode(value)?;
            let mut storage_hb = HashBuilder::default();
            storage_iter.seek(key);
            while let Some((slot_key, slot_value)) = storage_iter.item() {
                if slot_key.len() != 64 || &slot_key[..32] != key {
                    break;
                }
                storage_hb.add_leaf(Nibbles::unpack(&slot_key[32..]), &storage_leaf_rlp(&decode_value(slot_value)?));
                slots += 1;
                storage_iter.next();
            }
            storage_iter.status()?;
            let storage_root = storage_hb.root();
            if storage_root != account.storage_root {
                mismatches += 1;
                account.storage_root = storage_root;
            }
            hb.add_leaf(Nibbles::unpack(key), &account.leaf_rlp());
            accounts += 1;
            if accounts % 100_000 == 0 {
                progress(accounts);
            }
            accounts_iter.next();
        }
        accounts_iter.status()?;
        Ok(VerifyReport {
            head,
            header_root: header.state_root,
            computed_root: hb.root(),
            accounts,
            slots,
            storage_root_mismatches: mismatches,
        })
    }
}
