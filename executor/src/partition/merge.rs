//! The merge of a partitioned run: check that the groups really were independent, put the
//! transactions back in block order, fold the deferred balances, and write the groups' state
//! into the block overlay. Every check comes before the first write: a run that fails one
//! leaves the overlay as it was. Accounts the block had not written before are normalised on
//! the merge's threads and settled in the overlay ([`crate::overlay::SettledAccount`]): one
//! group's accounts whole, and a token whose balances several groups wrote in parts, one per
//! group, joined afterwards.
//!
//! Why the result is exact. Within a group, transactions run in block order on the state the
//! earlier ones of the group left. If no account or slot that one group wrote was read or written
//! by another, then no transaction saw anything another group did, which is what it would have
//! seen in block order: every transaction of another group that precedes it touched nothing it
//! touched. The beneficiary and the lazy recipients are the exception, allowed because no
//! transaction reads them: their credits commute, and are applied in block order with the checks
//! sequential execution makes ([`crate::parallel::lazy::apply_delta`]).

use super::group::{GroupAccount, GroupOutcome, GroupResult, GroupShard};
use crate::{
    block::{check_block_limits, BlockInput, ChunkStart, InvalidTxPolicy, TxPhase},
    error::{BlockError, StateError},
    overlay::{shard_of, BlockOverlay, Fields, ShardWriter, OVERLAY_SHARDS},
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

/// The accounts in `shard` that more than one group touched (none writing what another
/// touched), sorted; `Err`: the first account that one group wrote (or whose slot it wrote)
/// and another touched.
fn shard_overlap(groups: &[GroupResult], shard: usize) -> Result<Vec<Address>, Address> {
    let mut shared = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        for (address, account) in &group.shards[shard] {
            for other in &groups[g + 1..] {
                if let Some(theirs) = other.shards[shard].get(address) {
                    if accounts_conflict(account, theirs) {
                        return Err(*address);
                    }
                    shared.push(*address);
                }
            }
        }
    }
    shared.sort_unstable();
    shared.dedup();
    Ok(shared)
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
    Ok(overlaps(groups, lazy_recipients, beneficiary, threads)?.err())
}

