//! The state cache in front of RocksDB: accounts (with their storage roots), slots and code at
//! the head, shared by the parallel executor's threads through sharded concurrent maps (readers
//! of different keys never wait on each other). Commits refresh the entries they change; unwinds
//! clear it. The state root takes the values a block's changes replace from it (the executor
//! read them while executing the block) before reading RocksDB.

use crate::{codec::StoredAccount, update::CacheChanges};
use alloy_primitives::{Address, B256, U256};
use dashmap::DashMap;
use pseq_executor::revm::bytecode::Bytecode;
use rustc_hash::FxBuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cached head state. Bounded: when a map grows past its limit it is emptied (cheap, and the
/// hot entries come back on the next reads).
#[derive(Debug)]
pub(crate) struct StateCache {
    limit: usize,
    pub accounts: DashMap<Address, Option<StoredAccount>, FxBuildHasher>,
    pub slots: DashMap<(Address, U256), U256, FxBuildHasher>,
    pub code: DashMap<B256, Bytecode, FxBuildHasher>,
    /// Changes of the state so far, counted twice each: odd while one is being written.
    generation: AtomicU64,
}

impl StateCache {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, accounts: DashMap::default(), slots: DashMap::default(), code: DashMap::default(), generation: AtomicU64::new(0) }
    }

    /// The generation to pass to [`StateCache::put_account`] and [`StateCache::put_slot`]: taken
    /// before reading RocksDB.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Marks the start of a change of the state (a commit or an unwind), before its write.
    pub(crate) fn begin_change(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the end of a change of the state, after its entries are refreshed.
    pub(crate) fn end_change(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Caches an account read from RocksDB at generation `read_at`. A value read while the state
    /// changed (a commit between the read and now) may be the one before it: not kept, so that
    /// the cache never holds a value older than the head.
    pub(crate) fn put_account(&self, address: Address, account: Option<StoredAccount>, read_at: u64) {
        if read_at % 2 == 1 {
            return;
        }
        if self.accounts.len() >= self.limit {
            self.accounts.clear();
        }
        self.accounts.insert(address, account);
        if self.generation() != read_at {
            self.accounts.remove(&address);
        }
    }

    /// Caches a slot read from RocksDB at generation `read_at` (as [`StateCache::put_account`]).
    pub(crate) fn put_slot(&self, address: Address, slot: U256, value: U256, read_at: u64) {
        if read_at % 2 == 1 {
            return;
        }
        if self.slots.len() >= self.limit {
            self.slots.clear();
        }
        self.slots.insert((address, slot), value);
        if self.generation() != read_at {
            self.slots.remove(&(address, slot));
        }
    }

    pub(crate) fn put_code(&self, hash: B256, code: Bytecode) {
        if self.code.len() >= self.limit / 16 {
            self.code.clear();
        }
        self.code.insert(hash, code);
    }

    /// Refreshes the entries a committed update changed.
    pub(crate) fn apply(&self, changes: &CacheChanges) {
        if self.accounts.len() + changes.accounts.len() > self.limit {
            self.accounts.clear();
        }
        if self.slots.len() + changes.slots.len() > self.limit {
            self.slots.clear();
        }
        if !changes.wiped.is_empty() {
            // Slots of a wiped account are not enumerable in the cache: drop every slot entry of
            // those accounts.
            self.slots.retain(|(address, _), _| !changes.wiped.contains(address));
        }
        for (address, account) in &changes.accounts {
            self.accounts.insert(*address, *account);
        }
        for (address, slot, value) in &changes.slots {
            self.slots.insert((*address, *slot), *value);
        }
    }

    /// Forgets everything (after an unwind).
    pub(crate) fn clear(&self) {
        self.accounts.clear();
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(nonce: u64) -> Option<StoredAccount> {
        Some(StoredAccount { nonce, balance: U256::from(nonce), code_hash: B256::ZERO, storage_root: B256::repeat_byte(nonce as u8) })
    }

    #[test]
    fn a_value_read_across_a_commit_is_not_kept() {
        let cache = StateCache::new(16);
        let address = Address::repeat_byte(1);
        // Read before a commit, cached after it: never the old value (a miss, read again).
        let read_at = cache.generation();
        cache.begin_change();
        cache.apply(&CacheChanges { accounts: vec![(address, account(2))], slots: vec![(address, U256::from(1), U256::from(9))], wiped: Vec::new() });
        cache.end_change();
        cache.put_account(address, account(1), read_at);
        cache.put_slot(address, U256::from(1), U256::from(8), read_at);
        assert!(cache.accounts.get(&address).is_none_or(|a| *a == account(2)));
        // A value read while a commit is being written is not cached.
        cache.begin_change();
        let during = cache.generation();
        cache.put_account(Address::repeat_byte(2), account(5), during);
        cache.end_change();
        assert!(cache.accounts.get(&Address::repeat_byte(2)).is_none());
        // Read and cached with no commit between: kept.
        let read_at = cache.generation();
        cache.put_account(Address::repeat_byte(3), account(7), read_at);
        cache.put_slot(address, U256::from(2), U256::from(3), read_at);
        assert_eq!(cache.accounts.get(&Address::repeat_byte(3)).map(|a| *a), Some(account(7)));
        assert_eq!(cache.slots.get(&(address, U256::from(2))).map(|v| *v), Some(U256::from(3)));
        assert!(cache.slots.get(&(address, U256::from(1))).is_none_or(|v| *v == U256::from(9)));
    }
}
