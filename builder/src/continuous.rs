//! Continuous block building: the next block is open from the moment its parent is committed.
//!
//! In interval mode the builder does not wait for the deadline to start work. As soon as a block
//! is committed the next one is planned (its timestamp is the deadline's), its pre-block system
//! calls run, and every [`CONTINUOUS_TICK`] the transactions that entered the pool since the last
//! run are chosen and executed on top of the block so far ([`pseq_executor::BlockSession`]).
//! When the deadline comes only the last run, the post-block rules, the state root and the
//! commit remain. The block is exactly what executing its transactions in one go gives: each run
//! continues from the state, gas and indexes of the runs before it.
//!
//! Transactions are ordered by arrival run, then by tip within a run (a block built at the
//! deadline orders them all by tip). Once a transaction has been executed into the open block it
//! stays there: a replacement that arrives later is too late for this block, as on any sequencer
//! that pre-confirms.
//!
//! Part of the state root overlaps too: after each run, the per-account work of the state root
//! (the account's writes, history, storage trie and leaf) is done for the recipients of the
//! run's plain payments (transactions without call data), from their change so far
//! ([`pseq_storage::PreparedAccounts`]). At the deadline it is
//! reused for every account whose final change is the one it was prepared from; the others, and
//! the account trie above them, are computed then.
//!
//! The open block is abandoned (and nothing of it written) when the head moves under it (a
//! dev-mode state edit, a revert, an Engine API block), when the clock of the next block is
//! changed (`evm_setNextBlockTimestamp`, `evm_increaseTime`), or when the block producer is told
//! to do something else (mine now, change mode, stop).

use crate::{
    error::BuildError,
    sequencer::{now_secs, BuildTimings, BuiltBlock, Sequencer},
};
use alloy_evm::FromRecoveredTx;
use alloy_primitives::{map::HashMap, Address};
use pseq_executor::{revm::context::TxEnv, BlockSession, ExecutionOptions, InvalidTxPolicy};
use pseq_mempool::PooledTx;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// How often the open block takes in the transactions that arrived.
pub const CONTINUOUS_TICK: Duration = Duration::from_millis(50);

/// What the block producer says when the open block waits for its next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The time asked for has come.
    Elapsed,
    /// Something else must happen first: abandon the open block.
    Abandon,
}

/// How an open block ended.
#[derive(Debug)]
pub enum Continuous {
    /// It was committed at its deadline.
    Built(BuiltBlock),
    /// The producer abandoned it.
    Abandoned,
    /// The head or the clock changed under it: build the block the ordinary way.
    Stale,
}

impl Sequencer {
    /// Opens the next block now and keeps executing arriving transactions into it until
    /// `deadline`, then commits it. `wait(until)` blocks until `until` or until the producer
    /// has something else to do. See the module documentation.
    pub fn build_continuously(&self, deadline: Instant, mut wait: impl FnMut(Instant) -> Waited) -> Result<Continuous, BuildError> {
        let started = Instant::now();
        let clock = self.clock_state();
        if clock.1.is_some() {
            return Ok(Continuous::Stale);
        }
        let options = ExecutionOptions::parallel(self.settings().threads).with_invalid_tx(InvalidTxPolicy::Skip);
        let guard = self.build_guard();
        let parent = self.head_header()?;
        let until_deadline = deadline.saturating_duration_since(Instant::now());
        let wall = now_secs().saturating_add(until_deadline.as_secs_f64().round() as u64);
        let timestamp = wall.saturating_add_signed(clock.0).max(parent.timestamp + 1);
        let plan = self.plan_block(&parent, None, timestamp, started)?;
        let parent_hash = plan.header.parent_hash;
        let (gas_limit, max_blobs) = (plan.header.gas_limit, plan.max_blobs);
        let view = self.storage().latest();
        let mut session = BlockSession::new(&view, &plan.input, options).map_err(|e| BuildError::Execution(e.to_string()))?;
        drop(guard);

        let mut open = OpenBlock { budget: plan.budget(), chosen: Vec::new(), next_nonce: HashMap::default(), runs: 0 };
        let mut ahead = Duration::ZERO;
        let mut prepared = pseq_storage::PreparedAccounts::default();
        let beneficiary = plan.header.beneficiary;
        loop {
            let at_deadline = Instant::now() >= deadline;
            let run_started = Instant::now();
            let guard = self.build_guard();
            if self.storage().head().1 != parent_hash || self.clock_state() != clock {
                return Ok(Continuous::Stale);
            }
            let (select, execute, recipients) = open.run(self, &mut session)?;
            // What the block has really used, not the gas limits it was chosen by.
            open.budget.gas = gas_limit.saturating_sub(session.gas_used());
            open.budget.blobs = max_blobs.saturating_sub(session.blob_gas_used() / alloy_eips::eip4844::DATA_GAS_PER_BLOB);
            if at_deadline {
                // The work that was left when the block was due.
                let finish_started = Instant::now();
                let output = session.finish().map_err(|e| BuildError::Execution(e.to_string()))?;
                let execute = execute + finish_started.elapsed();
                let timings = BuildTimings { select, execute, ahead, ..Default::default() };
                let mut assembled = self.seal(plan, &open.chosen, output, timings, Some(std::mem::take(&mut prepared)))?;
                assembled.restart_clock(run_started);
                let runs = open.runs;
                let built = self.commit_assembled(assembled)?;
                drop(guard);
                tracing::debug!(number = built.block.header.number, runs, "open block committed");
                return Ok(Continuous::Built(built));
            }
            // State-root work of the accounts this run paid: most are not written again in the
            // block (a changed one is simply recomputed at the end).
            let changed = recipients
                .into_iter()
                .filter(|address| *address != beneficiary)
                .filter_map(|address| session.account_diff(&address).ok().flatten().map(|diff| (address, diff)))
                .collect();
            self.storage().prepare_accounts_ahead(&mut prepared, changed)?;
            drop(guard);
            ahead += run_started.elapsed();
            let next = (Instant::now() + CONTINUOUS_TICK).min(deadline);
            if wait(next) == Waited::Abandon {
                return Ok(Continuous::Abandoned);
            }
        }
    }
}