/// [`independence`], and where the groups are independent, the accounts of each shard that
/// more than one of them touched (indexed by shard).
fn overlaps(groups: &[GroupResult], lazy_recipients: &[Address], beneficiary: Address, threads: usize) -> Result<Result<Vec<Vec<Address>>, Rejected>, BlockError> {
    for group in groups {
        if group.lazy_misused {
            return Ok(Err(Rejected::DeferredRead));
        }
        for address in lazy_recipients.iter().chain(std::iter::once(&beneficiary)) {
            if group.shards[shard_of(address)].contains_key(address) {
                return Ok(Err(Rejected::DeferredRead));
            }
        }
    }
    let per_thread = crate::threads::map_on_threads(
        shards_of_threads(threads),
        |owned| Ok::<_, BlockError>(owned.into_iter().map(|shard| shard_overlap(groups, shard).map(|shared| (shard, shared))).collect::<Result<Vec<_>, Address>>()),
        || BlockError::Evm("a conflict-checking thread panicked".into()),
    )?;
    let mut shared: Vec<Vec<Address>> = vec![Vec::new(); OVERLAY_SHARDS];
    for found in per_thread {
        match found {
            Ok(shards) => {
                for (shard, addresses) in shards {
                    shared[shard] = addresses;
                }
            }
            Err(address) => {
                tracing::trace!(address = ?address, "two groups touched one account, one of them writing");
                return Ok(Err(Rejected::Conflict));
            }
        }
    }
    Ok(Ok(shared))
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

/// Writes shard `index` of every group (`group_shards`) into the overlay. An account that one
/// group alone touched (`shared`: those more than one did) and that the block had not written
/// before is normalised here, on this thread, and settled in the overlay's shard: the block's
/// diff takes it as it is. The others go into the overlay's map as a sequential commit would
/// put them.
fn write_shard<S: StateSource>(writer: &mut ShardWriter<'_, S>, index: usize, group_shards: &[GroupShard], shared: &[Address]) -> Result<(), BlockError> {
    let settle = writer.can_settle(index);
    let mut settled = Vec::new();
    for shard in group_shards {
        for (address, account) in shard {
            let mut written_slots = account.storage.iter().filter(|(_, slot)| slot.written).map(|(slot, value)| (*slot, value.value)).peekable();
            if !account.written && written_slots.peek().is_none() {
                // Only read.
                continue;
            }
            if settle && shared.binary_search(address).is_err() && !writer.holds(address) {
                // Where the group wrote the fields to `None`, the account's storage is gone too.
                let cleared = account.cleared || (account.written && account.info.is_none());
                // Not written: the fields are those the group read, the ones before the block.
                if let Some(normalized) = writer.normalize(*address, account.info.as_ref(), cleared, account.before, written_slots)? {
                    settled.push((*address, normalized));
                }
                continue;
            }
            if account.cleared {
                writer.clear_storage(*address)?;
            }
            if account.written {
                // An account without code gets this thread's empty code: cloning the group
                // thread's would make both merge threads count references on the same two
                // counters.
                let info = account.info.as_ref().map(|i| {
                    let code = if i.code_hash == KECCAK_EMPTY { None } else { i.code.clone() };
                    crate::state::account_info(i.balance, i.nonce, i.code_hash, code)
                });
                // Where the overlay has no entry yet, the block so far is the pre-block state:
                // the fields the group first read are the diff's "before", and the diff need not
                // read them again.
                writer.set_info_known(*address, info, account.before)?;
            }
            let written = account.storage.values().filter(|slot| slot.written).count();
            if written > 0 {
                writer.set_storage_many(*address, written, written_slots)?;
            }
        }
    }
    if settle {
        writer.settle(index, settled)?;
    }
    Ok(())
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
    let shared = match overlaps(&groups, lazy_recipients, beneficiary, threads)? {
        Ok(shared) => shared,
        Err(rejected) => return Ok(Err(rejected)),
    };
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
    // Accounts several groups wrote slots of (a token's balances; no group changed their
    // fields, or the check would have failed) and the block had not written: each group's part
    // is compared with the pre-block values on a merge thread and the parts joined into one
    // settled diff below, rather than every slot written into the overlay's map by the one
    // thread that owns the account's shard.
    let mut split: Vec<(Address, GroupAccount)> = Vec::new();
    for (index, addresses) in shared.iter().enumerate() {
        for address in addresses {
            let wrote = group_states.iter().any(|(shards, _)| shards[index].get(address).is_some_and(|account| account.storage.values().any(|slot| slot.written)));
            if !wrote || !overlay.can_settle(address) {
                continue;
            }
            for (shards, _) in &mut group_states {
                if let Some(account) = shards[index].swap_remove(address) {
                    split.push((*address, account));
                }
            }
        }
    }
    let mut group_shards: Vec<Vec<super::group::GroupShard>> = Vec::with_capacity(group_states.len());
    for (shards, codes) in group_states {
        for (hash, code) in codes {
            overlay.add_code(hash, code);
        }
        group_shards.push(shards);
    }
    let (writers, _) = overlay.shard_writers(shards.len());
    // Shard `i` of every group goes to the writer that owns overlay shard `i`.
    let writer_count = writers.len();
    let mut owned: Vec<Vec<Vec<super::group::GroupShard>>> = (0..writer_count).map(|_| Vec::new()).collect();
    for index in 0..OVERLAY_SHARDS {
        owned[index % writer_count].push(group_shards.iter_mut().map(|shards| std::mem::take(&mut shards[index])).collect());
    }
    let mut parts: Vec<Vec<(Address, GroupAccount)>> = (0..writer_count).map(|_| Vec::new()).collect();
    for (position, part) in split.into_iter().enumerate() {
        parts[position % writer_count].push(part);
    }
    let shared = &shared;
    let compared = crate::threads::map_on_threads(
        writers.into_iter().zip(owned).zip(parts).enumerate().collect(),
        |(first, ((mut writer, owned), parts))| {
            // Writer `first` owns shards `first`, `first + writer_count`, ...; it drops the
            // groups' copies of them when done.
            for (position, group_shards) in owned.into_iter().enumerate() {
                let index = first + position * writer_count;
                write_shard(&mut writer, index, &group_shards, &shared[index])?;
            }
            let mut compared = Vec::with_capacity(parts.len());
            for (address, account) in parts {
                let slots = account.storage.iter().filter(|(_, slot)| slot.written).map(|(slot, value)| (*slot, value.value));
                let changed = writer.changed_slots(address, account.info.as_ref(), account.before, slots)?;
                compared.push((address, changed, account.info, account.before));
            }
            Ok::<_, BlockError>(compared)
        },
        || BlockError::Evm("a merge thread panicked".into()),
    )?;
    // The split accounts' parts joined (their slots are disjoint: the check saw to it), with
    // the lazy balances of the same token, into one diff each.
    // Per account: the slots changed, the fields after and before.
    type Joined = (Address, Vec<(U256, U256)>, Option<AccountInfo>, Option<Fields>);
    let mut joined: Vec<Joined> = Vec::new();
    for (address, changed, info, before) in compared.into_iter().flatten() {
        match joined.iter_mut().find(|(held, ..)| *held == address) {
            Some((_, slots, ..)) => slots.extend(changed),
            None => joined.push((address, changed, info, before)),
        }
    }
    for (address, mut slots, info, before) in joined {
        let mut unjoined = Vec::with_capacity(slot_values.len());
        for (token, slot, value) in slot_values {
            if token != address || info.is_none() {
                unjoined.push((token, slot, value));
            } else if value != revm::database::DatabaseRef::storage_ref(overlay.base(), token, slot)? {
                slots.push((slot, value));
            }
        }
        slot_values = unjoined;
        overlay.settle_one(address, info.as_ref(), before, slots.into_iter().collect())?;
    }
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
