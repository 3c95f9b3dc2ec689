//! Unwinding: putting the state, trie and head back to an earlier block from the history the
//! commits recorded, one block per atomic write (a crash mid-way leaves a consistent head).

use crate::{
    codec::StoredAccount,
    db::{cf, Storage},
    error::{Result, StorageError},
    tables,
    update::{prepare, ChangeSet, History},
};
use pseq_executor::{AccountDiff, AccountState, StateDiff};
use rocksdb::WriteBatch;

impl Storage {
    /// Unwinds the chain to block `target`: every later block is removed, with its state changes,
    /// trie nodes, receipts and transaction index. Each step re-derives the state root and checks
    /// it against the parent header.
    pub fn unwind_to(&self, target: u64) -> Result<()> {
        let _guard = self.lock_writes();
        loop {
            let (number, hash) = self.head();
            if number <= target {
                break;
            }
            self.unwind_one(number, hash)?;
        }
        let (safe, finalized) = self.safe_finalized()?;
        let head = self.head();
        let lower = |p: Option<(u64, alloy_primitives::B256)>| p.filter(|(n, _)| *n > head.0).map(|_| head);
        if lower(safe).is_some() || lower(finalized).is_some() {
            self.set_safe_finalized(lower(safe), lower(finalized))?;
        }
        Ok(())
    }

    fn unwind_one(&self, number: u64, hash: alloy_primitives::B256) -> Result<()> {
        let db = self.db();
        let header = self.header(&hash)?.ok_or(StorageError::UnknownBlock(number))?;
        let parent = self.header(&header.parent_hash)?.ok_or(StorageError::UnknownBlock(number - 1))?;
        let changes = db.get_cf(cf(db, tables::CHANGESETS)?, tables::number_key(number))?.ok_or(StorageError::UnknownBlock(number))?;
        let changes = ChangeSet::decode(&changes)?;

        // The reverse diff: every changed key back to its value before the block.
        let mut diff = StateDiff::default();
        let account_history = cf(db, tables::ACCOUNT_HISTORY)?;
        let storage_history = cf(db, tables::STORAGE_HISTORY)?;
        for address in &changes.accounts {
            let key = tables::account_history_key(address, number);
            let old = db.get_cf(account_history, key)?.ok_or_else(|| StorageError::corrupt(format!("history of {address} at {number} missing")))?;
            let info = if old.is_empty() {
                None
            } else {
                let account = StoredAccount::decode(&old)?;
                Some(AccountState { balance: account.balance, nonce: account.nonce, code_hash: account.code_hash, code: None })
            };
            diff.accounts.insert(*address, AccountDiff { info, storage_cleared: false, storage: Default::default() });
        }
        for (address, slot) in &changes.slots {
            let key = tables::storage_history_key(address, slot, number);
            let old = db.get_cf(storage_history, key)?.ok_or_else(|| StorageError::corrupt(format!("history of {address} slot {slot} at {number} missing")))?;
            let value = crate::codec::decode_value(&old)?;
            let entry = diff.accounts.get_mut(address).ok_or_else(|| StorageError::corrupt("slot change without account change"))?;
            entry.storage.insert(*slot, value);
        }

        let update = prepare(self, &diff, History::Skip)?;
        if update.state_root != parent.state_root {
            return Err(StorageError::StateRootMismatch { computed: update.state_root, expected: parent.state_root });
        }
        let mut state_batch = WriteBatch::default();
        update.write_into(db, &mut state_batch)?;
        // State first, then history and block data removal: one batch, applied in order.
        self.delete_block_data(&mut state_batch, number, hash)?;
        for address in &changes.accounts {
            state_batch.delete_cf(account_history, tables::account_history_key(address, number));
        }
        for (address, slot) in &changes.slots {
            state_batch.delete_cf(storage_history, tables::storage_history_key(address, slot, number));
        }
        state_batch.put_cf(cf(db, tables::META)?, tables::META_HEAD, crate::codec::encode_block_ref(number - 1, &header.parent_hash));
        self.cache.begin_change();
        let written = self.write(state_batch);
        self.cache.clear();
        if written.is_ok() {
            self.set_head((number - 1, header.parent_hash));
        }
        self.cache.end_change();
        written
    }
}
