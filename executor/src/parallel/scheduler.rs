//! The collaborative scheduler of Block-STM (Gelashvili et al., PPoPP 2023): two shared indexes
//! hand out execution and validation tasks in transaction order; a transaction that reads an
//! ESTIMATE waits on its writer as a dependency; an aborted validation re-opens the transaction
//! with a higher incarnation and pulls validation back so every higher transaction is checked
//! again. Workers finish when both indexes are past the block and no task is in flight.
//!
//! A few transactions may be *hoisted*: handed out once, before anything else, to the workers
//! other than the first, which would otherwise all start at the bottom of the block with it (see
//! [`super::hoist`]). Correctness needs nothing more: a hoisted execution is one more incarnation,
//! validated in block order like every other, and aborted and run again if a lower transaction
//! wrote what it read.

use super::{Incarnation, TxIdx};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A unit of work handed to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Execute this incarnation of the transaction.
    Execute(TxIdx, Incarnation),
    /// Validate the reads of this incarnation of the transaction.
    Validate(TxIdx, Incarnation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    ReadyToExecute,
    Executing,
    Executed,
    Aborting,
}

#[derive(Debug)]
struct TxState {
    incarnation: Incarnation,
    status: Status,
}

/// Hands out tasks to the worker threads of one block.
pub struct Scheduler {
    block_size: usize,
    execution_idx: AtomicUsize,
    validation_idx: AtomicUsize,
    decrease_cnt: AtomicUsize,
    num_active_tasks: AtomicUsize,
    done: AtomicBool,
    halted: AtomicBool,
    states: Vec<Mutex<TxState>>,
    dependents: Vec<Mutex<Vec<TxIdx>>>,
    hoisted: Vec<TxIdx>,
    next_hoisted: AtomicUsize,
    /// Counters of the run, for diagnostics and benchmarks.
    pub stats: SchedulerStats,
}

/// Counters of one parallel run.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Incarnations executed (the first execution of each transaction included).
    pub executions: AtomicUsize,
    /// Validations run.
    pub validations: AtomicUsize,
    /// Validations that aborted an incarnation.
    pub aborts: AtomicUsize,
    /// Executions stopped by an ESTIMATE and parked as a dependency.
    pub dependencies: AtomicUsize,
    /// Executions that destroyed an account which existed before them (pre-Cancun SELFDESTRUCT),
    /// wiping its storage for the transactions after them.
    pub storage_wipes: AtomicUsize,
    /// Executions that credited an ERC-20 balance lazily ([`super::tokens`]).
    pub lazy_token_credits: AtomicUsize,
    /// Executions that credited an account whose balance they held ([`super::held`]).
    pub held_credits: AtomicUsize,
}

impl Scheduler {
    /// A scheduler for a block of `block_size` transactions.
    pub fn new(block_size: usize) -> Self {
        Self::with_hoisted(block_size, Vec::new())
    }

    /// A scheduler that hands out the first execution of each of `hoisted` (transactions of the
    /// block, in that order) to workers other than the first before any task in block order.
    /// Indexes past the block are ignored.
    pub fn with_hoisted(block_size: usize, mut hoisted: Vec<TxIdx>) -> Self {
        hoisted.retain(|tx| *tx < block_size);
        Self {
            block_size,
            execution_idx: AtomicUsize::new(0),
            validation_idx: AtomicUsize::new(0),
            decrease_cnt: AtomicUsize::new(0),
            num_active_tasks: AtomicUsize::new(0),
            done: AtomicBool::new(block_size == 0),
            halted: AtomicBool::new(false),
            states: (0..block_size).map(|_| Mutex::new(TxState { incarnation: 0, status: Status::ReadyToExecute })).collect(),
            dependents: (0..block_size).map(|_| Mutex::new(Vec::new())).collect(),
            hoisted,
            next_hoisted: AtomicUsize::new(0),
            stats: SchedulerStats::default(),
        }
    }

