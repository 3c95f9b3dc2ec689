//! The merge of a partitioned run: check that the groups really were independent, put the
//! transactions back in block order, fold the deferred balances, and write the groups' state
//! into the block overlay. Every check comes before the first write: a run that fails one
//! leaves the overlay as it was.
//!
//! Why the result is exact. Within a group, transactions run in block order on the state the
//! earlier ones of the group left. If no account or slot that one group wrote was read or written
//! by another, then no transaction saw anything another group did, which is what it would have
//! seen in block order: every transaction of another group that precedes it touched nothing it
//! touched. The beneficiary and the lazy recipients are the exception, allowed because no
//! transaction reads them: their credits commute, and are applied in block order with the checks
//! sequential execution makes ([`crate::parallel::lazy::apply_delta`]).

use super::group::{GroupAccount, GroupOutcome, GroupResult};
use crate::{
    block::{check_block_limits, BlockInput, ChunkStart, InvalidTxPolicy, TxPhase},
    error::{BlockError, StateError},
    overlay::{shard_of, BlockOverlay, OVERLAY_SHARDS},
    parallel::{
        lazy::{apply_storage_add, evaluate_credits},
        fee_reward,
        mv_memory::AccountValue,
    },
    state::StateSource,
};
use alloy_primitives::{Address, U256};
use revm::{context::TxEnv, primitives::KECCAK_EMPTY, state::AccountInfo};

/// Why a partitioned run's result was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Two groups touched the same account or slot, one of them writing it.
    Conflict,
    /// A transaction read the beneficiary or a lazy recipient, or paid one otherwise than the
    /// plan assumed.
    DeferredRead,
    /// A transaction is invalid under [`InvalidTxPolicy::Reject`], or does not fit the block's
    /// gas: the other paths report or stop there.
    InvalidOrFull,
    /// A deferred credit fails its check in block order (overflow, code).
    CreditCheck,
}

/// The first account in `shard` that one group wrote (or whose slot it wrote) and another
/// touched.
fn shard_conflict(groups: &[GroupResult], shard: usize) -> Option<Address> {
    for (g, group) in groups.iter().enumerate() {
        for (address, account) in &group.shards[shard] {
            for other in &groups[g + 1..] {
                if let Some(theirs) = other.shards[shard].get(address) {
                    if accounts_conflict(account, theirs) {
                        return Some(*address);
                    }
                }
            }
        }
    }
    None
}

fn accounts_conflict(ours: &GroupAccount, theirs: &GroupAccount) -> bool {
    if ours.written || theirs.written || ours.cleared || theirs.cleared {
        return true;
    }
    // Both only read the account's fields: their slots may still meet.
    let (small, large) = if ours.storage.len() <= theirs.storage.len() { (ours, theirs) } else { (theirs, ours) };
    small.storage.iter().any(|(slot, mine)| large.storage.get(slot).is_some_and(|other| mine.written || other.written))
}

/// Which overlay shards each of `threads` threads takes.
fn shards_of_threads(threads: usize) -> Vec<Vec<usize>> {
    let threads = threads.clamp(1, OVERLAY_SHARDS);
    (0..threads).map(|t| (t..OVERLAY_SHARDS).step_by(threads).collect()).collect()
}

/// Whether the groups so far are independent: `None`, or why not. Touched and written sets only
/// grow, so a group that fails this after part of its run fails it at the end too.
pub(crate) fn independence(groups: &[GroupResult], lazy_recipients: &[Address], beneficiary: Address, threads: usize) -> Result<Option<Rejected>, BlockError> {
    for group in groups {
        if group.lazy_misused {
            return Ok(Some(Rejected::DeferredRead));
        }
        for address in lazy_recipients.iter().chain(std::iter::once(&beneficiary)) {
            if group.shards[shard_of(address)].contains_key(address) {
                return Ok(Some(Rejected::DeferredRead));
            }
        }
    }
    let conflicts = crate::threads::map_on_threads(
        shards_of_threads(threads),
        |owned| Ok::<Option<Address>, BlockError>(owned.into_iter().find_map(|shard| shard_conflict(groups, shard))),
        || BlockError::Evm("a conflict-checking thread panicked".into()),
    )?;
    if let Some(address) = conflicts.into_iter().flatten().next() {
        tracing::trace!(address = ?address, "two groups touched one account, one of them writing");
        return Ok(Some(Rejected::Conflict));
    }
    Ok(None)
}

