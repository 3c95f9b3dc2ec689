//! [`BlockOverlay`]: the writes of a block so far, layered over the pre-block [`StateSource`].
//!
//! Both execution paths use it: the sequential path commits every transaction into it, the
//! parallel path writes its merged result into it; system calls, withdrawals and rewards then run
//! on it, and [`BlockOverlay::into_diff`] turns it into the block's [`StateDiff`].

use crate::{
    diff::{AccountDiff, AccountState, StateDiff},
    error::StateError,
    state::StateSource,
};
use alloy_primitives::{map::HashMap, Address, B256, U256};
use revm::{
    bytecode::Bytecode,
    database::{Database, DatabaseCommit, DatabaseRef},
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
    state::{AccountInfo, EvmState},
};
use std::collections::BTreeMap;

/// One account as the block has left it.
#[derive(Debug, Clone, Default)]
pub struct OverlayAccount {
    /// `None`: the account does not exist (destroyed, or deleted as empty under EIP-161).
    pub info: Option<AccountInfo>,
    /// Slots written in this block (zero included).
    pub storage: HashMap<U256, U256>,
    /// The account's storage from before the block was wiped (self-destruct, deletion, creation).
    pub storage_cleared: bool,
}

/// Writes of a block layered over the pre-block state.
#[derive(Debug)]
pub struct BlockOverlay<'a, S> {
    base: &'a S,
    spec: SpecId,
    accounts: HashMap<Address, OverlayAccount>,
    codes: HashMap<B256, Bytecode>,
}

impl<'a, S: StateSource> BlockOverlay<'a, S> {
    /// An overlay with no writes yet.
    pub fn new(base: &'a S, spec: SpecId) -> Self {
        Self { base, spec, accounts: HashMap::default(), codes: HashMap::default() }
    }

