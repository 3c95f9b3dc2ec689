//! [`VersionedView`]: the state one transaction incarnation sees, implemented as revm's
//! `Database` over the multi-version memory and the pre-block state. It records every read with
//! its origins for validation, and stops execution (an error revm propagates) when a read meets
//! an ESTIMATE.

use super::{
    lazy::apply_delta,
    mv_memory::{AccountValue, Location, MvMemory, Observed, Origin, Origins, ReadSet, Resolved, Value, Zeroness},
    TxIdx,
};
use crate::{error::StateError, state::StateSource};
use alloy_primitives::{map::HashMap, Address, B256, U256};
use smallvec::SmallVec;
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
    /// A held balance's credits overflow the real balance: sequential execution would have
    /// failed a transfer that this execution made.
    #[error("held balance overflow")]
    HeldBalanceOverflow,
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
    /// The accounts this incarnation read as the block's base state has them (no write of the
    /// block below it): where the merge writes one first, the diff need not look it up again.
    pub base_reads: SmallVec<[Address; 2]>,
    /// Which contracts called by this worker are known tokens (their balances mapping slot), by
    /// their pre-block code; kept for the whole block.
    pub token_kinds: HashMap<Address, Option<u64>>,
    /// Whether this transaction holds balances ([`super::held`]), and the account it never
    /// holds (its sender).
    holding: Option<Address>,
    /// The accounts whose balance this incarnation holds: the EVM was given [`HELD_BALANCE`].
    pub held: SmallVec<[Address; 4]>,
    /// Accounts this incarnation must read exactly when it loads them: an instruction is about
    /// to look at their balance.
    exact: SmallVec<[Address; 2]>,
    /// Accounts this incarnation held, then read exactly: a change of their balance alone is
    /// written as a [`Value::Rebalance`].
    pub released: SmallVec<[Address; 2]>,
}

/// The balance the EVM is given for an account whose balance is held: 2^128 wei, above all the
/// ether there is by far, so that no credit overflows it and the credits it received are the
/// final balance minus this.
pub const HELD_BALANCE: U256 = U256::from_limbs([0, 0, 1, 0]);

/// An account in the pre-block state, and its code where the state gives it along.
type PreBlock = (Option<AccountValue>, Option<Bytecode>);

/// What [`VersionedView::load_held`] did: held the account, or left it to an exact read (with
/// the pre-block account where it looked that up).
enum Loaded {
    Held(AccountInfo),
    Exact(Option<PreBlock>),
}

/// Whether an account is never empty, whatever its balance: it has code or a nonce.
fn cannot_be_empty(account: &AccountValue) -> bool {
    account.code_hash != KECCAK_EMPTY || account.nonce > 0
}

/// An account read from the multi-version memory: its value (deltas applied), the code the
/// pre-block state gave with it, and the entries the read went through.
struct AccountRead {
    account: Option<AccountValue>,
    code: Option<Bytecode>,
    origins: Origins,
}

impl<'a, S: StateSource> VersionedView<'a, S> {
    /// A view for the block; [`VersionedView::reset`] points it at a transaction.
    pub fn new(base: &'a S, mv: &'a MvMemory, spec: SpecId) -> Self {
        Self {
            base,
            mv,
            spec,
            tx: 0,
            lazy: None,
            lazy_credit: None,
            credit_base: None,
            reads: Vec::new(),
            read_accounts: HashMap::default(),
            base_reads: SmallVec::new(),
            token_kinds: HashMap::default(),
            holding: None,
            held: SmallVec::new(),
            exact: SmallVec::new(),
            released: SmallVec::new(),
        }
    }

    /// Prepares the view for executing `tx`, lazily or not. `holding` names the sender, whose
    /// balance is never held, when the transaction holds balances at all.
    pub fn reset(&mut self, tx: TxIdx, lazy: Option<LazyTransfer>, lazy_credit: Option<LazyTokenCredit>, holding: Option<Address>) {
        self.tx = tx;
        self.lazy = lazy;
        self.lazy_credit = lazy_credit;
        self.credit_base = None;
        self.reads.clear();
        self.read_accounts.clear();
        self.base_reads.clear();
        self.holding = holding;
        self.held.clear();
        self.exact.clear();
        self.released.clear();
    }

