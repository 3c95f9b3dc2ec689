//! The parallel path: Block-STM over revm, with lazy balance updates.
//!
//! - [`mv_memory`]: per-location versions written by each transaction.
//! - [`scheduler`]: the collaborative execution/validation scheduler.
//! - [`view`]: the `Database` one transaction incarnation executes against.
//! - [`worker`]: the worker loop and the translation of revm output into write sets.
//! - [`lazy`]: the deferred beneficiary and transfer deltas and their exact evaluation.
//! - [`tokens`]: the ERC-20 contracts whose transfers credit the recipient lazily.
//! - [`held`]: balances of accounts that cannot be empty, read only when the EVM looks at them.
//! - [`hoist`]: heavy transactions late in the block, started ahead of the block order.
//!
//! When the scheduler finishes, every transaction's last incarnation has been validated after
//! its execution, and again whenever a lower transaction wrote a location it had not written
//! before (or wrote absolute where it had written a delta), which makes the result that of
//! executing the block in order. The merge then takes, per location, the last absolute write,
//! and folds lazy deltas over it in block order, checking each.

pub mod held;
pub mod hoist;
pub mod lazy;
pub mod mv_memory;
pub mod scheduler;
pub mod tokens;
pub mod view;
pub mod worker;

use crate::{
    block::{check_block_limits, BlockInput, ChunkStart, InvalidTxPolicy, Techniques, TxPhase},
    error::BlockError,
    overlay::{BlockOverlay, Fields, ShardWriter},
    state::StateSource,
};
use alloy_primitives::{map::HashMap, Address, B256};
use mv_memory::{AccountValue, Location, MvMemory, Value};
use parking_lot::Mutex;
use revm::{
    bytecode::Bytecode,
    context::{
        result::{ExecutionResult, HaltReason, InvalidTransaction},
        TxEnv,
    },
    state::AccountInfo,
};
use std::num::NonZeroUsize;
use worker::{Halt, Shared};
pub(crate) use worker::fee_reward;

/// Index of a transaction in the block.
pub type TxIdx = usize;
/// How many times a transaction has been re-executed.
pub type Incarnation = u32;

/// Why a parallel run handed the block to the sequential path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// A lazy transfer's checks (nonce, balance, no code) failed in block order.
    LazyCheckFailed,
    /// Too many executions were wasted on conflicts (aborted, or stopped on a dependency): the
    /// transactions form chains, and sequential execution is faster. Only on the default path
    /// (see [`crate::ExecutionMode::Parallel`]'s `force`).
    Contention,
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
        /// Accounts it wrote whole after reading them as the block's base state has them, with
        /// the fields it read (`None`: no account). Where the merge writes one first, these are
        /// its fields before the block, and the diff need not look them up again.
        base_fields: Vec<(Address, Option<Fields>)>,
    },
    /// It is invalid against the state it ran on.
    Invalid(InvalidTransaction),
}

/// What a parallel run produced.
pub enum ParallelOutcome {
    /// The block's transaction phase; its writes are in the overlay.
    Done(ParallelResult),
    /// Block-STM could not produce an exact result: rebuild the overlay, run the block
    /// sequentially.
    Fallback(FallbackReason),
}

/// The result of a parallel run, already merged into the overlay.
pub struct ParallelResult {
    pub(crate) phase: TxPhase,
    /// Counters of the run.
    pub stats: ParallelStats,
}

/// What a parallel run did, beyond its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParallelStats {
    /// Incarnations executed.
    pub executions: usize,
    /// Validations run.
    pub validations: usize,
    /// Incarnations aborted by validation.
    pub aborts: usize,
    /// Executions parked on a dependency.
    pub dependencies: usize,
    /// Executions that destroyed an account existing before them (pre-Cancun SELFDESTRUCT).
    pub storage_wipes: usize,
    /// Executions that credited an ERC-20 recipient's balance as a delta ([`tokens`]).
    pub lazy_token_credits: usize,
    /// Executions that credited an account whose balance they held ([`held`]).
    pub held_credits: usize,
    /// Microseconds the workers ran (execution and validation).
    pub run_us: u64,
    /// Microseconds of the serial merge after the run.
    pub merge_us: u64,
}

