//! How fast a block could run on `threads` threads at best (`pseq bench exec --bound`): a limit
//! from the block's own dependencies, against which a parallel executor's speedup can be read.
//!
//! Each transaction runs in block order with plain revm (the beneficiary's fee left out, as the
//! parallel paths defer it), timed on its own, recording every account and slot it reads and the
//! ones it changes. Transaction `j` depends on the last earlier transaction that changed a
//! location `j` read, except the recipient of a plain transfer without code, which the parallel
//! paths credit without reading. From the per-transaction times (medians over the runs):
//!
//! - the **critical path**: the longest chain of dependent transactions;
//! - the **limit**: `max(critical path, sum / threads)`, no schedule of the transactions on
//!   `threads` threads is shorter, whatever its order and with no overhead at all;
//! - the **greedy schedule**: whenever a thread is free it takes the earliest transaction (in
//!   block order) whose dependencies have all finished: what an executor that knew every
//!   dependency in advance and paid nothing for it would take with Block-STM's preference for
//!   low indexes.
//!
//! The rest of the block (system calls, withdrawals, the state diff; the sequential time minus
//! the transactions' sum) is counted as if split evenly over the threads. So each bound
//! overestimates what is possible, never the reverse: read-set recording and the timer add a
//! little to every transaction, which only makes the sums larger on both sides.

use pseq_executor::{
    evm::{build_evm, DeferredFeeHandler},
    overlay::BlockOverlay,
    revm::{
        context::{result::EVMError, ContextSetters, TxEnv},
        context_interface::{ContextTr, JournalTr},
        database::{Database, DatabaseCommit, DatabaseRef},
        handler::Handler,
        primitives::{Address, StorageKey, StorageValue, B256, KECCAK_EMPTY},
        bytecode::Bytecode,
        state::AccountInfo,
    },
    BlockInput, InMemoryState, StateError,
};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::time::Instant;

/// A location a transaction reads or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Location {
    Account(Address),
    Slot(Address, StorageKey),
}

/// The block overlay, recording what one transaction reads.
struct Recording<'o, 'a> {
    overlay: &'o mut BlockOverlay<'a, InMemoryState>,
    reads: Vec<Location>,
    /// Each account's fields as first read by the transaction (to tell a change from a touch).
    first_read: FxHashMap<Address, Option<(StorageValue, u64, B256)>>,
}

impl Database for Recording<'_, '_> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let info = self.overlay.basic_ref(address)?;
        self.reads.push(Location::Account(address));
        self.first_read.entry(address).or_insert_with(|| info.as_ref().map(|i| (i.balance, i.nonce, i.code_hash)));
        Ok(info)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.overlay.code_by_hash_ref(code_hash)
    }

    fn storage(&mut self, address: Address, index: StorageKey) -> Result<StorageValue, StateError> {
        self.reads.push(Location::Slot(address, index));
        self.overlay.storage_ref(address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.overlay.block_hash_ref(number)
    }
}

/// One transaction's record: what it read, what it changed.
struct TxAccess {
    reads: Vec<Location>,
    writes: Vec<Location>,
}

/// Runs `txs` once in block order over a fresh overlay of `state`; returns each one's time in
/// seconds and, when `record` is set, its reads and writes.
fn run_once(state: &InMemoryState, input: &BlockInput, txs: &[TxEnv], record: bool) -> Result<(Vec<f64>, Vec<TxAccess>), String> {
    let mut overlay = BlockOverlay::new(state, input.cfg.spec);
    let recording = Recording { overlay: &mut overlay, reads: Vec::new(), first_read: FxHashMap::default() };
    let mut evm = build_evm(recording, input.cfg.clone(), input.block.clone());
    let mut times = Vec::with_capacity(txs.len());
    let mut accesses = Vec::with_capacity(if record { txs.len() } else { 0 });
    for (index, tx) in txs.iter().enumerate() {
        evm.ctx.set_tx(tx.clone());
        evm.ctx.journaled_state.database.reads.clear();
        evm.ctx.journaled_state.database.first_read.clear();
        let started = Instant::now();
        let outcome = DeferredFeeHandler::<_, EVMError<StateError>>::default().run(&mut evm);
        let changed = evm.ctx.journal_mut().finalize();
        times.push(started.elapsed().as_secs_f64());
        match outcome {
            Ok(_) => {}
            // An invalid transaction changes nothing; the block's own check reports it.
            Err(EVMError::Transaction(_)) => {}
            Err(error) => return Err(format!("transaction {index}: {error}")),
        }
        let db = &mut evm.ctx.journaled_state.database;
        if record {
            let mut writes = Vec::new();
            for (address, account) in &changed {
                if !account.is_touched() {
                    continue;
                }
                let now = (account.info.balance, account.info.nonce, account.info.code_hash);
                let before = db.first_read.get(address).copied().flatten().unwrap_or((StorageValue::ZERO, 0, KECCAK_EMPTY));
                if account.is_created() || account.is_selfdestructed() || now != before {
                    writes.push(Location::Account(*address));
                }
                writes.extend(account.storage.iter().filter(|(_, slot)| slot.is_changed()).map(|(key, _)| Location::Slot(*address, *key)));
            }
            let mut reads = std::mem::take(&mut db.reads);
            // A plain transfer's credit to an account without code does not need its balance.
            if let (true, pseq_executor::revm::primitives::TxKind::Call(to)) = (tx.data.is_empty(), tx.kind) {
                let codeless = db.first_read.get(&to).copied().flatten().is_none_or(|(_, _, hash)| hash == KECCAK_EMPTY);
                if codeless && to != tx.caller {
                    reads.retain(|location| *location != Location::Account(to));
                }
            }
            accesses.push(TxAccess { reads, writes });
        }
        db.overlay.commit(changed);
    }
    Ok((times, accesses))
}

