//! One group of a partitioned run: its transactions executed in block order with plain revm
//! over [`GroupState`], the pre-run state plus the group's own writes, which remembers every
//! account and slot the group read or wrote.
//!
//! The block's beneficiary is paid nothing here ([`DeferredFeeHandler`]): each transaction's fee
//! is kept and folded in block order at the merge. The plan's lazy recipients are read from the
//! pre-run state every time, and what a plain transfer adds to them is kept as a credit.

use crate::{
    block::BlockInput,
    error::{BlockError, StateError},
    evm::{build_evm, DeferredFeeHandler, PseqEvm},
    overlay::{shard_of, Fields, OVERLAY_SHARDS},
    parallel::tokens,
    state::StateSource,
};
use super::plan::LazySlot;
use alloy_primitives::{
    map::{HashMap, IndexEntry, IndexMap},
    Address, TxKind, B256, U256,
};
use revm::{
    bytecode::Bytecode,
    context::{result::EVMError, ContextSetters, TxEnv},
    context_interface::{ContextTr, JournalTr},
    database::Database,
    handler::Handler,
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
    state::AccountInfo,
};

/// A storage slot a group read or wrote.
#[derive(Debug, Clone, Copy)]
pub struct GroupSlot {
    /// Its value after the group's last transaction.
    pub value: U256,
    /// Whether a transaction of the group changed it.
    pub written: bool,
}

/// An account a group read or wrote.
#[derive(Debug, Clone)]
pub struct GroupAccount {
    /// Its fields after the group's last transaction (`None`: it does not exist).
    pub info: Option<AccountInfo>,
    /// Whether a transaction of the group changed its fields, created, destroyed or deleted it.
    pub written: bool,
    /// Whether its storage from before the run is gone (created, destroyed or deleted).
    pub cleared: bool,
    /// Slots read or written.
    pub storage: HashMap<U256, GroupSlot>,
    /// Its fields when the group first read it (the block so far had them).
    pub before: Option<Fields>,
}

/// What one transaction of a group produced: as little as the block-order pass reads (it reads
/// one per transaction, and on blocks of transfers that pass was bound by memory). Its fee is
/// computed again from its gas; what it credited lazily is in the group's own lists.
#[derive(Debug)]
pub struct GroupTx {
    /// Its index in the run.
    pub index: u32,
    /// Executed or invalid.
    pub outcome: GroupOutcome,
}

/// How one transaction of a group ended.
#[derive(Debug)]
pub enum GroupOutcome {
    /// It executed: what its receipt needs.
    Executed {
        /// Gas used (after refunds).
        gas_used: u64,
        /// Whether it succeeded.
        success: bool,
        /// Its logs.
        logs: Vec<alloy_primitives::Log>,
    },
    /// It is invalid against the state it ran on.
    Invalid(Box<revm::context::result::InvalidTransaction>),
}

/// The state one group executes on, and everything it touched.
pub struct GroupState<'a, S> {
    base: &'a S,
    /// Accounts read or written, in the overlay's shards.
    pub shards: Vec<GroupShard>,
    /// Code the group deployed.
    pub codes: HashMap<B256, Bytecode>,
    lazy: &'a [Address],
    lazy_slots: &'a [LazySlot],
    /// The transaction running (index in the run).
    current: u32,
    /// The lazy slot the running transaction read, and the value it was given.
    slot_given: Option<(usize, U256)>,
    /// A lazy slot was read where its token's storage is not the pre-run one.
    slot_misused: bool,
}

impl<'a, S: StateSource> GroupState<'a, S> {

    fn lazy_slot(&self, address: &Address, slot: &U256) -> Option<usize> {
        if self.lazy_slots.is_empty() {
            return None;
        }
        self.lazy_slots.iter().position(|lazy| lazy.token == *address && lazy.slot == *slot)
    }

    fn is_lazy(&self, address: &Address) -> bool {
        !self.lazy.is_empty() && self.lazy.contains(address)
    }

    fn account(&mut self, address: Address) -> Result<&mut GroupAccount, StateError> {
        let base = self.base;
        match self.shards[shard_of(&address)].entry(address) {
            IndexEntry::Occupied(entry) => Ok(entry.into_mut()),
            IndexEntry::Vacant(entry) => {
                let info = base.basic_ref(address)?;
                let before = info.as_ref().map(Fields::of);
                Ok(entry.insert(GroupAccount { info, written: false, cleared: false, storage: HashMap::default(), before }))
            }
        }
    }
}

