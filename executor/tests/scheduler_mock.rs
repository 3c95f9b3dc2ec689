//! The Block-STM scheduler and multi-version memory proven without a VM (the pattern of Aptos'
//! `proptest_types`): mock transactions read random keys and write a function of what they
//! read; the real [`Scheduler`] and [`MvMemory`] run them on several threads; the final values
//! must equal those of a sequential baseline. Conflict-heavy by construction (few keys).

use alloy_primitives::{Address, U256};
use pseq_executor::parallel::{
    mv_memory::{Location, MvMemory, Observed, Value},
    scheduler::{Scheduler, Task},
};
use std::collections::HashMap;

struct MockTx {
    reads: Vec<u64>,
    writes: Vec<u64>,
}

fn key(k: u64) -> Location {
    Location::Storage(Address::repeat_byte(7), U256::from(k))
}

fn generate(seed: u64) -> Vec<MockTx> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let keys = 2 + next(10);
    (0..1 + next(60))
        .map(|_| MockTx {
            reads: (0..next(4)).map(|_| next(keys)).collect(),
            writes: (0..next(3)).map(|_| next(keys)).collect(),
        })
        .collect()
}

/// The value a transaction writes: a hash of its index and what it read, so that reading a stale
/// value changes the result.
fn output(tx: usize, read: &[U256]) -> U256 {
    read.iter().fold(U256::from(tx as u64 + 1), |acc, v| acc.wrapping_mul(U256::from(31)).wrapping_add(*v))
}

fn sequential(txs: &[MockTx]) -> HashMap<u64, U256> {
    let mut state = HashMap::new();
    for (i, tx) in txs.iter().enumerate() {
        let read: Vec<U256> = tx.reads.iter().map(|k| state.get(k).copied().unwrap_or_default()).collect();
        for k in &tx.writes {
            state.insert(*k, output(i, &read));
        }
    }
    state
}

/// What one execution read and wrote.
type ReadsAndWrites = (Vec<(Location, Observed)>, Vec<(Location, Value)>);

fn execute(mv: &MvMemory, txs: &[MockTx], tx: usize) -> Result<ReadsAndWrites, usize> {
    let mut reads = Vec::new();
    let mut values = Vec::new();
    for k in &txs[tx].reads {
        let resolved = mv.read(&key(*k), tx)?;
        values.push(match resolved.absolute {
            Some(Value::Storage(v)) => v,
            _ => U256::ZERO,
        });
        reads.push((key(*k), Observed::Versions(resolved.origins)));
    }
    let value = output(tx, &values);
    Ok((reads, txs[tx].writes.iter().map(|k| (key(*k), Value::Storage(value))).collect()))
}

fn parallel(txs: &[MockTx], threads: usize, hoisted: Vec<usize>) -> HashMap<u64, U256> {
    let mv = MvMemory::new(txs.len(), Address::repeat_byte(0xbe));
    let scheduler = Scheduler::with_hoisted(txs.len(), hoisted);
    std::thread::scope(|scope| {
        for worker in 0..threads {
            let (scheduler, mv) = (&scheduler, &mv);
            scope.spawn(move || {
                let mut task = None;
                while !scheduler.is_done() {
                    let Some(current) = task.take().or_else(|| scheduler.next_task(worker)) else {
                        std::thread::yield_now();
                        continue;
                    };
                    task = match current {
                        Task::Execute(tx, incarnation) => loop {
                            match execute(mv, txs, tx) {
                                Ok((reads, writes)) => {
                                    let wrote_new = mv.record(tx, incarnation, reads, writes);
                                    break scheduler.finish_execution(tx, incarnation, wrote_new);
                                }
                                Err(blocking) => {
                                    if scheduler.add_dependency(tx, blocking) {
                                        break None;
                                    }
                                }
                            }
                        },
                        Task::Validate(tx, incarnation) => {
                            let aborted = !mv.validate_reads(tx) && scheduler.try_validation_abort(tx, incarnation);
                            if aborted {
                                mv.convert_writes_to_estimates(tx);
                            }
                            scheduler.finish_validation(tx, aborted)
                        }
                    };
                }
            });
        }
    });
    let (write_sets, _) = mv.into_write_sets();
    let mut state = HashMap::new();
    for writes in write_sets {
        for (location, value) in writes {
            if let (Location::Storage(_, k), Value::Storage(v)) = (location, value) {
                state.insert(k.to::<u64>(), v);
            }
        }
    }
    state
}

#[test]
fn scheduler_and_memory_match_the_sequential_baseline() {
    for seed in 0..3000 {
        let txs = generate(seed);
        let expected = sequential(&txs);
        for threads in [2, 4, 8] {
            assert_eq!(parallel(&txs, threads, Vec::new()), expected, "seed {seed}, {threads} threads");
        }
    }
}

/// Hoisted transactions (started before the block order reaches them) read what lower
/// transactions have not written yet: validation must catch every such read.
#[test]
fn hoisted_transactions_match_the_sequential_baseline() {
    for seed in 0..3000 {
        let txs = generate(seed);
        let expected = sequential(&txs);
        // The top transaction, the middle one, and one past the block (ignored).
        let hoisted = [txs.len() - 1, txs.len() / 2, txs.len() + 3];
        for threads in [2, 4, 8] {
            let hoisted = hoisted[..(threads - 1).min(hoisted.len())].to_vec();
            assert_eq!(parallel(&txs, threads, hoisted), expected, "seed {seed}, {threads} threads");
        }
    }
}

/// The first worker starts at the bottom of the block; the others take the hoisted transactions
/// first, each once (one the block order reached first is skipped), and the block order skips
/// the hoisted ones it reaches while they execute.
#[test]
fn hoisted_transactions_go_to_the_other_workers_once() {
    let scheduler = Scheduler::with_hoisted(10, vec![9, 0, 7]);
    assert_eq!(scheduler.next_task(0), Some(Task::Execute(0, 0)));
    assert_eq!(scheduler.next_task(1), Some(Task::Execute(9, 0)));
    assert_eq!(scheduler.next_task(2), Some(Task::Execute(7, 0)), "transaction 0 already runs");
    // Worker 0 works through the block order up to the hoisted transaction 7.
    for tx in 0..7 {
        if tx > 0 {
            assert_eq!(scheduler.next_task(0), Some(Task::Execute(tx, 0)));
        }
        assert_eq!(scheduler.finish_execution(tx, 0, true), None);
        assert_eq!(scheduler.next_task(0), Some(Task::Validate(tx, 0)));
        assert_eq!(scheduler.finish_validation(tx, false), None);
    }
    // 7 is executing: the block order neither executes nor validates it.
    assert_eq!(scheduler.next_task(0), None);
    assert_eq!(scheduler.next_task(0), None);
    assert_eq!(scheduler.next_task(0), Some(Task::Execute(8, 0)));
    assert_eq!(scheduler.next_task(1), None, "9 is executing and nothing else is left");
}