/// The bound of one block on `threads` threads.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BlockBound {
    /// Sum of the transactions' times (medians), milliseconds.
    pub txs_ms: f64,
    /// The longest chain of dependent transactions, milliseconds.
    pub critical_path_ms: f64,
    /// The greedy schedule's length, milliseconds.
    pub scheduled_ms: f64,
    /// Sequential time over (the limit plus the rest split over the threads).
    pub limit_speedup: f64,
    /// Sequential time over (the greedy schedule plus the rest split over the threads).
    pub scheduled_speedup: f64,
}

/// Measures `txs` `runs` times and bounds the block on `threads` threads against its sequential
/// time `sequential_ms` (measured by the caller, whole block).
pub fn bound(state: &InMemoryState, input: &BlockInput, txs: &[TxEnv], threads: usize, runs: usize, sequential_ms: f64) -> Result<BlockBound, String> {
    let (first, accesses) = run_once(state, input, txs, true)?;
    let mut samples: Vec<Vec<f64>> = first.into_iter().map(|t| vec![t]).collect();
    for _ in 1..runs.max(1) {
        let (times, _) = run_once(state, input, txs, false)?;
        for (sample, time) in samples.iter_mut().zip(times) {
            sample.push(time);
        }
    }
    let times: Vec<f64> = samples
        .into_iter()
        .map(|mut sample| {
            sample.sort_by(f64::total_cmp);
            sample[sample.len() / 2] * 1e3
        })
        .collect();
    let dependencies = dependencies(&accesses);
    Ok(bound_of(&times, &dependencies, threads, sequential_ms))
}

/// For each transaction, the earlier ones it depends on (the last writer of each location read).
fn dependencies(accesses: &[TxAccess]) -> Vec<Vec<usize>> {
    let mut last_writer: FxHashMap<Location, usize> = FxHashMap::default();
    accesses
        .iter()
        .enumerate()
        .map(|(index, access)| {
            let mut on: Vec<usize> = access.reads.iter().filter_map(|location| last_writer.get(location).copied()).collect();
            on.sort_unstable();
            on.dedup();
            for location in &access.writes {
                last_writer.insert(*location, index);
            }
            on
        })
        .collect()
}

/// The bound from per-transaction times (ms) and dependencies.
fn bound_of(times: &[f64], dependencies: &[Vec<usize>], threads: usize, sequential_ms: f64) -> BlockBound {
    let threads = threads.max(1);
    let txs_ms: f64 = times.iter().sum();
    // Earliest finish with unlimited threads: the critical path.
    let mut finish = vec![0.0f64; times.len()];
    for (index, time) in times.iter().enumerate() {
        finish[index] = dependencies[index].iter().map(|d| finish[*d]).fold(0.0, f64::max) + time;
    }
    let critical_path_ms = finish.iter().copied().fold(0.0, f64::max);
    let scheduled_ms = greedy_schedule(times, dependencies, threads);
    let rest = (sequential_ms - txs_ms).max(0.0) / threads as f64;
    let limit = critical_path_ms.max(txs_ms / threads as f64) + rest;
    BlockBound {
        txs_ms,
        critical_path_ms,
        scheduled_ms,
        limit_speedup: if limit > 0.0 { sequential_ms / limit } else { 1.0 },
        scheduled_speedup: if scheduled_ms + rest > 0.0 { sequential_ms / (scheduled_ms + rest) } else { 1.0 },
    }
}

