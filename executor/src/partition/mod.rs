//! The partitioned path: where a block's transactions say, by their senders and recipients, that
//! they fall into independent groups, each group runs on its own thread with plain revm (none of
//! Block-STM's per-transaction bookkeeping), and the merge checks afterwards that the groups
//! really touched nothing in common.
//!
//! - [`plan`]: the groups, from the transactions' fields, balanced by gas limit.
//! - [`group`]: one group's execution, recording every account and slot it touched.
//! - [`merge`]: the independence check, block order, deferred credits, and the write into the
//!   block overlay.
//!
//! Fees to the beneficiary, and plain transfers to a hot recipient without code (an exchange's
//! deposit address), are credited as deltas, so they do not join every transaction into one
//! group. A run whose check fails is thrown away before anything is written, and the block goes
//! on to Block-STM: the result is always exactly the sequential one; a wrong plan only costs time.

pub mod group;
pub mod merge;
pub mod plan;

use crate::{
    block::{BlockInput, ChunkStart, InvalidTxPolicy, TxPhase},
    error::BlockError,
    overlay::BlockOverlay,
    state::StateSource,
};
use parking_lot::Mutex;
use revm::context::TxEnv;
use std::num::NonZeroUsize;

/// When a run is tried on the partitioned path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Only when it is expected to pay off: at least [`MIN_PARTITION_TXS`] transactions that
    /// split into groups no heavier than [`MAX_IMBALANCE`] times their ideal share.
    Measured,
    /// Whenever the plan finds two groups (tests, and measuring the path itself).
    Always,
}

/// Runs with fewer transactions than this are not partitioned under [`Rule::Measured`].
pub const MIN_PARTITION_TXS: usize = 64;

/// Runs whose transactions' gas limits add up to less than this are not partitioned under
/// [`Rule::Measured`]: too little work to pay for the plan, the stages and the check.
pub const MIN_PARTITION_GAS_LIMIT: u64 = 15_000_000;

/// Under [`Rule::Measured`], the heaviest group may carry at most this many times its ideal
/// share of the gas limits (on 2 threads: 75% of the run, an expected speedup of at least 1.33x).
pub const MAX_IMBALANCE: f64 = 1.5;

/// The fractions of each group's gas limits run before each check: most wrong plans show
/// early (a location many transactions touch, or the heavy transactions at the top of a block),
/// and the later checks cost little next to the run.
const STAGES: [(u64, u64); 3] = [(1, 32), (1, 4), (1, 1)];

/// Where each stage of a group ends: the first position whose cumulative gas limit reaches the
/// stage's share of the group's.
fn stage_bounds(txs: &[TxEnv], indexes: &[u32]) -> [usize; 3] {
    let total: u64 = indexes.iter().map(|i| txs[*i as usize].gas_limit).fold(0, u64::saturating_add);
    let mut bounds = [indexes.len(); 3];
    let mut cumulative = 0u64;
    let mut stage = 0;
    for (position, index) in indexes.iter().enumerate() {
        while stage < STAGES.len() - 1 && cumulative >= total / STAGES[stage].1 * STAGES[stage].0 {
            bounds[stage] = position;
            stage += 1;
        }
        cumulative = cumulative.saturating_add(txs[*index as usize].gas_limit);
    }
    bounds
}

/// What a partitioned attempt did.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The run's transaction phase; its writes are in the overlay.
    Done(TxPhase),
    /// The plan found no useful split; nothing ran.
    NotPlanned,
    /// The groups ran and their result was thrown away; the overlay is untouched.
    Rejected(merge::Rejected),
}

/// Under [`Rule::Measured`], a run with contract calls (other than token `transfer`s) is tried
/// only when every contract it calls receives at least this many of them: the same few contracts
/// called over and over (swaps over a set of pools, a game's moves). Where such calls share state
/// their fields do not show, the first stage (1/32 of each group's gas) most likely holds calls of
/// both sides and proves the plan wrong early; on the mainnet blocks, where most contracts are
/// called once or twice and routers reach shared tokens, no run qualifies.
pub const MIN_CALLS_PER_CONTRACT: u32 = 32;

/// Whether [`Rule::Measured`] tries a run: at least [`MIN_PARTITION_TXS`] transactions, enough
/// gas in all ([`MIN_PARTITION_GAS_LIMIT`]), no creation, and calldata only for a token
/// `transfer` or for contracts called at least [`MIN_CALLS_PER_CONTRACT`] times each. Elsewhere
/// Block-STM runs the block without the partitioned path's risk: on the mainnet blocks a plan
/// proved wrong (by state shared behind contract calls) cost up to a whole run on top
/// (docs/benchmarks.md, "The partitioned path"). A contract whose calls carry more of the gas
/// limits than one group may ([`MAX_IMBALANCE`] over `threads`) would put them all in one group
/// too heavy for the plan: such a run is not planned at all (the plan of the synthetic sequential
/// chain, 10,000 calls into one counter, cost 0.3-0.5 ms for nothing).
fn worth_trying(txs: &[TxEnv], threads: usize) -> bool {
    if txs.len() < MIN_PARTITION_TXS {
        return false;
    }
    let gas_limits: u64 = txs.iter().map(|tx| tx.gas_limit).fold(0, u64::saturating_add);
    if gas_limits < MIN_PARTITION_GAS_LIMIT {
        return false;
    }
    // A contract call may touch state its fields do not show (a router moving WETH, a bot paying
    // the beneficiary): only calls repeated often enough to show it early are let in.
    let mut calls: rustc_hash::FxHashMap<alloy_primitives::Address, (u32, u64)> = Default::default();
    for tx in txs {
        if tx.data.is_empty() || crate::parallel::tokens::decode_transfer(&tx.data).is_some() {
            continue;
        }
        match tx.kind {
            alloy_primitives::TxKind::Call(to) => {
                let (count, gas) = calls.entry(to).or_default();
                *count += 1;
                *gas = gas.saturating_add(tx.gas_limit);
            }
            alloy_primitives::TxKind::Create => return false,
        }
    }
    let heaviest_share = MAX_IMBALANCE / threads as f64;
    calls.values().all(|(count, gas)| *count >= MIN_CALLS_PER_CONTRACT && (*gas as f64) <= heaviest_share * gas_limits as f64)
}

