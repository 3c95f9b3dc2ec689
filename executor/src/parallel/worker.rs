//! One worker thread: takes tasks from the scheduler, executes transactions on its own reused
//! EVM over a [`VersionedView`], turns revm's output into a write set, and validates.

use super::{
    mv_memory::{AccountValue, Debit, Location, MvMemory, Observed, Value},
    scheduler::{Scheduler, Task},
    tokens,
    view::{LazyTokenCredit, LazyTransfer, VersionedView, ViewError, HELD_BALANCE},
    FallbackReason, Incarnation, TxIdx, TxOutcome,
};
use crate::{
    block::{BlockInput, Techniques},
    evm::{build_evm, DeferredFeeHandler, PseqEvm},
    overlay::Fields,
    state::StateSource,
};
use alloy_primitives::{Address, TxKind, U256};
use parking_lot::Mutex;
use revm::{
    context::{
        result::{EVMError, InvalidTransaction},
        ContextSetters, Transaction, TxEnv,
    },
    context_interface::{ContextTr, JournalTr},
    handler::Handler,
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
};

/// What stops a whole parallel run.
#[derive(Debug, Clone)]
pub enum Halt {
    /// Block-STM cannot produce this block exactly: run it sequentially.
    Fallback(FallbackReason),
    /// A state read failed or the EVM failed internally: the block cannot be executed.
    Error(crate::BlockError),
}

/// Shared state of one parallel run.
pub struct Shared<'a, S> {
    /// The pre-block state (the overlay after the pre-block rules).
    pub base: &'a S,
    /// The block's environment and rules.
    pub input: &'a BlockInput,
    /// The block's transactions.
    pub txs: &'a [TxEnv],
    /// The multi-version memory.
    pub mv: &'a MvMemory,
    /// The task scheduler.
    pub scheduler: &'a Scheduler,
    /// The last outcome of each transaction.
    pub outcomes: &'a [Mutex<Option<TxOutcome>>],
    /// Why the run stopped early, if it did.
    pub halt: &'a Mutex<Option<Halt>>,
    /// Stop with [`FallbackReason::Contention`] when conflicts waste too many executions.
    pub give_up_on_contention: bool,
    /// The refinements of Block-STM this run uses.
    pub techniques: Techniques,
}

/// Executions counted before the contention rule may stop a run.
pub const CONTENTION_SAMPLE: usize = 64;

/// Whether conflicts wasted more than nine executions in twenty (aborted incarnations plus
/// executions stopped on a dependency), once [`CONTENTION_SAMPLE`] executions have run.
///
/// Chosen from measurement (docs/benchmarks.md, "Giving up on contention"): ERC-20 transfers to
/// one holder waste more, blocks of independent transactions nothing; a lower bound (one in
/// four, two in five) also stopped mainnet blocks that Block-STM still ran faster than
/// sequential execution, and stopping half-way costs the partial run on top.
fn too_contended<S>(shared: &Shared<'_, S>) -> bool {
    if !shared.give_up_on_contention {
        return false;
    }
    let stats = &shared.scheduler.stats;
    let executions = stats.executions.load(std::sync::atomic::Ordering::Relaxed);
    if executions < CONTENTION_SAMPLE {
        return false;
    }
    let wasted = stats.aborts.load(std::sync::atomic::Ordering::Relaxed) + stats.dependencies.load(std::sync::atomic::Ordering::Relaxed);
    wasted * 20 > executions * 9
}

enum ExecOutcome {
    Done(TxOutcome, Vec<(Location, Value)>),
    Blocked(TxIdx),
}

