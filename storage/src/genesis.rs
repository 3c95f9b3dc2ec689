//! Genesis allocations as a state diff, so genesis goes through the same write path as blocks.

use crate::db::GenesisAccount;
use alloy_primitives::{keccak256, Address};
use pseq_executor::{
    revm::{bytecode::Bytecode, primitives::KECCAK_EMPTY},
    AccountDiff, AccountState, StateDiff,
};

/// The diff that creates every allocated account from an empty state.
pub(crate) fn alloc_diff(alloc: &[(Address, GenesisAccount)]) -> StateDiff {
    let mut diff = StateDiff::default();
    for (address, account) in alloc {
        let (code_hash, code) = if account.code.is_empty() {
            (KECCAK_EMPTY, None)
        } else {
            (keccak256(&account.code), Some(Bytecode::new_raw(account.code.clone())))
        };
        let info = AccountState { balance: account.balance, nonce: account.nonce, code_hash, code };
        let storage = account.storage.iter().filter(|(_, v)| !v.is_zero()).map(|(k, v)| (*k, *v)).collect();
        diff.accounts.insert(*address, AccountDiff { info: Some(info), storage_cleared: false, storage });
    }
    diff
}