/// The account as a value the lazy deltas apply to.
fn value_of(info: &Option<AccountInfo>) -> Option<AccountValue> {
    info.as_ref().map(|i| AccountValue { balance: i.balance, nonce: i.nonce, code_hash: i.code_hash })
}

/// An account's value after its deferred credits, and whether it stopped existing on the way
/// (a touch deleted it as empty: its storage from before is gone).
type Folded = (Option<AccountInfo>, bool);

/// Folds credits (`no_code`: to an account that must have no code), in block order, over the
/// account as the block so far left it.
fn fold_credits<S: StateSource>(
    overlay: &BlockOverlay<'_, S>,
    address: Address,
    amounts: impl Iterator<Item = U256> + Clone,
    no_code: bool,
    spec: revm::primitives::hardfork::SpecId,
) -> Result<Result<Folded, Rejected>, StateError> {
    use revm::database::DatabaseRef;
    let before = overlay.basic_ref(address)?;
    let code = before.as_ref().and_then(|info| info.code.clone());
    let (value, vanished) = match evaluate_credits(value_of(&before), amounts, no_code, spec) {
        Ok(folded) => folded,
        Err(_) => return Ok(Err(Rejected::CreditCheck)),
    };
    Ok(Ok((value.map(|v| crate::state::account_info(v.balance, v.nonce, v.code_hash, code.clone())), vanished)))
}