    /// The pre-block state under the overlay.
    pub fn base(&self) -> &'a S {
        self.base
    }

    /// The spec the overlay applies EIP-161 by.
    pub fn spec(&self) -> SpecId {
        self.spec
    }

    /// Commits one transaction's (or system call's) finalized EVM state.
    pub fn apply_evm_state(&mut self, state: EvmState) {
        let clear_empty = self.spec.is_enabled_in(SpecId::SPURIOUS_DRAGON);
        for (address, account) in state {
            if !account.is_touched() {
                continue;
            }
            let entry = self.accounts.entry(address).or_default();
            if account.is_selfdestructed() || (clear_empty && account.is_empty()) {
                *entry = OverlayAccount { info: None, storage: HashMap::default(), storage_cleared: true };
                continue;
            }
            if account.is_created() {
                entry.storage.clear();
                entry.storage_cleared = true;
            }
            for (slot, value) in account.changed_storage_slots() {
                entry.storage.insert(*slot, value.present_value);
            }
            let mut info = account.info;
            if let Some(code) = &info.code {
                if info.code_hash != KECCAK_EMPTY {
                    self.codes.entry(info.code_hash).or_insert_with(|| code.clone());
                }
            }
            info.account_id = None;
            entry.info = Some(info);
        }
    }

    /// Makes room for `additional` more accounts.
    pub fn reserve(&mut self, additional: usize) {
        self.accounts.reserve(additional);
    }

    /// The overlay's entry for `address`, created from the pre-block state when absent.
    fn entry_mut(&mut self, address: Address) -> Result<&mut OverlayAccount, StateError> {
        if !self.accounts.contains_key(&address) {
            let info = self.base.basic_ref(address)?;
            self.accounts.insert(address, OverlayAccount { info, ..Default::default() });
        }
        Ok(self.accounts.entry(address).or_default())
    }

    /// Sets an account's fields (`None`: it no longer exists, and its storage is gone).
    pub fn set_info(&mut self, address: Address, info: Option<AccountInfo>) -> Result<(), StateError> {
        if let Some(code) = info.as_ref().and_then(|i| i.code.as_ref().filter(|_| i.code_hash != KECCAK_EMPTY)) {
            let hash = info.as_ref().map(|i| i.code_hash).unwrap_or_default();
            self.codes.entry(hash).or_insert_with(|| code.clone());
        }
        // The fields are replaced whole, so a new entry needs nothing from the pre-block state.
        let entry = self.accounts.entry(address).or_default();
        if info.is_none() {
            entry.storage.clear();
            entry.storage_cleared = true;
        }
        entry.info = info;
        Ok(())
    }

    /// Wipes the storage an account had (it was created, destroyed or deleted).
    pub fn clear_storage(&mut self, address: Address) -> Result<(), StateError> {
        let entry = self.entry_mut(address)?;
        entry.storage.clear();
        entry.storage_cleared = true;
        Ok(())
    }

    /// Writes one storage slot.
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) -> Result<(), StateError> {
        self.entry_mut(address)?.storage.insert(slot, value);
        Ok(())
    }

    /// The overlay's entry for `address`, if the block wrote the account.
    pub fn account(&self, address: &Address) -> Option<&OverlayAccount> {
        self.accounts.get(address)
    }

    /// Adds `amount` wei to `address` (block rewards, withdrawals). A zero amount does nothing,
    /// as in geth's and reth's post-block balance increments.
    pub fn increment_balance(&mut self, address: Address, amount: U256) -> Result<(), StateError> {
        if amount.is_zero() {
            return Ok(());
        }
        let mut info = self.basic_ref(address)?.unwrap_or_default();
        info.balance = info.balance.saturating_add(amount);
        self.write_info(address, info);
        Ok(())
    }

    /// Empties the balance of `address` and returns what it held (the DAO fork's drain).
    pub fn drain_balance(&mut self, address: Address) -> Result<U256, StateError> {
        let Some(mut info) = self.basic_ref(address)? else { return Ok(U256::ZERO) };
        let drained = std::mem::take(&mut info.balance);
        self.write_info(address, info);
        Ok(drained)
    }

    fn write_info(&mut self, address: Address, info: AccountInfo) {
        let entry = self.accounts.entry(address).or_default();
        entry.info = Some(info);
    }

    /// Normalises the overlay against the pre-block state into the block's [`StateDiff`]: only
    /// what really changed remains, so both execution paths yield equal diffs.
    pub fn into_diff(self) -> Result<StateDiff, StateError> {
        let mut accounts = BTreeMap::new();
        for (address, account) in &self.accounts {
            if let Some(diff) = self.normalize(*address, account)? {
                accounts.insert(*address, diff);
            }
        }
        Ok(StateDiff { accounts })
    }

    /// What the block so far changed in one account, as [`BlockOverlay::into_diff`] would give
    /// it (`None`: nothing, or the block has not written the account).
    pub fn account_diff(&self, address: &Address) -> Result<Option<AccountDiff>, StateError> {
        match self.accounts.get(address) {
            Some(account) => self.normalize(*address, account),
            None => Ok(None),
        }
    }

    fn normalize(&self, address: Address, account: &OverlayAccount) -> Result<Option<AccountDiff>, StateError> {
        let before = self.base.basic_ref(address)?;
        let storage_cleared = account.storage_cleared && before.is_some();
        let mut storage = BTreeMap::new();
        if account.info.is_some() {
            for (slot, value) in &account.storage {
                let unchanged = if storage_cleared || before.is_none() {
                    value.is_zero()
                } else {
                    *value == self.base.storage_ref(address, *slot)?
                };
                if !unchanged {
                    storage.insert(*slot, *value);
                }
            }
        }
        let info = account.info.as_ref().map(|info| {
            let code_changed = before.as_ref().map_or(info.code_hash != KECCAK_EMPTY, |b| b.code_hash != info.code_hash);
            let code = if code_changed && info.code_hash != KECCAK_EMPTY {
                info.code.clone().or_else(|| self.codes.get(&info.code_hash).cloned())
            } else {
                None
            };
            AccountState { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash, code }
        });
        let same_info = match (&info, &before) {
            (None, None) => true,
            (Some(a), Some(b)) => a.balance == b.balance && a.nonce == b.nonce && a.code_hash == b.code_hash,
            _ => false,
        };
        if same_info && storage.is_empty() && !storage_cleared {
            return Ok(None);
        }
        Ok(Some(AccountDiff { info, storage_cleared, storage }))
    }
}

impl<S: StateSource> DatabaseRef for BlockOverlay<'_, S> {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        match self.accounts.get(&address) {
            Some(account) => Ok(account.info.clone()),
            None => self.base.basic_ref(address),
        }
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        match self.codes.get(&code_hash) {
            Some(code) => Ok(code.clone()),
            None => self.base.code_by_hash_ref(code_hash),
        }
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StateError> {
        match self.accounts.get(&address) {
            Some(account) => match account.storage.get(&index) {
                Some(value) => Ok(*value),
                None if account.storage_cleared || account.info.is_none() => Ok(U256::ZERO),
                None => self.base.storage_ref(address, index),
            },
            None => self.base.storage_ref(address, index),
        }
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash_ref(number)
    }
}

impl<S: StateSource> Database for BlockOverlay<'_, S> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        self.basic_ref(address)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.code_by_hash_ref(code_hash)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        self.storage_ref(address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.block_hash_ref(number)
    }
}

impl<S: StateSource> DatabaseCommit for BlockOverlay<'_, S> {
    fn commit(&mut self, changes: EvmState) {
        self.apply_evm_state(changes);
    }
}
