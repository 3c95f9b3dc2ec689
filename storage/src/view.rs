//! [`StateView`]: the state at the head or at an earlier block, as the executor reads it.
//!
//! At the head, reads go through the shared [`crate::cache::StateCache`]. At an earlier block
//! `n`, the first history entry after `n` of a key holds its value at `n` (the value before the
//! next block that changed it); a key without one has not changed since, so the head value holds.

use crate::{
    codec::{decode_value, StoredAccount},
    db::{cf, Storage},
    error::{Result, StorageError},
    tables,
};
use alloy_primitives::{Address, B256, U256};
use pseq_executor::{
    revm::{bytecode::Bytecode, database::DatabaseRef, primitives::KECCAK_EMPTY, state::AccountInfo},
    StateError,
};

/// A read-only view of the state after block `number`.
#[derive(Debug, Clone, Copy)]
pub struct StateView<'a> {
    storage: &'a Storage,
    /// `None` reads the head (cached); `Some(n)` reads history.
    at: Option<u64>,
}

impl Storage {
    /// The state at the head.
    pub fn latest(&self) -> StateView<'_> {
        StateView { storage: self, at: None }
    }

    /// The state after block `number` (at most the head).
    pub fn state_at(&self, number: u64) -> Result<StateView<'_>> {
        let head = self.head().0;
        if number > head {
            return Err(StorageError::UnknownBlock(number));
        }
        Ok(StateView { storage: self, at: (number < head).then_some(number) })
    }
}

fn to_state_error(e: StorageError) -> StateError {
    StateError(e.to_string())
}

impl StateView<'_> {
    /// The block this view reads (the head at creation for a head view).
    pub fn block(&self) -> u64 {
        self.at.unwrap_or_else(|| self.storage.head().0)
    }

    fn head_account(&self, address: &Address) -> Result<Option<StoredAccount>> {
        let read_at = self.storage.cache.generation();
        if let Some(cached) = self.storage.cache.accounts.get(address) {
            return Ok(*cached);
        }
        let account = self.storage.plain_account(address)?;
        self.storage.cache.put_account(*address, account, read_at);
        Ok(account)
    }

    fn account(&self, address: &Address) -> Result<Option<StoredAccount>> {
        let Some(at) = self.at else { return self.head_account(address) };
        let db = self.storage.db();
        let mut iter = db.raw_iterator_cf(cf(db, tables::ACCOUNT_HISTORY)?);
        iter.seek(tables::account_history_key(address, at.saturating_add(1)));
        if let Some((key, value)) = iter.item() {
            if key.len() == 28 && &key[..20] == address.as_slice() {
                return if value.is_empty() { Ok(None) } else { StoredAccount::decode(value).map(Some) };
            }
        }
        iter.status()?;
        self.head_account(address)
    }

    fn slot(&self, address: &Address, slot: &U256) -> Result<U256> {
        if let Some(at) = self.at {
            let db = self.storage.db();
            let mut iter = db.raw_iterator_cf(cf(db, tables::STORAGE_HISTORY)?);
            iter.seek(tables::storage_history_key(address, slot, at.saturating_add(1)));
            if let Some((key, value)) = iter.item() {
                if key.len() == 60 && key[..52] == tables::storage_key(address, slot) {
                    return decode_value(value);
                }
            }
            iter.status()?;
        }
        let read_at = self.storage.cache.generation();
        if let Some(cached) = self.storage.cache.slots.get(&(*address, *slot)) {
            return Ok(*cached);
        }
        let value = self.storage.plain_slot(address, slot)?;
        self.storage.cache.put_slot(*address, *slot, value, read_at);
        Ok(value)
    }

    fn code(&self, hash: &B256) -> Result<Bytecode> {
        if *hash == KECCAK_EMPTY {
            return Ok(pseq_executor::empty_code());
        }
        if let Some(code) = self.storage.cache.code.get(hash) {
            return Ok(code.clone());
        }
        let bytes = self.storage.code(hash)?.ok_or_else(|| StorageError::corrupt(format!("code {hash} missing")))?;
        let code = Bytecode::new_raw(bytes);
        self.storage.cache.put_code(*hash, code.clone());
        Ok(code)
    }
}

impl DatabaseRef for StateView<'_> {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let Some(account) = self.account(&address).map_err(to_state_error)? else { return Ok(None) };
        let code = self.code(&account.code_hash).map_err(to_state_error)?;
        Ok(Some(pseq_executor::account_info(account.balance, account.nonce, account.code_hash, Some(code))))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.code(&code_hash).map_err(to_state_error)
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StateError> {
        self.slot(&address, &index).map_err(to_state_error)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        Ok(self.storage.canonical_hash(number).map_err(to_state_error)?.unwrap_or_default())
    }
}