/// The length of the greedy schedule on `threads` threads: whenever a thread is free, it takes
/// the earliest transaction (in block order) whose dependencies have all finished.
fn greedy_schedule(times: &[f64], dependencies: &[Vec<usize>], threads: usize) -> f64 {
    use std::{cmp::Reverse, collections::BinaryHeap};
    /// A finish time and its transaction, ordered by time, then index.
    struct At(f64, usize);
    impl PartialEq for At {
        fn eq(&self, other: &Self) -> bool {
            self.cmp(other).is_eq()
        }
    }
    impl Eq for At {}
    impl PartialOrd for At {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for At {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
        }
    }
    let mut waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); times.len()];
    for (index, on) in dependencies.iter().enumerate() {
        for d in on {
            dependents[*d].push(index);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..times.len()).filter(|i| waiting[*i] == 0).map(Reverse).collect();
    let mut running: BinaryHeap<Reverse<At>> = BinaryHeap::new();
    let (mut now, mut idle) = (0.0f64, threads);
    loop {
        while idle > 0 {
            let Some(Reverse(next)) = ready.pop() else { break };
            running.push(Reverse(At(now + times[next], next)));
            idle -= 1;
        }
        let Some(Reverse(At(at, done))) = running.pop() else { return now };
        now = at;
        idle += 1;
        for dependent in &dependents[done] {
            waiting[*dependent] -= 1;
            if waiting[*dependent] == 0 {
                ready.push(Reverse(*dependent));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_bounds_by_its_length_and_independent_work_by_the_threads() {
        // Four transactions of 1 ms: 0 -> 1 -> 2 chained, 3 independent; no rest.
        let dependencies = vec![vec![], vec![0], vec![1], vec![]];
        let bound = bound_of(&[1.0; 4], &dependencies, 2, 4.0);
        assert_eq!(bound.critical_path_ms, 3.0);
        assert_eq!(bound.scheduled_ms, 3.0);
        assert!((bound.limit_speedup - 4.0 / 3.0).abs() < 1e-9);
        // Independent: the threads bound it; a rest of 2 ms is split over them.
        let bound = bound_of(&[1.0; 4], &vec![vec![]; 4], 2, 6.0);
        assert_eq!(bound.critical_path_ms, 1.0);
        assert_eq!(bound.scheduled_ms, 2.0);
        assert!((bound.limit_speedup - 6.0 / 3.0).abs() < 1e-9);
        // The greedy schedule runs a later transaction while an earlier one waits: 0 -> 2 chained,
        // 1 and 3 free, so 1 runs beside 0 and 3 beside 2.
        let bound = bound_of(&[1.0, 1.0, 1.0, 1.0], &[vec![], vec![], vec![0], vec![]], 2, 4.0);
        assert_eq!(bound.scheduled_ms, 2.0);
        // It can lose to the limit: the lowest index first is not always best (3 needs 2 and is
        // long: 2 should start at once).
        let bound = bound_of(&[2.0, 1.0, 1.0, 3.0], &[vec![], vec![], vec![], vec![2]], 2, 7.0);
        assert_eq!(bound.critical_path_ms, 4.0);
        assert_eq!(bound.scheduled_ms, 5.0);
    }

    #[test]
    fn the_last_writer_of_each_location_read_is_a_dependency() {
        let a = Location::Account(Address::repeat_byte(1));
        let s = Location::Slot(Address::repeat_byte(2), StorageKey::from(7));
        let accesses = vec![
            TxAccess { reads: vec![a], writes: vec![a] },
            TxAccess { reads: vec![s], writes: vec![s] },
            TxAccess { reads: vec![a, s, a], writes: vec![] },
            TxAccess { reads: vec![s], writes: vec![a] },
            TxAccess { reads: vec![a], writes: vec![] },
        ];
        assert_eq!(dependencies(&accesses), vec![vec![], vec![], vec![0, 1], vec![1], vec![3]]);
    }
}

#[cfg(test)]
mod workload_tests {
    use super::bound;
    use std::path::Path;

    /// The bound of a synthetic workload of `txs` transactions on 2 threads.
    fn bound_of_workload(name: &str, txs: usize) -> super::BlockBound {
        let workload = crate::bench::build(name, Some(txs), Path::new("/nonexistent")).expect("workload");
        // A sequential time equal to the transactions' own leaves no rest to split.
        let probe = bound(&workload.state, &workload.input, &workload.txs, 2, 3, 0.0).expect("bound");
        bound(&workload.state, &workload.input, &workload.txs, 2, 3, probe.txs_ms).expect("bound")
    }

    #[test]
    fn every_counter_increment_waits_for_the_one_before() {
        let bound = bound_of_workload("sequential-chain", 200);
        // Each transaction reads the slot the one before wrote: the chain is the whole block
        // (the second measurement's times differ a little from the first's sum).
        assert!(bound.critical_path_ms > 0.0 && (bound.critical_path_ms - bound.txs_ms).abs() < 1e-9, "{bound:?}");
        assert!(bound.limit_speedup < 1.2, "{bound:?}");
    }

    #[test]
    fn independent_transfers_are_bounded_by_the_threads_alone() {
        let bound = bound_of_workload("raw-transfers", 400);
        assert!(bound.critical_path_ms < bound.txs_ms / 20.0, "{bound:?}");
        assert!(bound.scheduled_ms <= bound.txs_ms / 2.0 + bound.critical_path_ms, "{bound:?}");
        assert!(bound.limit_speedup > 1.5 && bound.limit_speedup <= 2.0 + 1e-9, "{bound:?}");
    }
}
