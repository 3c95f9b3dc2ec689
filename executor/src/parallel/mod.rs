//! The parallel path: Block-STM over revm, with lazy balance updates.
//!
//! - [`mv_memory`]: per-location versions written by each transaction.
//! - [`scheduler`]: the collaborative execution/validation scheduler.
//! - [`view`]: the `Database` one transaction incarnation executes against.
//! - [`worker`]: the worker loop and the translation of revm output into write sets.
//! - [`lazy`]: the deferred beneficiary and transfer deltas and their exact evaluation.
//!
//! After the scheduler finishes, every transaction's last incarnation is validated against the
//! final versions, which makes the result that of executing the block in order. The merge then
//! takes, per location, the last absolute write, and folds lazy deltas over it in block order.

pub mod lazy;
pub mod mv_memory;
pub mod scheduler;
pub mod view;
pub mod worker;

use crate::{
    block::{check_block_limits, tx_blob_gas, BlockInput, InvalidTxPolicy, TxPhase},
    error::BlockError,
    overlay::{BlockOverlay, OverlayAccount},
    receipt::TxReceipt,
    state::StateSource,
};
use alloy_primitives::{map::HashMap, Address, U256};
use mv_memory::{AccountValue, Location, MvMemory, Value};
use parking_lot::Mutex;
use revm::{
    context::{
        result::{ExecutionResult, HaltReason, InvalidTransaction},
        TxEnv,
    },
    database::DatabaseRef,
    state::AccountInfo,
};
use std::{collections::HashSet, num::NonZeroUsize};
use worker::{Halt, Shared};

/// Index of a transaction in the block.
pub type TxIdx = usize;
/// How many times a transaction has been re-executed.
pub type Incarnation = u32;

/// Why a parallel run handed the block to the sequential path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// A transaction destroyed an account that existed before it (pre-Cancun SELFDESTRUCT).
    SelfDestruct,
    /// A lazy transfer's checks (nonce, balance, no code) failed in block order.
    LazyCheckFailed,
}

/// The last validated result of one transaction.
#[derive(Debug, Clone)]
pub enum TxOutcome {
    /// It executed; `cleared` lists accounts whose old storage it wiped (created, destroyed or
    /// deleted as empty).
    Executed {
        /// revm's result.
        result: ExecutionResult<HaltReason>,
        /// Accounts whose storage from before the transaction is gone.
        cleared: Vec<Address>,
    },
    /// It is invalid against the state it ran on.
    Invalid(InvalidTransaction),
}

/// What a parallel run produced.
pub enum ParallelOutcome {
    /// The block's transaction phase, ready to apply to the overlay.
    Done(ParallelResult),
    /// Block-STM could not produce an exact result: run the block sequentially.
    Fallback(FallbackReason),
}

/// The merged result of a parallel run, not yet applied to the overlay.
pub struct ParallelResult {
    phase: TxPhase,
    accounts: HashMap<Address, OverlayAccount>,
}

impl ParallelResult {
    /// Writes the merged accounts into the overlay the run read from.
    pub(crate) fn apply<S: StateSource>(self, overlay: &mut BlockOverlay<'_, S>) -> Result<TxPhase, BlockError> {
        for (address, account) in self.accounts {
            overlay.set_account(address, account);
        }
        Ok(self.phase)
    }
}