impl<S: StateSource> Database for GroupState<'_, S> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        if self.is_lazy(&address) {
            return self.base.basic_ref(address);
        }
        Ok(self.account(address)?.info.clone())
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        if code_hash == KECCAK_EMPTY {
            return Ok(crate::state::empty_code());
        }
        match self.codes.get(&code_hash) {
            Some(code) => Ok(code.clone()),
            None => self.base.code_by_hash_ref(code_hash),
        }
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        let base = self.base;
        if let Some(position) = self.lazy_slot(&address, &index) {
            let token = self.account(address)?;
            if token.cleared || token.info.is_none() {
                self.slot_misused = true;
            }
            let before = base.storage_ref(address, index)?;
            let given = if !before.is_zero() {
                before
            } else if self.current == self.lazy_slots[position].first {
                U256::ZERO
            } else {
                U256::from(1)
            };
            self.slot_given = Some((position, given));
            return Ok(given);
        }
        let account = self.account(address)?;
        if let Some(slot) = account.storage.get(&index) {
            return Ok(slot.value);
        }
        let value = if account.cleared || account.info.is_none() { U256::ZERO } else { base.storage_ref(address, index)? };
        account.storage.insert(index, GroupSlot { value, written: false });
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash_ref(number)
    }
}

/// One of a group's shards: the accounts it read or wrote whose addresses fall in the overlay
/// shard of the same index.
pub type GroupShard = IndexMap<Address, GroupAccount>;

/// What a group produced so far: what it touched, the code it deployed, and its transactions'
/// results. A group runs in stages ([`GroupRunner::run`]), each continuing from where the last one
/// stopped, so that the groups can be checked against each other in between.
pub struct GroupResult {
    /// Accounts read or written, in the overlay's shards.
    pub shards: Vec<GroupShard>,
    /// Code the group deployed.
    pub codes: HashMap<B256, Bytecode>,
    /// Its transactions' results, in block order.
    pub txs: Vec<GroupTx>,
    /// What its transactions added to lazy recipients' balances: the transaction's index in
    /// the run, the recipient, the amount; in block order.
    pub credits: Vec<(u32, Address, U256)>,
    /// What its transactions added to lazy token balances: the transaction's index in the run,
    /// the slot's position in the plan's list, the amount, and whether the transaction was
    /// given a non-zero value; in block order.
    pub token_credits: Vec<(u32, u32, U256, bool)>,
    /// A transaction touched a lazy recipient other than by a plain transfer to it.
    pub lazy_misused: bool,
}

impl GroupResult {
    /// A group that has run nothing yet, expecting about `txs` transactions.
    pub fn new(txs: usize) -> Self {
        let per_shard = txs * 2 / OVERLAY_SHARDS + 1;
        Self {
            shards: (0..OVERLAY_SHARDS).map(|_| IndexMap::with_capacity_and_hasher(per_shard, Default::default())).collect(),
            codes: HashMap::default(),
            txs: Vec::with_capacity(txs),
            credits: Vec::new(),
            token_credits: Vec::new(),
            lazy_misused: false,
        }
    }
}

/// The position of `(address, slot)` among the lazy slots.
fn lazy_slot_of(lazy_slots: &[LazySlot], address: &Address, slot: &U256) -> Option<usize> {
    lazy_slots.iter().position(|lazy| lazy.token == *address && lazy.slot == *slot)
}

/// Runs one group's transactions, stage after stage, on one thread, over one EVM.
pub struct GroupRunner<'a, S: StateSource> {
    evm: PseqEvm<GroupState<'a, S>>,
    input: &'a BlockInput,
    txs: &'a [TxEnv],
    results: Vec<GroupTx>,
    credits: Vec<(u32, Address, U256)>,
    token_credits: Vec<(u32, u32, U256, bool)>,
    lazy_misused: bool,
}

impl<'a, S: StateSource> GroupRunner<'a, S> {
    /// A group over `base` that has run nothing yet, expecting about `expected` transactions.
    pub fn new(base: &'a S, input: &'a BlockInput, txs: &'a [TxEnv], lazy: &'a [Address], lazy_slots: &'a [LazySlot], expected: usize) -> Self {
        let GroupResult { shards, codes, txs: results, credits, token_credits, lazy_misused } = GroupResult::new(expected);
        let state = GroupState { base, shards, codes, lazy, lazy_slots, current: 0, slot_given: None, slot_misused: false };
        Self { evm: build_evm(state, input.cfg.clone(), input.block.clone()), input, txs, results, credits, token_credits, lazy_misused }
    }