    /// Stops holding the balance of `address` before an instruction looks at it. Where it was
    /// held, reads the account exactly and returns it (the caller moves the EVM's copy onto the
    /// real balance); otherwise makes sure it is read exactly if the instruction loads it.
    /// `Err` when the exact read meets an ESTIMATE.
    pub fn release(&mut self, address: Address) -> Result<Option<Option<AccountValue>>, ViewError> {
        if !self.held.contains(&address) {
            if !self.exact.contains(&address) {
                self.exact.push(address);
            }
            return Ok(None);
        }
        // revm loads an account from the database once per transaction; all copies go anyway.
        self.held.retain(|held| *held != address);
        self.released.push(address);
        let read = self.read_account(address, None)?;
        self.record_account_read(address, &read.account, read.origins);
        Ok(Some(read.account))
    }

    /// Loads `address` holding its balance, where this transaction holds balances and the
    /// account cannot be empty whatever its balance: it has code, or a nonce (deltas never
    /// remove code and only raise nonces). Only the nearest absolute entry is read, and recorded.
    /// [`Loaded::Exact`] where the account is to be read exactly.
    fn load_held(&mut self, address: Address) -> Result<Loaded, ViewError> {
        let Some(sender) = self.holding else { return Ok(Loaded::Exact(None)) };
        if address == sender || self.exact.contains(&address) {
            return Ok(Loaded::Exact(None));
        }
        let location = Location::Account(address);
        let (origin, absolute) = self.mv.read_absolute(&location, self.tx).map_err(ViewError::Blocked)?;
        let (account, code) = match absolute {
            Some(Value::Account(value)) => (value, None),
            _ => {
                let pre_block = self.pre_block(address)?;
                if !pre_block.0.as_ref().is_some_and(cannot_be_empty) {
                    return Ok(Loaded::Exact(Some(pre_block)));
                }
                pre_block
            }
        };
        let Some(account) = account.filter(cannot_be_empty) else { return Ok(Loaded::Exact(None)) };
        self.reads.push((location, Observed::Absolute(origin)));
        self.held.push(address);
        let code = match code {
            Some(code) if account.code_hash != KECCAK_EMPTY => code,
            _ => self.code(account.code_hash)?,
        };
        Ok(Loaded::Held(crate::state::account_info(HELD_BALANCE, account.nonce, account.code_hash, Some(code))))
    }

    /// The account in the pre-block state, with its code where the state gives it along.
    fn pre_block(&self, address: Address) -> Result<PreBlock, ViewError> {
        Ok(match self.base.basic_ref(address)? {
            Some(info) => (Some(AccountValue { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash }), info.code),
            None => (None, None),
        })
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

    /// Reads the account at `address` through the multi-version memory, applying lazy deltas,
    /// without recording the read. `pre_block` is the pre-block account where the caller already
    /// looked it up.
    fn read_account(&self, address: Address, pre_block: Option<PreBlock>) -> Result<AccountRead, ViewError> {
        let location = Location::Account(address);
        let resolved = self.mv.read(&location, self.tx).map_err(ViewError::Blocked)?;
        let (mut account, mut code) = match resolved.absolute {
            Some(Value::Account(value)) => (value, None),
            _ => match pre_block {
                Some(pre_block) => pre_block,
                None => self.pre_block(address)?,
            },
        };
        for delta in &resolved.deltas {
            // A failed check gives a value no validated execution can keep: the end-of-block
            // evaluation repeats every check and falls back to sequential execution.
            account = apply_delta(account, delta, self.spec).unwrap_or(None);
        }
        if account.is_none() {
            code = None;
        }
        Ok(AccountRead { account, code, origins: resolved.origins })
    }

    /// Records an exact read of an account, for validation and for telling writes from reads.
    fn record_account_read(&mut self, address: Address, account: &Option<AccountValue>, origins: Origins) {
        if origins.as_slice() == [Origin::Base] {
            self.base_reads.push(address);
        }
        self.reads.push((Location::Account(address), Observed::Versions(origins)));
        self.read_accounts.insert(address, account.clone());
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
        let pre_block = match self.load_held(address)? {
            Loaded::Held(info) => return Ok(Some(info)),
            Loaded::Exact(pre_block) => pre_block,
        };
        let read = self.read_account(address, pre_block)?;
        self.record_account_read(address, &read.account, read.origins);
        let Some(account) = read.account else { return Ok(None) };
        // Deltas never change code, so code that came with the pre-block account still fits.
        let code = match read.code {
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
