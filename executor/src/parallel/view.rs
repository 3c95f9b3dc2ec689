//! [`VersionedView`]: the state one transaction incarnation sees, implemented as revm's
//! `Database` over the multi-version memory and the pre-block state. It records every read with
//! its origins for validation, and stops execution (an error revm propagates) when a read meets
//! an ESTIMATE.

use super::{
    lazy::apply_delta,
    mv_memory::{AccountValue, Location, MvMemory, Observed, ReadSet, Resolved, Value, Zeroness},
    TxIdx,
};
use crate::{error::StateError, state::StateSource};
use alloy_primitives::{map::HashMap, Address, B256, U256};
use revm::{
    bytecode::Bytecode,
    database::{DBErrorMarker, Database},
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
    state::AccountInfo,
};

/// Why a read could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ViewError {
    /// The read met an ESTIMATE of this lower transaction.
    #[error("blocked on transaction {0}")]
    Blocked(TxIdx),
    /// The pre-block state failed.
    #[error(transparent)]
    State(#[from] StateError),
}

impl DBErrorMarker for ViewError {}

/// The two accounts of a plain transfer executed lazily: revm sees a sender with an unlimited
/// balance and the transaction's nonce, and a recipient that does not exist yet; the real
/// balances are settled as deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazyTransfer {
    /// The paying account.
    pub sender: Address,
    /// The receiving account (no code).
    pub recipient: Address,
    /// The transaction's nonce.
    pub nonce: u64,
}

/// A recognised ERC-20 `transfer` executed with a lazy credit: the recipient's balance slot is
/// read only for whether it is zero, and the transaction's write to it becomes a
/// [`Value::StorageAdd`] (see [`super::tokens`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazyTokenCredit {
    /// The token contract.
    pub token: Address,
    /// The recipient's balance slot in the token's storage.
    pub slot: U256,
    /// The amount transferred (from the calldata).
    pub amount: U256,
}

/// The state as one incarnation of transaction `tx` sees it.
pub struct VersionedView<'a, S> {
    base: &'a S,
    mv: &'a MvMemory,
    spec: SpecId,
    tx: TxIdx,
    lazy: Option<LazyTransfer>,
    lazy_credit: Option<LazyTokenCredit>,
    /// The value the lazily credited slot was given to the EVM as, once it was read.
    pub credit_base: Option<U256>,
    /// Reads with their origins, for validation.
    pub reads: ReadSet,
    /// The account values this incarnation read, to tell real writes from reads.
    pub read_accounts: HashMap<Address, Option<AccountValue>>,
    /// Which contracts called by this worker are known tokens (their balances mapping slot), by
    /// their pre-block code; kept for the whole block.
    pub token_kinds: HashMap<Address, Option<u64>>,
}

impl<'a, S: StateSource> VersionedView<'a, S> {
    /// A view for the block; [`VersionedView::reset`] points it at a transaction.
    pub fn new(base: &'a S, mv: &'a MvMemory, spec: SpecId) -> Self {
        Self { base, mv, spec, tx: 0, lazy: None, lazy_credit: None, credit_base: None, reads: Vec::new(), read_accounts: HashMap::default(), token_kinds: HashMap::default() }
    }

    /// Prepares the view for executing `tx`, lazily or not.
    pub fn reset(&mut self, tx: TxIdx, lazy: Option<LazyTransfer>, lazy_credit: Option<LazyTokenCredit>) {
        self.tx = tx;
        self.lazy = lazy;
        self.lazy_credit = lazy_credit;
        self.credit_base = None;
        self.reads.clear();
        self.read_accounts.clear();
    }

    /// Whether the account at `address` has code as transaction `tx` would see it now, without
    /// recording a read (deltas never change code). The pre-block account answers unless a
    /// transaction of the block changed the account's code; then the multi-version memory does,
    /// or the pre-block account again where an ESTIMATE is in the way. Only a hint: what counts
    /// is checked again in block order.
    pub fn peek_has_code(&self, address: Address, tx: TxIdx) -> Result<bool, StateError> {
        let in_block = if self.mv.code_changed.contains_key(&address) { self.mv.read(&Location::Account(address), tx).ok() } else { None };
        let code_hash = match in_block {
            Some(Resolved { absolute: Some(Value::Account(value)), .. }) => value.map(|v| v.code_hash),
            _ => self.base.basic_ref(address)?.map(|info| info.code_hash),
        };
        Ok(code_hash.is_some_and(|hash| hash != KECCAK_EMPTY))
    }