/// Checks the groups' results and writes them into `overlay`; `Ok(Err(_))`: not used, and the
/// overlay untouched.
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge<S: StateSource>(
    overlay: &mut BlockOverlay<'_, S>,
    input: &BlockInput,
    txs: &[TxEnv],
    groups: Vec<GroupResult>,
    plan: &super::plan::Plan,
    policy: InvalidTxPolicy,
    start: ChunkStart,
    threads: usize,
) -> Result<Result<TxPhase, Rejected>, BlockError> {
    let started = std::time::Instant::now();
    let beneficiary = input.block.beneficiary;
    let lazy_recipients = &plan.lazy_recipients;
    let shards = shards_of_threads(threads);
    if let Some(rejected) = independence(&groups, lazy_recipients, beneficiary, threads)? {
        return Ok(Err(rejected));
    }
    let checked = started.elapsed();
    // Block order: limits, invalid transactions, receipts, and the deferred credits.
    let mut group_states = Vec::with_capacity(groups.len());
    let mut cursors = Vec::with_capacity(groups.len());
    let mut credit_lists = Vec::with_capacity(groups.len());
    for group in groups {
        cursors.push(group.txs.into_iter().peekable());
        credit_lists.push((group.credits.into_iter().peekable(), group.token_credits.into_iter().peekable()));
        group_states.push((group.shards, group.codes));
    }
    let mut phase = start.phase();
    phase.reserve(txs.len());
    let mut fees = Vec::with_capacity(txs.len());
    let mut credits: Vec<(Address, U256)> = Vec::new();
    let mut token_credits: Vec<Vec<(U256, bool)>> = vec![Vec::new(); plan.lazy_slots.len()];
    for (local, tx) in txs.iter().enumerate() {
        let index = start.first_index + local;
        if check_block_limits(input, index, tx, phase.gas_used, phase.blob_gas_used).is_err() {
            return Ok(Err(Rejected::InvalidOrFull));
        }
        // Each group's results are in block order: the next one is at the front of one of them.
        let found = cursors.iter_mut().enumerate().find_map(|(g, cursor)| cursor.next_if(|done| done.index as usize == local).map(|done| (g, done)));
        let Some((group, done)) = found else { return Err(BlockError::Evm(format!("transaction {index} has no result after the partitioned run"))) };
        match done.outcome {
            GroupOutcome::Executed { gas_used, success, logs } => {
                fees.push(fee_reward(input, tx, gas_used));
                let (lazy, tokens) = &mut credit_lists[group];
                if let Some((_, recipient, amount)) = lazy.next_if(|(at, _, _)| *at as usize == local) {
                    credits.push((recipient, amount));
                }
                if let Some((_, position, amount, was_nonzero)) = tokens.next_if(|(at, _, _, _)| *at as usize == local) {
                    token_credits[position as usize].push((amount, was_nonzero));
                }
                phase.include_parts(index, tx, gas_used, success, logs);
            }
            GroupOutcome::Invalid(reason) => match policy {
                InvalidTxPolicy::Reject => return Ok(Err(Rejected::InvalidOrFull)),
                InvalidTxPolicy::Skip => phase.skipped.push((index, reason.to_string())),
            },
        }
    }
    let spec = input.cfg.spec;
    let mut deferred = Vec::with_capacity(lazy_recipients.len() + 1);
    match fold_credits(overlay, beneficiary, fees.into_iter(), false, spec)? {
        Ok(info) => deferred.push((beneficiary, info)),
        Err(rejected) => return Ok(Err(rejected)),
    }
    for recipient in lazy_recipients {
        let paid = credits.iter().filter(|(to, _)| to == recipient).map(|(_, amount)| *amount);
        match fold_credits(overlay, *recipient, paid, true, spec)? {
            Ok(info) => deferred.push((*recipient, info)),
            Err(rejected) => return Ok(Err(rejected)),
        }
    }

    let ordered_at = started.elapsed();
    let mut slot_values = Vec::with_capacity(plan.lazy_slots.len());
    for (lazy, credits) in plan.lazy_slots.iter().zip(&token_credits) {
        if credits.is_empty() {
            continue;
        }
        let mut value = revm::database::DatabaseRef::storage_ref(&*overlay, lazy.token, lazy.slot)?;
        for (amount, was_nonzero) in credits {
            value = match apply_storage_add(value, *amount, *was_nonzero) {
                Ok(value) => value,
                Err(_) => return Ok(Err(Rejected::CreditCheck)),
            };
        }
        slot_values.push((lazy.token, lazy.slot, value));
    }
    // Write: the code deployed, each shard on the thread that owns it (which then drops the
    // groups' copy of that shard), then the deferred ones.
    let mut group_shards: Vec<Vec<super::group::GroupShard>> = Vec::with_capacity(group_states.len());
    for (shards, codes) in group_states {
        for (hash, code) in codes {
            overlay.add_code(hash, code);
        }
        group_shards.push(shards);
    }
    let accounts: usize = group_shards.iter().map(|shards| shards.iter().map(|shard| shard.len()).sum::<usize>()).sum();
    overlay.reserve(accounts);
    let (writers, _) = overlay.shard_writers(shards.len());
    // Shard `i` of every group goes to the writer that owns overlay shard `i`.
    let mut owned: Vec<Vec<super::group::GroupShard>> = (0..writers.len()).map(|_| Vec::new()).collect();
    let writer_count = writers.len();
    for shards in group_shards {
        for (index, shard) in shards.into_iter().enumerate() {
            owned[index % writer_count].push(shard);
        }
    }
    crate::threads::map_on_threads(
        writers.into_iter().zip(owned).collect(),
        |(mut writer, owned)| {
            for shard in owned {
                for (address, account) in &shard {
                    if account.cleared {
                        writer.clear_storage(*address)?;
                    }
                    if account.written {
                        // An account without code gets this thread's empty code: cloning the
                        // group thread's would make both merge threads count references on
                        // the same two counters.
                        let info = account.info.as_ref().map(|i| {
                            let code = if i.code_hash == KECCAK_EMPTY { None } else { i.code.clone() };
                            crate::state::account_info(i.balance, i.nonce, i.code_hash, code)
                        });
                        // Where the overlay has no entry yet, the block so far is the
                        // pre-block state: the fields the group first read are the diff's
                        // "before", and the diff need not read them again.
                        writer.set_info_known(*address, info, account.before)?;
                    }
                    let written = account.storage.values().filter(|slot| slot.written).count();
                    if written > 0 {
                        let slots = account.storage.iter().filter(|(_, slot)| slot.written).map(|(slot, value)| (*slot, value.value));
                        writer.set_storage_many(*address, written, slots)?;
                    }
                }
            }
            Ok::<(), BlockError>(())
        },
        || BlockError::Evm("a merge thread panicked".into()),
    )?;
    for (token, slot, value) in slot_values {
        overlay.set_storage(token, slot, value)?;
    }
    for (address, (info, vanished)) in deferred {
        if vanished {
            overlay.set_info(address, None)?;
        }
        overlay.set_info(address, info)?;
    }
    tracing::trace!(
        check_us = checked.as_micros() as u64,
        order_us = (ordered_at - checked).as_micros() as u64,
        write_us = (started.elapsed() - ordered_at).as_micros() as u64,
        "partitioned merge"
    );
    Ok(Ok(phase))
}
