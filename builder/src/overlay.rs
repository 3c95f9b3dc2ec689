//! [`DiffOverlay`]: a state with a [`StateDiff`] on top, read as one `DatabaseRef`. Used to trace
//! a transaction on the state its block saw before it, and to build a block on top of dev-mode
//! state edits (`anvil_setBalance` and friends).

use alloy_primitives::{Address, B256, U256};
use pseq_executor::{
    revm::{bytecode::Bytecode, database::DatabaseRef, state::AccountInfo},
    AccountDiff, StateDiff, StateError,
};

/// `base` with `diff` applied.
#[derive(Debug)]
pub struct DiffOverlay<'a, S> {
    /// The state below.
    pub base: &'a S,
    /// The changes on top.
    pub diff: &'a StateDiff,
}

impl<S: DatabaseRef<Error = StateError>> DatabaseRef for DiffOverlay<'_, S> {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        match self.diff.accounts.get(&address) {
            Some(diff) => Ok(diff.info.as_ref().map(|i| AccountInfo {
                balance: i.balance,
                nonce: i.nonce,
                code_hash: i.code_hash,
                code: i.code.clone(),
                ..Default::default()
            })),
            None => self.base.basic_ref(address),
        }
    }

    fn code_by_hash_ref(&self, hash: B256) -> Result<Bytecode, StateError> {
        let changed = self.diff.accounts.values().filter_map(|d| d.info.as_ref()).find(|i| i.code_hash == hash).and_then(|i| i.code.clone());
        match changed {
            Some(code) => Ok(code),
            None => self.base.code_by_hash_ref(hash),
        }
    }

    fn storage_ref(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        if let Some(diff) = self.diff.accounts.get(&address) {
            if let Some(value) = diff.storage.get(&slot) {
                return Ok(*value);
            }
            if diff.storage_cleared || diff.info.is_none() {
                return Ok(U256::ZERO);
            }
        }
        self.base.storage_ref(address, slot)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash_ref(number)
    }
}

/// `lower` then `upper` as one diff: `upper` (computed on top of `lower`) wins account by
/// account and slot by slot.
pub fn merge_diffs(lower: &StateDiff, upper: StateDiff) -> StateDiff {
    let mut merged = lower.clone();
    for (address, diff) in upper.accounts {
        match merged.accounts.get_mut(&address) {
            Some(below) if !diff.storage_cleared => {
                below.info = diff.info;
                below.storage.extend(diff.storage);
            }
            _ => {
                merged.accounts.insert(address, AccountDiff { ..diff });
            }
        }
    }
    merged
}