    /// Executes the group's next transactions, `indexes` into the block's, in order.
    pub fn run(&mut self, indexes: &[u32]) -> Result<(), BlockError> {
        let spec = self.input.cfg.spec;
        let clear_empty = spec.is_enabled_in(SpecId::SPURIOUS_DRAGON);
        for &index in indexes {
            let tx = &self.txs[index as usize];
            self.evm.ctx.set_tx(tx.clone());
            self.evm.ctx.journaled_state.database.current = index;
            self.evm.ctx.journaled_state.database.slot_given = None;
            let outcome = DeferredFeeHandler::<_, EVMError<StateError>>::default().run(&mut self.evm);
            let touched = self.evm.ctx.journal_mut().finalize();
            let result = match outcome {
                Ok(result) => result,
                Err(EVMError::Transaction(reason)) => {
                    self.lazy_misused |= self.evm.ctx.journaled_state.database.slot_given.is_some();
                    self.results.push(GroupTx { index, outcome: GroupOutcome::Invalid(Box::new(reason)) });
                    continue;
                }
                Err(EVMError::Database(error)) => return Err(BlockError::State(error)),
                Err(other) => return Err(BlockError::Evm(other.to_string())),
            };
            let state = &mut self.evm.ctx.journaled_state.database;
            let mut credit = None;
            let mut token_credit = None;
            let slot_given = state.slot_given;
            let lazy_slots = state.lazy_slots;
            for (address, account) in touched {
                if state.is_lazy(&address) {
                    // Only a plain transfer to it, which added to its balance and changed nothing else.
                    let before = state.base.basic_ref(address)?;
                    let (balance, nonce) = before.as_ref().map_or((U256::ZERO, 0), |info| (info.balance, info.nonce));
                    let plain = tx.kind == TxKind::Call(address) && tx.caller != address && account.is_touched() && !account.is_selfdestructed() && !account.is_created();
                    let unchanged = account.info.nonce == nonce && account.info.code_hash == KECCAK_EMPTY && before.as_ref().is_none_or(|info| info.code_hash == KECCAK_EMPTY);
                    match account.info.balance.checked_sub(balance) {
                        Some(amount) if plain && unchanged && credit.is_none() => credit = Some((address, amount)),
                        _ => self.lazy_misused = true,
                    }
                    continue;
                }
                if !account.is_touched() {
                    continue;
                }
                let entry = state.account(address)?;
                if account.is_selfdestructed() || (clear_empty && account.is_empty()) {
                    if entry.info.is_some() || account.is_created() {
                        entry.written = true;
                        entry.cleared = true;
                        entry.storage.clear();
                    }
                    entry.info = None;
                    continue;
                }
                if account.is_created() {
                    entry.written = true;
                    entry.cleared = true;
                    entry.storage.clear();
                }
                let code_before = entry.info.as_ref().map(|info| info.code_hash);
                let same = entry.info.as_ref().is_some_and(|info| info.balance == account.info.balance && info.nonce == account.info.nonce && info.code_hash == account.info.code_hash);
                entry.written |= !same;
                for (slot, value) in account.changed_storage_slots() {
                    if let Some(position) = lazy_slot_of(lazy_slots, &address, slot) {
                        // A `transfer` to the holder: the slot became the given value plus the
                        // amount. Anything else is not the credit the plan assumed.
                        let lazy = lazy_slots[position];
                        let paid = tokens::decode_transfer(&tx.data).filter(|(holder, _)| *holder == lazy.holder && tx.kind == TxKind::Call(address));
                        match (paid, slot_given) {
                            (Some((_, amount)), Some((read, given))) if read == position && given.checked_add(amount) == Some(value.present_value) => {
                                token_credit = Some((position as u32, amount, !given.is_zero()));
                            }
                            _ => self.lazy_misused = true,
                        }
                        continue;
                    }
                    entry.storage.insert(*slot, GroupSlot { value: value.present_value, written: true });
                }
                let mut info = account.info;
                info.account_id = None;
                let new_code = (info.code_hash != KECCAK_EMPTY && code_before != Some(info.code_hash)).then(|| info.code.clone().map(|code| (info.code_hash, code))).flatten();
                entry.info = Some(info);
                if let Some((hash, code)) = new_code {
                    state.codes.entry(hash).or_insert(code);
                }
            }
            // A lazy slot read without being credited: the transaction used the balance itself.
            if slot_given.is_some() && token_credit.is_none() {
                self.lazy_misused = true;
            }
            self.lazy_misused |= self.evm.ctx.journaled_state.database.slot_misused;
            if let Some((address, amount)) = credit {
                self.credits.push((index, address, amount));
            }
            if let Some((position, amount, was_nonzero)) = token_credit {
                self.token_credits.push((index, position, amount, was_nonzero));
            }
            let (gas_used, success) = (result.tx_gas_used(), result.is_success());
            self.results.push(GroupTx { index, outcome: GroupOutcome::Executed { gas_used, success, logs: result.into_logs() } });
        }
        Ok(())
    }

    /// Moves what the group produced so far out (for a check), leaving the runner empty until
    /// [`GroupRunner::restore`].
    pub fn lend(&mut self) -> GroupResult {
        let state = &mut self.evm.ctx.journaled_state.database;
        GroupResult {
            shards: std::mem::take(&mut state.shards),
            codes: std::mem::take(&mut state.codes),
            txs: std::mem::take(&mut self.results),
            credits: std::mem::take(&mut self.credits),
            token_credits: std::mem::take(&mut self.token_credits),
            lazy_misused: self.lazy_misused,
        }
    }

    /// Puts back what [`GroupRunner::lend`] moved out.
    pub fn restore(&mut self, group: GroupResult) {
        let state = &mut self.evm.ctx.journaled_state.database;
        state.shards = group.shards;
        state.codes = group.codes;
        self.results = group.txs;
        self.credits = group.credits;
        self.token_credits = group.token_credits;
    }
}