    /// Reads the account at `address` through the multi-version memory, applying lazy deltas.
    /// Also returns the account's code when the pre-block state supplied it with the account.
    fn read_account(&mut self, address: Address) -> Result<(Option<AccountValue>, Option<Bytecode>), ViewError> {
        let location = Location::Account(address);
        let resolved = self.mv.read(&location, self.tx).map_err(ViewError::Blocked)?;
        let (mut account, mut code) = match resolved.absolute {
            Some(Value::Account(value)) => (value, None),
            _ => match self.base.basic_ref(address)? {
                Some(info) => (Some(AccountValue { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash }), info.code),
                None => (None, None),
            },
        };
        for delta in &resolved.deltas {
            // A failed check gives a value no validated execution can keep: the end-of-block
            // evaluation repeats every check and falls back to sequential execution.
            account = apply_delta(account, delta, self.spec).unwrap_or_else(|_| None);
        }
        if account.is_none() {
            code = None;
        }
        self.reads.push((location, Observed::Versions(resolved.origins)));
        Ok((account, code))
    }

    fn code(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        if code_hash == KECCAK_EMPTY {
            return Ok(crate::state::empty_code());
        }
        match self.mv.codes.get(&code_hash) {
            Some(code) => Ok(code.clone()),
            None => self.base.code_by_hash_ref(code_hash),
        }
    }
}

impl<S: StateSource> Database for VersionedView<'_, S> {
    type Error = ViewError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ViewError> {
        if let Some(lazy) = self.lazy {
            if address == lazy.sender {
                return Ok(Some(crate::state::account_info(U256::MAX, lazy.nonce, KECCAK_EMPTY, None)));
            }
            if address == lazy.recipient {
                return Ok(None);
            }
        }
        let (account, known_code) = self.read_account(address)?;
        self.read_accounts.insert(address, account.clone());
        let Some(account) = account else { return Ok(None) };
        // Deltas never change code, so code that came with the pre-block account still fits.
        let code = match known_code {
            Some(code) if account.code_hash != KECCAK_EMPTY => code,
            _ => self.code(account.code_hash)?,
        };
        Ok(Some(crate::state::account_info(account.balance, account.nonce, account.code_hash, Some(code))))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ViewError> {
        Ok(self.code(code_hash)?)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, ViewError> {
        let location = Location::Storage(address, index);
        if self.lazy_credit.is_some_and(|credit| credit.token == address && credit.slot == index) {
            // Only zero or not is observed. The EVM is given a value of the same kind: the real
            // one where an absolute value decides, else 1 (the credit's write becomes a delta
            // relative to whatever was given, and overflow is checked in block order).
            let zeroness = self.mv.read_zeroness(&location, self.tx).map_err(ViewError::Blocked)?;
            let given = match zeroness {
                Zeroness::Base => self.base.storage_ref(address, index)?,
                Zeroness::Value(value) => value,
                Zeroness::NonZero => U256::from(1),
            };
            self.credit_base = Some(given);
            self.reads.push((location, Observed::Zeroness(zeroness.observed())));
            return Ok(given);
        }
        let resolved = self.mv.read(&location, self.tx).map_err(ViewError::Blocked)?;
        let mut value = match resolved.absolute {
            Some(Value::Storage(value)) => value,
            _ => self.base.storage_ref(address, index)?,
        };
        for delta in &resolved.deltas {
            // An overflow fails the credit's check in block order: any value does here.
            if let Value::StorageAdd { amount, .. } = delta {
                value = value.wrapping_add(*amount);
            }
        }
        self.reads.push((location, Observed::Versions(resolved.origins)));
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, ViewError> {
        Ok(self.base.block_hash_ref(number)?)
    }
}