/// Executes `txs` with Block-STM on `threads` threads over `base` (the pre-block overlay).
pub(crate) fn execute_transactions<S: StateSource>(
    base: &BlockOverlay<'_, S>,
    input: &BlockInput,
    txs: &[TxEnv],
    threads: NonZeroUsize,
    policy: InvalidTxPolicy,
) -> Result<ParallelOutcome, BlockError> {
    let beneficiary = input.block.beneficiary;
    let mv = MvMemory::new(txs.len(), &[Location::Account(beneficiary)]);
    let scheduler = scheduler::Scheduler::new(txs.len());
    let outcomes: Vec<Mutex<Option<TxOutcome>>> = (0..txs.len()).map(|_| Mutex::new(None)).collect();
    let halt = Mutex::new(None);
    let shared = Shared { base, input, txs, mv: &mv, scheduler: &scheduler, outcomes: &outcomes, halt: &halt };
    let workers = threads.get().min(txs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(|| worker::run(&shared));
        }
        worker::run(&shared);
    });
    match halt.into_inner() {
        Some(Halt::Fallback(reason)) => return Ok(ParallelOutcome::Fallback(reason)),
        Some(Halt::Error(error)) => return Err(error),
        None => {}
    }

    // The transaction phase in block order: limits, invalid transactions, receipts. Under
    // `Reject` the first problem ends the phase; it is reported only after the lazy updates below
    // it have been checked, since a failing lazy check means sequential execution would have
    // stopped earlier.
    let mut phase = TxPhase::default();
    let mut cut = txs.len();
    let mut rejection: Option<BlockError> = None;
    let mut cleared: HashSet<Address> = HashSet::new();
    for (index, (tx, outcome)) in txs.iter().zip(outcomes).enumerate() {
        if let Err(error) = check_block_limits(input, index, tx, phase.gas_used, phase.blob_gas_used) {
            cut = index;
            if policy == InvalidTxPolicy::Reject {
                rejection = Some(error);
            }
            break;
        }
        match outcome.into_inner() {
            Some(TxOutcome::Executed { result, cleared: wiped }) => {
                cleared.extend(wiped);
                let gas_used = result.tx_gas_used();
                phase.gas_used += gas_used;
                phase.blob_gas_used += tx_blob_gas(tx);
                phase.included.push(index);
                phase.receipts.push(TxReceipt {
                    tx_type: tx.tx_type,
                    success: result.is_success(),
                    gas_used,
                    cumulative_gas_used: phase.gas_used,
                    logs: result.into_logs(),
                    post_state: None,
                });
            }
            Some(TxOutcome::Invalid(reason)) => match policy {
                InvalidTxPolicy::Reject => {
                    cut = index;
                    rejection = Some(BlockError::InvalidTransaction { index, reason });
                    break;
                }
                InvalidTxPolicy::Skip => phase.skipped.push((index, reason.to_string())),
            },
            None => return Err(BlockError::Evm(format!("transaction {index} has no result after the parallel run"))),
        }
    }

    // Merge: per location, the last absolute write, with lazy deltas folded over it.
    let spec = input.cfg.spec;
    let (writes, codes) = mv.into_parts(cut);
    let mut accounts: HashMap<Address, OverlayAccount> = HashMap::default();
    let mut storage: Vec<(Address, U256, U256)> = Vec::new();
    for (location, entries) in writes {
        match location {
            Location::Storage(address, slot) => {
                if let Some((_, Value::Storage(value))) = entries.last() {
                    storage.push((address, slot, *value));
                }
            }
            Location::Account(address) => {
                let base_value = base.basic_ref(address)?.map(|i| AccountValue { balance: i.balance, nonce: i.nonce, code_hash: i.code_hash });
                let Ok((value, vanished)) = lazy::evaluate(base_value, entries.iter().map(|(_, v)| v), spec) else {
                    return Ok(ParallelOutcome::Fallback(FallbackReason::LazyCheckFailed));
                };
                let info = value.map(|v| {
                    let code = if v.code_hash == revm::primitives::KECCAK_EMPTY {
                        None
                    } else {
                        codes.get(&v.code_hash).map(|c| c.clone()).or_else(|| base.code_by_hash_ref(v.code_hash).ok())
                    };
                    AccountInfo { balance: v.balance, nonce: v.nonce, code_hash: v.code_hash, code, ..Default::default() }
                });
                let entry = accounts.entry(address).or_default();
                entry.info = info;
                entry.storage_cleared |= vanished;
            }
        }
    }
    if let Some(error) = rejection {
        return Err(error);
    }
    for address in cleared {
        if !accounts.contains_key(&address) {
            // Cleared without a surviving account write (its fields did not change).
            let info = base.basic_ref(address)?;
            accounts.insert(address, OverlayAccount { info, ..Default::default() });
        }
        if let Some(account) = accounts.get_mut(&address) {
            account.storage_cleared = true;
        }
    }
    for (address, slot, value) in storage {
        if !accounts.contains_key(&address) {
            let info = base.basic_ref(address)?;
            accounts.insert(address, OverlayAccount { info, ..Default::default() });
        }
        if let Some(entry) = accounts.get_mut(&address) {
            entry.storage.insert(slot, value);
        }
    }
    // The overlay may already hold pre-block writes (system calls) to these accounts: keep their
    // storage unless this block's transactions wiped it.
    for (address, account) in accounts.iter_mut() {
        if let Some(previous) = base.account(address) {
            if !account.storage_cleared {
                for (slot, value) in &previous.storage {
                    account.storage.entry(*slot).or_insert(*value);
                }
                account.storage_cleared = previous.storage_cleared;
            }
        }
    }
    Ok(ParallelOutcome::Done(ParallelResult { phase, accounts }))
}