/// Write sets with fewer writes than this are merged on one thread.
const MIN_PARALLEL_MERGE_WRITES: usize = 512;

/// An account's fields with its code, from the code the block deployed or the pre-block state.
fn account_info<S: StateSource>(value: &AccountValue, codes: &HashMap<B256, Bytecode>, base: &S) -> Result<AccountInfo, BlockError> {
    let code = if value.code_hash == revm::primitives::KECCAK_EMPTY {
        None
    } else {
        match codes.get(&value.code_hash) {
            Some(code) => Some(code.clone()),
            None => Some(base.code_by_hash_ref(value.code_hash)?),
        }
    };
    Ok(crate::state::account_info(value.balance, value.nonce, value.code_hash, code))
}

/// Replays the write sets of the transactions into the accounts `writer` owns, in block order.
/// `Ok(false)` when a lazy update's checks fail (the block must run sequentially).
fn merge_shards<S: StateSource>(
    writer: &mut ShardWriter<'_, S>,
    codes: &HashMap<B256, Bytecode>,
    write_sets: &[mv_memory::WriteSet],
    cleared: &[Vec<Address>],
    base_fields: &[Vec<(Address, Option<Fields>)>],
    spec: revm::primitives::hardfork::SpecId,
) -> Result<bool, BlockError> {
    // Accounts that received lazy deltas keep their running value here and are written once at
    // the end (the beneficiary collects one credit per transaction), with their fields before
    // the block where the first delta read them from the pre-block state: the diff then need not
    // look them up again.
    let mut lazy_values: HashMap<Address, (Option<AccountValue>, Option<Option<Fields>>)> = HashMap::default();
    let write = |writer: &mut ShardWriter<'_, S>, address: Address, value: Option<&AccountValue>, known: Option<Option<Fields>>| -> Result<(), BlockError> {
        let info = value.map(|v| account_info(v, codes, writer.base())).transpose()?;
        match known {
            Some(before) => writer.set_info_known(address, info, before)?,
            None => writer.set_info(address, info)?,
        }
        Ok(())
    };
    for (index, ((writes, wiped), base_fields)) in write_sets.iter().zip(cleared).zip(base_fields).enumerate() {
        for address in wiped {
            if writer.owns(address) {
                writer.clear_storage(*address)?;
            }
        }
        for (location, value) in writes {
            let (Location::Account(address) | Location::Storage(address, _) | Location::StorageWipe(address)) = location;
            if !writer.owns(address) {
                continue;
            }
            match (location, value) {
                // The wipe itself was applied above, from the transaction's `cleared` list.
                (Location::StorageWipe(_), _) => {}
                (Location::Storage(address, slot), Value::Storage(value)) => writer.set_storage(*address, *slot, *value)?,
                (Location::Storage(address, slot), Value::StorageAdd { amount, was_nonzero }) => {
                    let current = writer.storage(*address, *slot)?;
                    match lazy::apply_storage_add(current, *amount, *was_nonzero) {
                        Ok(updated) => writer.set_storage(*address, *slot, updated)?,
                        Err(error) => {
                            tracing::debug!(%address, %slot, %error, tx = index, "lazy token credit failed its check in block order");
                            return Ok(false);
                        }
                    }
                }
                (Location::Account(address), Value::Account(value)) => {
                    lazy_values.remove(address);
                    let known = base_fields.iter().find(|(read, _)| read == address).map(|(_, before)| *before);
                    write(writer, *address, value.as_ref(), known)?;
                }
                (Location::Account(address), delta) => {
                    // One lookup per delta, updated in place: a hot account (the beneficiary, an
                    // exchange's deposit address) takes one delta per transaction of the block.
                    let (value, known) = match lazy_values.get_mut(address) {
                        Some(held) => held,
                        None => {
                            let (info, known) = writer.basic_known(*address)?;
                            let before = info.map(|i| AccountValue { balance: i.balance, nonce: i.nonce, code_hash: i.code_hash });
                            lazy_values.entry(*address).or_insert((before, known))
                        }
                    };
                    let existed = value.is_some();
                    *value = match lazy::apply_delta(value.take(), delta, spec) {
                        Ok(updated) => updated,
                        Err(error) => {
                            tracing::debug!(%address, %error, tx = index, "lazy update failed its check in block order");
                            return Ok(false);
                        }
                    };
                    if existed && value.is_none() {
                        // Deleted as empty (EIP-161): its storage goes now, in block order.
                        let known = *known;
                        lazy_values.remove(address);
                        write(writer, *address, None, known)?;
                    }
                }
                (Location::Storage(..), _) => return Err(BlockError::Evm("storage location with an account value".into())),
            }
        }
    }
    for (address, (value, known)) in lazy_values {
        write(writer, address, value.as_ref(), known)?;
    }
    Ok(true)
}