/// Runs tasks as worker `worker` (from 0; see [`Scheduler::next_task`]) until the scheduler is
/// done or the run is halted.
pub fn run<S: StateSource>(shared: &Shared<'_, S>, worker: usize) {
    let _epoch = shared.mv.hold();
    let spec = shared.input.cfg.spec;
    let view = VersionedView::new(shared.base, shared.mv, spec);
    let mut evm = build_evm(view, shared.input.cfg.clone(), shared.input.block.clone());
    if shared.techniques.contains(Techniques::HELD_BALANCES) {
        super::held::install_hooks(&mut evm);
    }
    let mut task: Option<Task> = None;
    let mut idle_spins = 0u32;
    while !shared.scheduler.is_done() {
        let current = match task.take().or_else(|| shared.scheduler.next_task(worker)) {
            Some(current) => current,
            None => {
                idle_spins += 1;
                if idle_spins > 64 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
        };
        idle_spins = 0;
        task = match current {
            Task::Execute(tx, incarnation) => execute(shared, &mut evm, tx, incarnation),
            Task::Validate(tx, incarnation) => validate(shared, tx, incarnation),
        };
    }
}

fn halt<S>(shared: &Shared<'_, S>, reason: Halt) {
    let mut halt = shared.halt.lock();
    if halt.is_none() {
        *halt = Some(reason);
    }
    shared.scheduler.halt();
}

fn execute<S: StateSource>(
    shared: &Shared<'_, S>,
    evm: &mut PseqEvm<VersionedView<'_, S>>,
    tx: TxIdx,
    incarnation: Incarnation,
) -> Option<Task> {
    loop {
        shared.scheduler.stats.executions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match execute_once(shared, evm, tx) {
            Ok(ExecOutcome::Done(outcome, writes)) => {
                let reads = std::mem::take(&mut evm.ctx.journaled_state.database.reads);
                let wrote_new = shared.mv.record(tx, incarnation, reads, writes);
                *shared.outcomes[tx].lock() = Some(outcome);
                return shared.scheduler.finish_execution(tx, incarnation, wrote_new);
            }
            Ok(ExecOutcome::Blocked(blocking)) => {
                if shared.scheduler.add_dependency(tx, blocking) {
                    shared.scheduler.stats.dependencies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if too_contended(shared) {
                        halt(shared, Halt::Fallback(FallbackReason::Contention));
                    }
                    return None;
                }
                // The blocking transaction finished meanwhile: execute again at once.
            }
            Err(reason) => {
                halt(shared, reason);
                return None;
            }
        }
    }
}

fn validate<S>(shared: &Shared<'_, S>, tx: TxIdx, incarnation: Incarnation) -> Option<Task> {
    let valid = shared.mv.validate_reads(tx);
    let aborted = !valid && shared.scheduler.try_validation_abort(tx, incarnation);
    shared.scheduler.stats.validations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if aborted {
        shared.scheduler.stats.aborts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.mv.convert_writes_to_estimates(tx);
        if too_contended(shared) {
            halt(shared, Halt::Fallback(FallbackReason::Contention));
            return None;
        }
    }
    shared.scheduler.finish_validation(tx, aborted)
}

/// Whether `tx` can run as a lazy plain transfer: a call to another account without code that
/// is not the beneficiary, from a sender without code, where one side was already written in
/// this block (a location written only once is cheaper to read than to evaluate at the end).
fn lazy_transfer<S: StateSource>(
    shared: &Shared<'_, S>,
    view: &VersionedView<'_, S>,
    tx_idx: TxIdx,
    tx: &TxEnv,
) -> Result<Option<LazyTransfer>, crate::StateError> {
    let TxKind::Call(recipient) = tx.kind else { return Ok(None) };
    let sender = tx.caller;
    let beneficiary = shared.input.block.beneficiary;
    if recipient == sender || recipient == beneficiary || sender == beneficiary || !tx.authorization_list.is_empty() {
        return Ok(None);
    }
    // Precompiles and system addresses have no code but run something when called.
    if super::lazy::is_special_address(&recipient) {
        return Ok(None);
    }
    if !shared.mv.has_writes(&Location::Account(sender)) && !shared.mv.has_writes(&Location::Account(recipient)) {
        return Ok(None);
    }
    // Code deployed by a lower transaction counts too (a contract created earlier in the block,
    // then paid): a lazy transfer to it would fail its check in block order and send the whole
    // block to the sequential path.
    for address in [recipient, sender] {
        if view.peek_has_code(address, tx_idx)? {
            return Ok(None);
        }
    }
    Ok(Some(LazyTransfer { sender, recipient, nonce: tx.nonce }))
}

/// Whether `tx` can run as a lazy ERC-20 credit: a well-formed `transfer` call to a contract
/// whose code is in [`tokens::KNOWN_TOKENS`] (and that no transaction of this block changed),
/// paying another account that an earlier execution of this block already paid in this token,
/// and whose balance slot was already written (otherwise the exact read costs nothing in
/// conflicts).
fn lazy_token_credit<S: StateSource>(
    shared: &Shared<'_, S>,
    view: &mut VersionedView<'_, S>,
    tx: &TxEnv,
) -> Result<Option<LazyTokenCredit>, crate::StateError> {
    let TxKind::Call(token) = tx.kind else { return Ok(None) };
    let Some((recipient, amount)) = tokens::decode_transfer(&tx.data) else { return Ok(None) };
    if recipient == tx.caller || shared.mv.code_changed.contains_key(&token) {
        return Ok(None);
    }
    let balances_slot = match view.token_kinds.get(&token) {
        Some(kind) => *kind,
        None => {
            let code_hash = shared.base.basic_ref(token)?.map(|info| info.code_hash);
            let kind = code_hash.and_then(|hash| tokens::known_token(&hash)).map(|known| known.balances_slot);
            view.token_kinds.insert(token, kind);
            kind
        }
    };
    let Some(balances_slot) = balances_slot else { return Ok(None) };
    // The first transfer to a recipient reads its balance exactly, without hashing its slot.
    if !shared.mv.seen_transfer_recipient(&token, &recipient) {
        return Ok(None);
    }
    let slot = tokens::balance_slot(recipient, balances_slot);
    if !shared.mv.has_writes(&Location::Storage(token, slot)) {
        return Ok(None);
    }
    Ok(Some(LazyTokenCredit { token, slot, amount }))
}

fn execute_once<S: StateSource>(
    shared: &Shared<'_, S>,
    evm: &mut PseqEvm<VersionedView<'_, S>>,
    tx_idx: TxIdx,
) -> Result<ExecOutcome, Halt> {
    let tx = &shared.txs[tx_idx];
    let lazy = lazy_transfer(shared, &evm.ctx.journaled_state.database, tx_idx, tx).map_err(|e| Halt::Error(e.into()))?;
    let credit = if lazy.is_none() && shared.techniques.contains(Techniques::LAZY_TOKEN_CREDITS) { lazy_token_credit(shared, &mut evm.ctx.journaled_state.database, tx).map_err(|e| Halt::Error(e.into()))? } else { None };
    match execute_with(shared, evm, tx_idx, lazy, credit)? {
        // The credit's write was not the recipient's balance plus the amount (a token charging a
        // fee, say): execute again with an exact read.
        None => execute_with(shared, evm, tx_idx, lazy, None)?.ok_or_else(|| Halt::Error(crate::BlockError::Evm("exact execution produced a lazy credit".into()))),
        Some(outcome) => Ok(outcome),
    }
}

/// Executes `tx_idx` once; `None` when the lazy credit does not apply to what it did.
fn execute_with<S: StateSource>(
    shared: &Shared<'_, S>,
    evm: &mut PseqEvm<VersionedView<'_, S>>,
    tx_idx: TxIdx,
    lazy: Option<LazyTransfer>,
    credit: Option<LazyTokenCredit>,
) -> Result<Option<ExecOutcome>, Halt> {
    let tx = &shared.txs[tx_idx];
    let beneficiary = shared.input.block.beneficiary;
    let holds = shared.techniques.contains(Techniques::HELD_BALANCES) && lazy.is_none() && tx.authorization_list.is_empty();
    evm.ctx.journaled_state.database.reset(tx_idx, lazy, credit, holds.then_some(tx.caller));
    evm.ctx.set_tx(tx.clone());
    let result = DeferredFeeHandler::<_, EVMError<ViewError>>::default().run(evm);
    let state = evm.ctx.journal_mut().finalize();
    let result = match result {
        Ok(result) => result,
        Err(EVMError::Database(ViewError::Blocked(blocking))) => return Ok(Some(ExecOutcome::Blocked(blocking))),
        Err(EVMError::Database(ViewError::State(error))) => return Err(Halt::Error(error.into())),
        Err(EVMError::Database(ViewError::HeldBalanceOverflow)) => return Err(Halt::Fallback(FallbackReason::LazyCheckFailed)),
        Err(EVMError::Transaction(reason)) => {
            // Too high a nonce while a lower transaction of the same sender has not executed yet:
            // the two ran side by side. This one waits for it instead of being recorded invalid
            // and aborted at validation.
            if shared.techniques.contains(Techniques::NONCE_WAITS) && matches!(reason, InvalidTransaction::NonceTooHigh { .. }) {
                if let Some(lower) = nonce_wait(shared, &evm.ctx.journaled_state.database, tx_idx) {
                    return Ok(Some(ExecOutcome::Blocked(lower)));
                }
            }
            return Ok(Some(ExecOutcome::Done(TxOutcome::Invalid(reason), Vec::new())));
        }
        Err(other) => return Err(Halt::Error(crate::BlockError::Evm(other.to_string()))),
    };

    let spec = shared.input.cfg.spec;
    let clear_empty = spec.is_enabled_in(SpecId::SPURIOUS_DRAGON);
    let gas_used = result.tx_gas_used();
    let reward = fee_reward(shared.input, tx, gas_used);
    let view = &evm.ctx.journaled_state.database;
    let mut writes = Vec::with_capacity(state.len() + 2);
    let mut cleared: Vec<Address> = Vec::new();
    let mut base_fields: Vec<(Address, Option<Fields>)> = Vec::new();
    let mut paid_beneficiary = false;

    for (address, mut account) in state {
        if let Some(lazy) = lazy {
            if address == lazy.sender {
                let amount = U256::MAX - account.info.balance;
                let required = tx.max_balance_spending().map_err(|e| Halt::Error(crate::BlockError::Evm(e.to_string())))?;
                writes.push((Location::Account(address), Value::Debit(Debit { amount, required, nonce: lazy.nonce })));
                continue;
            }
            if address == lazy.recipient {
                if account.is_touched() {
                    writes.push((Location::Account(address), Value::Credit { amount: account.info.balance, no_code: true }));
                }
                continue;
            }
        }
        if account.is_touched() && view.held.contains(&address) {
            // Still held: the instructions that could have lowered the balance, changed the nonce
            // or destroyed the account release it first, and creating at its address collides (it
            // has code or a nonce). What it received is a credit, and the beneficiary's fee joins it.
            let credited = account.info.balance.checked_sub(HELD_BALANCE).filter(|_| !account.is_selfdestructed() && !account.is_created());
            let Some(credited) = credited else {
                return Err(Halt::Error(crate::BlockError::Evm(format!("held account {address} of transaction {tx_idx} lost balance, was destroyed or was created"))));
            };
            let amount = if address == beneficiary {
                paid_beneficiary = true;
                credited.saturating_add(reward)
            } else {
                credited
            };
            if !amount.is_zero() || address == beneficiary {
                writes.push((Location::Account(address), Value::Credit { amount, no_code: false }));
                shared.scheduler.stats.held_credits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if !storage_writes(shared, view, &mut writes, address, &account, credit) {
                return Ok(None);
            }
            continue;
        }
        if address == beneficiary {
            if !account.is_touched() {
                continue;
            }
            // The transaction changed the beneficiary itself: its fee joins that absolute write,
            // exactly where revm's own reward would have added it.
            account.info.balance = account.info.balance.saturating_add(reward);
            paid_beneficiary = true;
        }
        if !account.is_touched() {
            continue;
        }
        let read = view.read_accounts.get(&address);
        let new_value = if account.is_selfdestructed() {
            if !account.is_created() {
                // Destroying an account that existed before this transaction wipes its storage
                // for every later transaction: a wipe entry that slot reads see (mv_memory).
                writes.push((Location::StorageWipe(address), Value::Storage(U256::ZERO)));
                shared.scheduler.stats.storage_wipes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            cleared.push(address);
            None
        } else if clear_empty && account.is_empty() {
            cleared.push(address);
            None
        } else {
            if account.is_created() {
                cleared.push(address);
            }
            let code_before = read.map(|read| read.as_ref().map_or(KECCAK_EMPTY, |r| r.code_hash));
            if account.is_created() || code_before.is_some_and(|before| before != account.info.code_hash) {
                shared.mv.code_changed.insert(address, ());
            }
            if let Some(code) = &account.info.code {
                if account.info.code_hash != KECCAK_EMPTY && !shared.mv.codes.contains_key(&account.info.code_hash) {
                    shared.mv.codes.insert(account.info.code_hash, code.clone());
                }
            }
            Some(AccountValue { balance: account.info.balance, nonce: account.info.nonce, code_hash: account.info.code_hash })
        };
        let unchanged = read.is_some_and(|read| *read == new_value);
        if !unchanged || address == beneficiary {
            let value = match (&new_value, read) {
                // Held, then read exactly, and only its balance changed: a delta, which readers
                // holding the balance above it walk past.
                (Some(new), Some(Some(old))) if view.released.contains(&address) && new.nonce == old.nonce && new.code_hash == old.code_hash => {
                    Value::Rebalance { before: old.balance, after: new.balance }
                }
                _ => {
                    if view.base_reads.contains(&address) {
                        let before = read.and_then(|read| read.as_ref()).map(Fields::from);
                        base_fields.push((address, before));
                    }
                    Value::Account(new_value.clone())
                }
            };
            writes.push((Location::Account(address), value));
        }
        if new_value.is_some() && !storage_writes(shared, view, &mut writes, address, &account, credit) {
            return Ok(None);
        }
    }
    if !paid_beneficiary {
        writes.push((Location::Account(beneficiary), Value::Credit { amount: reward, no_code: false }));
    }
    Ok(Some(ExecOutcome::Done(TxOutcome::Executed { result, cleared, base_fields }, writes)))
}

/// Adds the storage slots `account` changed to `writes`; the lazily credited slot becomes a
/// delta. `false` when that slot's write is not the transfer the credit assumes (the transaction
/// must run again with an exact read).
fn storage_writes<S>(
    shared: &Shared<'_, S>,
    view: &VersionedView<'_, S>,
    writes: &mut Vec<(Location, Value)>,
    address: Address,
    account: &revm::state::Account,
    credit: Option<LazyTokenCredit>,
) -> bool {
    for (slot, value) in account.changed_storage_slots() {
        if let Some(credit) = credit.filter(|credit| credit.token == address && credit.slot == *slot) {
            // The recipient's balance became what the EVM was given plus the amount: a
            // delta. Anything else is not the transfer the credit assumes.
            let given = view.credit_base;
            let Some(given) = given.filter(|given| value.present_value.checked_sub(*given) == Some(credit.amount)) else { return false };
            writes.push((Location::Storage(address, *slot), Value::StorageAdd { amount: credit.amount, was_nonzero: !given.is_zero() }));
            shared.scheduler.stats.lazy_token_credits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        writes.push((Location::Storage(address, *slot), Value::Storage(value.present_value)));
    }
    true
}

/// How far below a transaction whose nonce is too high its sender's previous transaction is
/// looked for.
pub const NONCE_WAIT_WINDOW: usize = 1024;

/// What an execution of `tx_idx` that found its sender's nonce too high waits for: the nearest
/// lower transaction of the same sender, where that one has not executed yet, or has executed
/// since this execution read the sender (the read is stale: the wait ends at once and the
/// transaction runs again). `None` where the nonce is too high against the current state: the
/// transaction is recorded invalid, as sequentially, and validation catches any later change.
/// A retry needs a new write below since the read, so the retries end. The lower transaction is
/// looked for among the [`NONCE_WAIT_WINDOW`] below: a block of transactions invalid for their
/// nonces costs no quadratic scan, and one found farther down is validated as usual.
fn nonce_wait<S: StateSource>(shared: &Shared<'_, S>, view: &VersionedView<'_, S>, tx_idx: TxIdx) -> Option<TxIdx> {
    let sender = shared.txs[tx_idx].caller;
    let floor = tx_idx.saturating_sub(NONCE_WAIT_WINDOW);
    let lower = floor + shared.txs[floor..tx_idx].iter().rposition(|tx| tx.caller == sender)?;
    if !shared.scheduler.has_executed(lower) {
        return Some(lower);
    }
    let location = Location::Account(sender);
    let Some((_, Observed::Versions(seen))) = view.reads.iter().find(|(read, _)| *read == location) else { return None };
    let now = shared.mv.read(&location, tx_idx).ok()?;
    (now.origins != *seen).then_some(lower)
}

/// The fee the beneficiary receives for a transaction, as revm's mainnet handler computes it.
pub(crate) fn fee_reward(input: &BlockInput, tx: &TxEnv, gas_used: u64) -> U256 {
    let basefee = input.block.basefee as u128;
    let effective = tx.effective_gas_price(basefee);
    let price = if input.cfg.spec.is_enabled_in(SpecId::LONDON) { effective.saturating_sub(basefee) } else { effective };
    U256::from(price) * U256::from(gas_used)
}
