//! The state cache in front of RocksDB: accounts, slots and code at the head, shared by the
//! parallel executor's threads through sharded concurrent maps (readers of different keys never
//! wait on each other). Commits refresh the entries they change; unwinds clear it.

use crate::{codec::StoredAccount, update::CacheChanges};
use alloy_primitives::{Address, B256, U256};
use dashmap::DashMap;
use pseq_executor::revm::bytecode::Bytecode;
use rustc_hash::FxBuildHasher;

/// Cached head state. Bounded: when a map grows past its limit it is emptied (cheap, and the
/// hot entries come back on the next reads).
#[derive(Debug)]
pub(crate) struct StateCache {
    limit: usize,
    pub accounts: DashMap<Address, Option<StoredAccount>, FxBuildHasher>,
    pub slots: DashMap<(Address, U256), U256, FxBuildHasher>,
    pub code: DashMap<B256, Bytecode, FxBuildHasher>,
}

impl StateCache {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, accounts: DashMap::default(), slots: DashMap::default(), code: DashMap::default() }
    }

    pub(crate) fn put_account(&self, address: Address, account: Option<StoredAccount>) {
        if self.accounts.len() >= self.limit {
            self.accounts.clear();
        }
        self.accounts.insert(address, account);
    }

    pub(crate) fn put_slot(&self, address: Address, slot: U256, value: U256) {
        if self.slots.len() >= self.limit {
            self.slots.clear();
        }
        self.slots.insert((address, slot), value);
    }

    pub(crate) fn put_code(&self, hash: B256, code: Bytecode) {
        if self.code.len() >= self.limit / 16 {
            self.code.clear();
        }
        self.code.insert(hash, code);
    }

    /// Refreshes the entries a committed update changed.
    pub(crate) fn apply(&self, changes: &CacheChanges) {
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