/// Executes `txs` with Block-STM on `threads` threads over `overlay` (the block so far); `start`
/// places them in the block (the first one's index, the gas already used before them). With
/// `give_up_on_contention`, a run whose executions are mostly wasted on conflicts stops early
/// with [`FallbackReason::Contention`] (nothing is merged then). `techniques` are those of
/// Block-STM's refinements it uses.
#[allow(clippy::too_many_arguments)]
pub(crate) fn execute_transactions<S: StateSource>(
    overlay: &mut BlockOverlay<'_, S>,
    input: &BlockInput,
    txs: &[TxEnv],
    threads: NonZeroUsize,
    policy: InvalidTxPolicy,
    start: ChunkStart,
    give_up_on_contention: bool,
    techniques: Techniques,
) -> Result<ParallelOutcome, BlockError> {
    let beneficiary = input.block.beneficiary;
    let mv = MvMemory::new(txs.len(), beneficiary);
    let workers = threads.get().min(txs.len().max(1));
    let hoisted = if techniques.contains(Techniques::HOISTING) { hoist::heavy_late_transactions(txs, workers - 1) } else { Vec::new() };
    let scheduler = scheduler::Scheduler::with_hoisted(txs.len(), hoisted);
    let outcomes: Vec<Mutex<Option<TxOutcome>>> = (0..txs.len()).map(|_| Mutex::new(None)).collect();
    let halt = Mutex::new(None);
    let started = std::time::Instant::now();
    {
        let base: &BlockOverlay<'_, S> = overlay;
        let shared = Shared { base, input, txs, mv: &mv, scheduler: &scheduler, outcomes: &outcomes, halt: &halt, give_up_on_contention, techniques };
        // The workers run on the kept helper threads (`threads.rs`), the first on this one.
        crate::threads::map_on_threads(
            (0..workers).collect(),
            |worker| {
                worker::run(&shared, worker);
                Ok(())
            },
            || BlockError::Evm("a Block-STM worker thread panicked".into()),
        )?;
    }
    let run_us = started.elapsed().as_micros() as u64;
    let merge_started = std::time::Instant::now();
    let mut stats = ParallelStats {
        run_us,
        merge_us: 0,
        executions: scheduler.stats.executions.load(std::sync::atomic::Ordering::Relaxed),
        validations: scheduler.stats.validations.load(std::sync::atomic::Ordering::Relaxed),
        aborts: scheduler.stats.aborts.load(std::sync::atomic::Ordering::Relaxed),
        dependencies: scheduler.stats.dependencies.load(std::sync::atomic::Ordering::Relaxed),
        storage_wipes: scheduler.stats.storage_wipes.load(std::sync::atomic::Ordering::Relaxed),
        lazy_token_credits: scheduler.stats.lazy_token_credits.load(std::sync::atomic::Ordering::Relaxed),
        held_credits: scheduler.stats.held_credits.load(std::sync::atomic::Ordering::Relaxed),
    };
    match halt.into_inner() {
        Some(Halt::Fallback(reason)) => {
            tracing::trace!(?stats, ?reason, txs = txs.len(), "parallel run stopped");
            return Ok(ParallelOutcome::Fallback(reason));
        }
        Some(Halt::Error(error)) => return Err(error),
        None => {}
    }

    // The transaction phase in block order: limits, invalid transactions, receipts. Under
    // `Reject` the first problem ends the phase; it is reported only after the lazy updates below
    // it have been checked, since a failing lazy check means sequential execution would have
    // stopped earlier.
    let mut phase: TxPhase = start.phase();
    phase.reserve(txs.len());
    let mut cut = txs.len();
    let mut rejection: Option<BlockError> = None;
    let mut cleared: Vec<Vec<Address>> = vec![Vec::new(); txs.len()];
    let mut base_fields: Vec<Vec<(Address, Option<Fields>)>> = vec![Vec::new(); txs.len()];
    for (local, (tx, outcome)) in txs.iter().zip(outcomes).enumerate() {
        let index = start.first_index + local;
        if let Err(error) = check_block_limits(input, index, tx, phase.gas_used, phase.blob_gas_used) {
            cut = local;
            if policy == InvalidTxPolicy::Reject {
                rejection = Some(error);
            }
            break;
        }
        match outcome.into_inner() {
            Some(TxOutcome::Executed { result, cleared: wiped, base_fields: fields }) => {
                cleared[local] = wiped;
                base_fields[local] = fields;
                phase.include(index, tx, result);
            }
            Some(TxOutcome::Invalid(reason)) => match policy {
                InvalidTxPolicy::Reject => {
                    cut = local;
                    rejection = Some(BlockError::InvalidTransaction { index, reason });
                    break;
                }
                InvalidTxPolicy::Skip => phase.skipped.push((index, reason.to_string())),
            },
            None => return Err(BlockError::Evm(format!("transaction {index} has no result after the parallel run"))),
        }
    }

    // Merge: replay each transaction's last write set, in block order, into the overlay, as a
    // sequential commit would; lazy deltas are applied (and checked) against the value before
    // them. Every write to an account goes to the thread that owns its overlay shard, so each
    // account still sees its writes in block order. A failed check leaves the overlay
    // half-written: the caller rebuilds it.
    let spec = input.cfg.spec;
    let (write_sets, codes) = mv.into_write_sets();
    for entry in codes.iter() {
        overlay.add_code(*entry.key(), entry.value().clone());
    }
    overlay.reserve(cut * 2);
    let write_sets = &write_sets[..cut];
    let cleared = &cleared[..cut];
    let base_fields = &base_fields[..cut];
    let writes: usize = write_sets.iter().map(Vec::len).sum();
    let merge_threads = if writes >= MIN_PARALLEL_MERGE_WRITES { workers } else { 1 };
    let (writers, known_codes) = overlay.shard_writers(merge_threads);
    let checked = crate::threads::map_on_threads(
        writers,
        |mut writer| merge_shards(&mut writer, known_codes, write_sets, cleared, base_fields, spec),
        || BlockError::Evm("a merge thread panicked".into()),
    )?;
    if !checked.iter().all(|passed| *passed) {
        return Ok(ParallelOutcome::Fallback(FallbackReason::LazyCheckFailed));
    }
    if let Some(error) = rejection {
        return Err(error);
    }
    stats.merge_us = merge_started.elapsed().as_micros() as u64;
    tracing::trace!(?stats, txs = txs.len(), "parallel run finished");
    Ok(ParallelOutcome::Done(ParallelResult { phase, stats }))
}
