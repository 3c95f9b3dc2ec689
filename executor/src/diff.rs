//! [`StateDiff`]: what a block changed, in a form the storage layer applies in one batch.

use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;
use std::collections::BTreeMap;

/// An account's basic fields after the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Hash of the runtime code (`KECCAK_EMPTY` for none).
    pub code_hash: B256,
    /// The code itself, present only where the block changed it.
    pub code: Option<Bytecode>,
}

/// How one account changed in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDiff {
    /// The account after the block; `None` when it no longer exists.
    pub info: Option<AccountState>,
    /// The storage the account had before the block is gone (apply before `storage`).
    pub storage_cleared: bool,
    /// Slots whose value changed; a zero value deletes the slot.
    pub storage: BTreeMap<U256, U256>,
}

/// Every account a block changed, sorted by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDiff {
    /// Changed accounts.
    pub accounts: BTreeMap<Address, AccountDiff>,
}

impl StateDiff {
    /// Number of changed storage slots over all accounts.
    pub fn storage_slot_count(&self) -> usize {
        self.accounts.values().map(|a| a.storage.len()).sum()
    }
}