/// The transactions taken into an open block so far.
struct OpenBlock {
    budget: crate::sequencer::Budget,
    /// Every transaction given to the session, in block index order.
    chosen: Vec<Arc<PooledTx>>,
    /// Per sender, the nonce after its last transaction in the block; `u64::MAX` once one of
    /// its transactions was left out as invalid (its later ones cannot join).
    next_nonce: HashMap<Address, u64>,
    runs: usize,
}

impl OpenBlock {
    /// Chooses the transactions that arrived since the last run and executes them into the
    /// block. Returns the time choosing and executing took, and the recipients of the included
    /// plain payments (once each).
    fn run<S: pseq_executor::StateSource>(&mut self, sequencer: &Sequencer, session: &mut BlockSession<'_, S>) -> Result<(Duration, Duration, Vec<Address>), BuildError> {
        let select_started = Instant::now();
        if session.is_closed() {
            return Ok((Duration::ZERO, Duration::ZERO, Vec::new()));
        }
        let fresh = {
            let pool = sequencer.pool().lock();
            let best = pool.best_transactions_from(|sender| self.next_nonce.get(sender).copied());
            self.budget.fill(best, |_| false)
        };
        if fresh.is_empty() {
            return Ok((select_started.elapsed(), Duration::ZERO, Vec::new()));
        }
        let txs: Vec<TxEnv> = fresh.iter().map(|tx| TxEnv::from_recovered_tx(&tx.envelope, tx.sender)).collect();
        let select = select_started.elapsed();
        let execute_started = Instant::now();
        let first = self.chosen.len();
        let outcome = session.append(&txs).map_err(|e| BuildError::Execution(e.to_string()))?;
        self.runs += 1;
        let mut recipients = Vec::with_capacity(outcome.included.len());
        for &index in &outcome.included {
            let tx = &fresh[index - first];
            self.next_nonce.insert(tx.sender, tx.nonce() + 1);
            // Plain payments only: a called contract is usually written again by later runs, and
            // its change so far (every slot written) is costly to take again and again.
            if alloy_consensus::Transaction::input(&tx.envelope).is_empty() {
                if let Some(to) = alloy_consensus::Transaction::to(&tx.envelope) {
                    recipients.push(to);
                }
            }
        }
        for (index, _) in &outcome.skipped {
            self.next_nonce.insert(fresh[index - first].sender, u64::MAX);
        }
        // A closed session takes no more runs: what it did not reach stays in the pool.
        recipients.sort_unstable();
        recipients.dedup();
        self.chosen.extend(fresh);
        Ok((select, execute_started.elapsed(), recipients))
    }
}