    /// Whether every transaction is executed and validated (or the run was halted).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Stops the run: workers exit at their next call to [`Scheduler::next_task`].
    pub fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        self.done.store(true, Ordering::Release);
    }

    /// Whether [`Scheduler::halt`] was called.
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }

    fn decrease_execution_idx(&self, target: TxIdx) {
        self.execution_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_cnt.fetch_add(1, Ordering::SeqCst);
    }

    fn decrease_validation_idx(&self, target: TxIdx) {
        self.validation_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_cnt.fetch_add(1, Ordering::SeqCst);
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(Ordering::SeqCst);
        let execution_idx = self.execution_idx.load(Ordering::SeqCst);
        let validation_idx = self.validation_idx.load(Ordering::SeqCst);
        if execution_idx.min(validation_idx) >= self.block_size
            && self.num_active_tasks.load(Ordering::SeqCst) == 0
            && observed == self.decrease_cnt.load(Ordering::SeqCst)
        {
            self.done.store(true, Ordering::Release);
        }
    }

    /// Marks `tx` executing if it is ready; counts as the end of an active task otherwise.
    fn try_incarnate(&self, tx: TxIdx) -> Option<Task> {
        if tx < self.block_size {
            let mut state = self.states[tx].lock();
            if state.status == Status::ReadyToExecute {
                state.status = Status::Executing;
                return Some(Task::Execute(tx, state.incarnation));
            }
        }
        self.num_active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    fn next_version_to_execute(&self) -> Option<Task> {
        if self.execution_idx.load(Ordering::SeqCst) >= self.block_size {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
        let tx = self.execution_idx.fetch_add(1, Ordering::SeqCst);
        self.try_incarnate(tx)
    }

    fn next_version_to_validate(&self) -> Option<Task> {
        if self.validation_idx.load(Ordering::SeqCst) >= self.block_size {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
        let tx = self.validation_idx.fetch_add(1, Ordering::SeqCst);
        if tx < self.block_size {
            let state = self.states[tx].lock();
            if state.status == Status::Executed {
                return Some(Task::Validate(tx, state.incarnation));
            }
        }
        self.num_active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// The next hoisted transaction not yet handed out that is still waiting for its first
    /// execution (the block order may have reached some first).
    fn next_hoisted(&self) -> Option<Task> {
        while self.next_hoisted.load(Ordering::Relaxed) < self.hoisted.len() {
            let &tx = self.hoisted.get(self.next_hoisted.fetch_add(1, Ordering::SeqCst))?;
            // An active task from here: the run cannot be found done while it executes. Where
            // the transaction is not ready, `try_incarnate` ends the task.
            self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
            if let Some(task) = self.try_incarnate(tx) {
                return Some(task);
            }
        }
        None
    }

    /// The next task for `worker` (numbered from 0): hoisted transactions first for workers other
    /// than the first, then validation where it lags behind execution. `None` when nothing is
    /// available right now; the caller checks [`Scheduler::is_done`] and asks again.
    pub fn next_task(&self, worker: usize) -> Option<Task> {
        if self.is_done() {
            return None;
        }
        if worker > 0 {
            if let Some(task) = self.next_hoisted() {
                return Some(task);
            }
        }
        if self.validation_idx.load(Ordering::SeqCst) < self.execution_idx.load(Ordering::SeqCst) {
            self.next_version_to_validate()
        } else {
            self.next_version_to_execute()
        }
    }

    /// Whether the last incarnation of `tx` has finished executing (and was not aborted since).
    pub fn has_executed(&self, tx: TxIdx) -> bool {
        self.states[tx].lock().status == Status::Executed
    }

    /// Makes `tx` wait for `blocking`. Returns `false` when `blocking` has executed meanwhile
    /// (the caller re-executes `tx` at once); `true` ends the caller's task.
    pub fn add_dependency(&self, tx: TxIdx, blocking: TxIdx) -> bool {
        let mut dependents = self.dependents[blocking].lock();
        if self.states[blocking].lock().status == Status::Executed {
            return false;
        }
        self.states[tx].lock().status = Status::Aborting;
        dependents.push(tx);
        drop(dependents);
        self.num_active_tasks.fetch_sub(1, Ordering::SeqCst);
        true
    }

    fn set_ready(&self, tx: TxIdx) {
        let mut state = self.states[tx].lock();
        state.incarnation += 1;
        state.status = Status::ReadyToExecute;
    }

    /// Records that `(tx, incarnation)` executed. Returns a validation task for it where one can
    /// follow at once.
    pub fn finish_execution(&self, tx: TxIdx, incarnation: Incarnation, wrote_new_location: bool) -> Option<Task> {
        self.states[tx].lock().status = Status::Executed;
        let dependents = std::mem::take(&mut *self.dependents[tx].lock());
        if let Some(&min_dependent) = dependents.iter().min() {
            for dependent in dependents {
                self.set_ready(dependent);
            }
            self.decrease_execution_idx(min_dependent);
        }
        if self.validation_idx.load(Ordering::SeqCst) > tx {
            if wrote_new_location {
                self.decrease_validation_idx(tx);
            } else {
                return Some(Task::Validate(tx, incarnation));
            }
        }
        self.num_active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }

    /// Claims the abort of `(tx, incarnation)` after a failed validation. Only one validator wins.
    pub fn try_validation_abort(&self, tx: TxIdx, incarnation: Incarnation) -> bool {
        let mut state = self.states[tx].lock();
        if state.incarnation == incarnation && state.status == Status::Executed {
            state.status = Status::Aborting;
            true
        } else {
            false
        }
    }

    /// Records a finished validation; after an abort, returns the re-execution task where the
    /// execution index has already passed `tx`.
    pub fn finish_validation(&self, tx: TxIdx, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready(tx);
            self.decrease_validation_idx(tx + 1);
            if self.execution_idx.load(Ordering::SeqCst) > tx {
                // try_incarnate ends the active task itself when it finds nothing to run.
                return self.try_incarnate(tx);
            }
        }
        self.num_active_tasks.fetch_sub(1, Ordering::SeqCst);
        None
    }
}
