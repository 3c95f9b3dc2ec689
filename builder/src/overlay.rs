//! [`DiffOverlay`]: a state with a [`StateDiff`] on top, read as one `DatabaseRef`. Used to trace
//! a transaction on the state its block saw before it, and to build a block on top of dev-mode
//! state edits (`anvil_setBalance` and friends).

use alloy_primitives::{Address, B256, U256};
use pseq_executor::{
    revm::{bytecode::Bytecode, database::DatabaseRef, state::AccountInfo},
    StateDiff, StateError,
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
            Some(diff) => Ok(diff.info.as_ref().map(|i| pseq_executor::account_info(i.balance, i.nonce, i.code_hash, i.code.clone()))),
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
                merged.accounts.insert(address, diff);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use pseq_executor::{revm::primitives::KECCAK_EMPTY, AccountDiff, AccountState};

    fn account(balance: u64) -> Option<AccountState> {
        Some(AccountState { balance: U256::from(balance), nonce: 0, code_hash: KECCAK_EMPTY, code: None })
    }

    #[test]
    fn upper_wins_slot_by_slot_and_a_clear_drops_the_lower_slots() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let mut lower = StateDiff::default();
        lower.accounts.insert(a, AccountDiff { info: account(1), storage_cleared: false, storage: [(U256::from(1), U256::from(10)), (U256::from(2), U256::from(20))].into() });
        lower.accounts.insert(b, AccountDiff { info: account(5), storage_cleared: false, storage: [(U256::from(1), U256::from(1))].into() });
        let mut upper = StateDiff::default();
        upper.accounts.insert(a, AccountDiff { info: account(2), storage_cleared: false, storage: [(U256::from(2), U256::from(21))].into() });
        upper.accounts.insert(b, AccountDiff { info: account(6), storage_cleared: true, storage: [(U256::from(3), U256::from(3))].into() });
        let merged = merge_diffs(&lower, upper);
        let ma = &merged.accounts[&a];
        assert_eq!(ma.info, account(2));
        assert_eq!(ma.storage.get(&U256::from(1)), Some(&U256::from(10)));
        assert_eq!(ma.storage.get(&U256::from(2)), Some(&U256::from(21)));
        let mb = &merged.accounts[&b];
        assert!(mb.storage_cleared);
        assert_eq!(mb.storage.len(), 1, "the lower slots of a cleared account are gone");
        assert_eq!(mb.info, account(6));
    }
}