/// Tries `txs` on the partitioned path over `overlay` (the block so far).
pub(crate) fn execute_transactions<S: StateSource>(
    overlay: &mut BlockOverlay<'_, S>,
    input: &BlockInput,
    txs: &[TxEnv],
    threads: NonZeroUsize,
    policy: InvalidTxPolicy,
    start: ChunkStart,
    rule: Rule,
) -> Result<Attempt, BlockError> {
    let threads = threads.get().min(64);
    if threads < 2 || (rule == Rule::Measured && !worth_trying(txs, threads)) {
        return Ok(Attempt::NotPlanned);
    }
    let started = std::time::Instant::now();
    let max_imbalance = match rule {
        Rule::Measured => MAX_IMBALANCE,
        Rule::Always => threads as f64,
    };
    let Some(plan) = plan::plan(&*overlay, txs, input.block.beneficiary, threads, max_imbalance)? else {
        tracing::trace!(txs = txs.len(), plan_us = started.elapsed().as_micros() as u64, "no partition");
        return Ok(Attempt::NotPlanned);
    };
    let planned = started.elapsed();
    // The groups run in stages, each on its own thread over one EVM; between stages the threads
    // wait while one of them checks the groups against each other, so that a plan proved wrong
    // early (a hot location two groups share) wastes little.
    let count = plan.groups.len();
    let slots: Vec<Mutex<Option<group::GroupResult>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let barrier = std::sync::Barrier::new(count);
    let verdict: Mutex<Option<merge::Rejected>> = Mutex::new(None);
    let failure: Mutex<Option<BlockError>> = Mutex::new(None);
    {
        let base: &BlockOverlay<'_, S> = overlay;
        let lazy = &plan.lazy_recipients;
        let beneficiary = input.block.beneficiary;
        let run_group = |g: usize| -> Result<(), BlockError> {
            let indexes = &plan.groups[g];
            let mut runner = group::GroupRunner::new(base, input, txs, lazy, &plan.lazy_slots, indexes.len());
            let bounds = stage_bounds(txs, indexes);
            let mut from = 0;
            for (stage, to) in bounds.into_iter().enumerate() {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run(&indexes[from..to])));
                tracing::trace!(group = g, stage, txs = to - from, at_us = started.elapsed().as_micros() as u64, "partitioned stage ran");
                from = to;
                match ran {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        failure.lock().get_or_insert(error);
                    }
                    Err(_) => {
                        failure.lock().get_or_insert(BlockError::Evm("a group thread panicked".into()));
                    }
                }
                *slots[g].lock() = Some(runner.lend());
                if stage + 1 == STAGES.len() {
                    break;
                }
                // Every thread meets both barriers, whatever happened, so none waits forever.
                if barrier.wait().is_leader() {
                    let stopped = failure.lock().is_some();
                    if !stopped {
                        let groups: Vec<group::GroupResult> = slots.iter().filter_map(|slot| slot.lock().take()).collect();
                        let checked = merge::independence(&groups, lazy, beneficiary, 1);
                        for (slot, group) in slots.iter().zip(groups) {
                            *slot.lock() = Some(group);
                        }
                        match checked {
                            Ok(Some(rejected)) => {
                                tracing::trace!(txs = txs.len(), stage, ?rejected, run_us = started.elapsed().as_micros() as u64, "partitioned run stopped early");
                                *verdict.lock() = Some(rejected);
                            }
                            Ok(None) => {}
                            Err(error) => {
                                failure.lock().get_or_insert(error);
                            }
                        }
                    }
                }
                barrier.wait();
                if verdict.lock().is_some() || failure.lock().is_some() {
                    break;
                }
                match slots[g].lock().take() {
                    Some(group) => runner.restore(group),
                    None => return Err(BlockError::Evm("a group's state went missing between stages".into())),
                }
            }
            Ok(())
        };
        crate::threads::map_on_threads((0..count).collect(), run_group, || BlockError::Evm("a group thread panicked".into()))?;
    }
    if let Some(error) = failure.into_inner() {
        return Err(error);
    }
    if let Some(rejected) = verdict.into_inner() {
        return Ok(Attempt::Rejected(rejected));
    }
    let groups: Vec<group::GroupResult> = slots.into_iter().filter_map(|slot| slot.into_inner()).collect();
    if groups.len() != count {
        return Err(BlockError::Evm("a group's result went missing".into()));
    }
    let ran = started.elapsed();
    let merged = merge::merge(overlay, input, txs, groups, &plan, policy, start, threads)?;
    tracing::trace!(
        txs = txs.len(),
        groups = plan.groups.len(),
        imbalance = plan.imbalance,
        lazy_recipients = plan.lazy_recipients.len(),
        plan_us = planned.as_micros() as u64,
        run_us = (ran - planned).as_micros() as u64,
        merge_us = (started.elapsed() - ran).as_micros() as u64,
        rejected = ?merged.as_ref().err(),
        "partitioned run"
    );
    Ok(match merged {
        Ok(phase) => Attempt::Done(phase),
        Err(rejected) => Attempt::Rejected(rejected),
    })
}
