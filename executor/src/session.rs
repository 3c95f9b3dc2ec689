//! [`BlockSession`]: one block executed in runs of transactions given one after the other.
//!
//! A sequencer does not know a block's transactions in advance: they arrive while the block is
//! open. A session applies the pre-block rules once, then executes each run of transactions
//! ([`BlockSession::append`]) on top of the block so far, sequentially or with Block-STM, and
//! applies the post-block rules in [`BlockSession::finish`]. The result is exactly that of
//! executing all the transactions given as one block: each run starts from the state, gas and
//! indexes the earlier runs left, and a run that Block-STM cannot finish exactly (a fallback after
//! a partial merge) rebuilds the block so far sequentially and runs again.

use crate::{
    block::{one_sender_chain, parallel_pays_off, BlockInput, BlockOutput, BlockRules, ChunkStart, ExecutedPath, ExecutionMode, ExecutionOptions, TxPhase},
    error::BlockError,
    overlay::BlockOverlay,
    parallel::{self, ParallelOutcome, ParallelStats},
    partition,
    rules, sequential,
    state::StateSource,
};
use revm::context::TxEnv;

/// What one [`BlockSession::append`] did with its transactions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Block indexes of the run's transactions that were included.
    pub included: Vec<usize>,
    /// Block indexes of the run's transactions left out as invalid, with the reason.
    pub skipped: Vec<(usize, String)>,
    /// Whether the block is closed: a transaction did not fit the remaining gas or blob gas, and
    /// later runs are not executed.
    pub closed: bool,
}

/// A block being executed run by run. See the module documentation.
pub struct BlockSession<'a, S> {
    state: &'a S,
    input: &'a BlockInput,
    options: ExecutionOptions,
    overlay: BlockOverlay<'a, S>,
    /// Number of transactions given so far.
    given: usize,
    /// Those transactions, kept for rebuilding the block so far when a later run falls back.
    txs: Vec<TxEnv>,
    /// The last run was given ([`BlockSession::append_last`]): no more runs.
    sealed: bool,
    phase: TxPhase,
    closed: bool,
    path: Option<ExecutedPath>,
    stats: Option<ParallelStats>,
}

impl<S> std::fmt::Debug for BlockSession<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSession").field("txs", &self.given).field("gas_used", &self.phase.gas_used).field("closed", &self.closed).finish()
    }
}

impl<'a, S: StateSource> BlockSession<'a, S> {
    /// Opens a block on `state` (the parent's post-state) and applies its pre-block rules.
    pub fn new(state: &'a S, input: &'a BlockInput, options: ExecutionOptions) -> Result<Self, BlockError> {
        let overlay = Self::pre_block(state, input)?;
        Ok(Self { state, input, options, overlay, given: 0, txs: Vec::new(), sealed: false, phase: TxPhase::default(), closed: false, path: None, stats: None })
    }

    fn pre_block(state: &'a S, input: &BlockInput) -> Result<BlockOverlay<'a, S>, BlockError> {
        let mut overlay = BlockOverlay::new(state, input.cfg.spec);
        if input.rules != BlockRules::None {
            rules::apply_pre_block(&mut overlay, input)?;
        }
        Ok(overlay)
    }

    /// Gas used by the transactions included so far.
    pub fn gas_used(&self) -> u64 {
        self.phase.gas_used
    }

    /// Blob gas used by the transactions included so far.
    pub fn blob_gas_used(&self) -> u64 {
        self.phase.blob_gas_used
    }

    /// Number of transactions given so far (included, skipped or not reached).
    pub fn len(&self) -> usize {
        self.given
    }

    /// Whether no transaction was given yet.
    pub fn is_empty(&self) -> bool {
        self.given == 0
    }

    /// Whether a transaction did not fit and the block takes no more.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Executes `txs` after the transactions given so far. They get the block indexes
    /// `len()..len() + txs.len()`. Under [`crate::InvalidTxPolicy::Reject`] an invalid transaction
    /// is an error, as it would be in [`crate::execute_block`]; the session must then be dropped.
    pub fn append(&mut self, txs: &[TxEnv]) -> Result<AppendOutcome, BlockError> {
        let outcome = self.run(txs)?;
        self.txs.extend_from_slice(txs);
        Ok(outcome)
    }

    /// [`BlockSession::append`] for the last run ([`crate::execute_block`]'s only one): its
    /// transactions are not copied for a rebuild, and the session takes no further run.
    pub(crate) fn append_last(&mut self, txs: &[TxEnv]) -> Result<AppendOutcome, BlockError> {
        let outcome = self.run(txs)?;
        self.sealed = true;
        Ok(outcome)
    }

    fn run(&mut self, txs: &[TxEnv]) -> Result<AppendOutcome, BlockError> {
        if self.sealed {
            return Err(BlockError::Evm("a run given after the last one".into()));
        }
        let start = ChunkStart { first_index: self.given, gas_used: self.phase.gas_used, blob_gas_used: self.phase.blob_gas_used };
        self.given += txs.len();
        if self.closed || txs.is_empty() {
            return Ok(AppendOutcome { closed: self.closed, ..Default::default() });
        }
        let policy = self.options.invalid_tx;
        let attempt = match self.options.mode {
            ExecutionMode::Parallel { threads, force: false } => partition::execute_transactions(&mut self.overlay, self.input, txs, threads, policy, start, partition::Rule::Measured)?,
            ExecutionMode::Partitioned { threads } => partition::execute_transactions(&mut self.overlay, self.input, txs, threads, policy, start, partition::Rule::Always)?,
            _ => partition::Attempt::NotPlanned,
        };
        if let partition::Attempt::Rejected(reason) = &attempt {
            tracing::debug!(?reason, "partitioned run rejected; Block-STM runs the transactions");
        }
        // Where the partitioned attempt did not produce the result, the test mode goes on as
        // forced Block-STM.
        let parallel = match self.options.mode {
            ExecutionMode::Sequential => None,
            ExecutionMode::Parallel { threads, force } => Some((threads, force)),
            ExecutionMode::Partitioned { threads } => Some((threads, true)),
        };
        let (run, path) = match (attempt, parallel) {
            (partition::Attempt::Done(phase), _) => (phase, ExecutedPath::Partitioned),
            (_, None) => (sequential::execute_transactions(&mut self.overlay, self.input, txs, policy, start)?, ExecutedPath::Sequential),
            (_, Some((threads, force))) if !force && !parallel_pays_off(txs, threads.get(), |address| self.has_code(address)) => {
                (sequential::execute_transactions(&mut self.overlay, self.input, txs, policy, start)?, ExecutedPath::SmallBlockFallback)
            }
            (_, Some((_, false))) if one_sender_chain(txs) => {
                (sequential::execute_transactions(&mut self.overlay, self.input, txs, policy, start)?, ExecutedPath::SenderChainFallback)
            }
            (_, Some((threads, force))) => match parallel::execute_transactions(&mut self.overlay, self.input, txs, threads, policy, start, !force, self.options.techniques)? {
                ParallelOutcome::Done(result) => {
                    self.stats = Some(result.stats);
                    (result.phase, ExecutedPath::Parallel)
                }
                ParallelOutcome::Fallback(reason) => {
                    tracing::debug!(?reason, "parallel execution fell back to sequential");
                    // A failed lazy check stops the merge, which may have written part of this
                    // run: rebuild the block so far from the parent state (the earlier runs give
                    // the same result sequentially). The other reasons stop the run before the
                    // merge, leaving the overlay as the earlier runs left it. Then run these
                    // transactions sequentially.
                    if reason == parallel::FallbackReason::LazyCheckFailed {
                        self.rebuild(start)?;
                    }
                    (sequential::execute_transactions(&mut self.overlay, self.input, txs, policy, start)?, ExecutedPath::ParallelFallback(reason))
                }
            },
        };
        self.path = Some(path);
        let reached = run.included.len() + run.skipped.len();
        self.closed = reached < txs.len();
        let outcome = AppendOutcome { included: run.included.clone(), skipped: run.skipped.clone(), closed: self.closed };
        self.phase.receipts.extend(run.receipts);
        self.phase.included.extend(run.included);
        self.phase.skipped.extend(run.skipped);
        self.phase.gas_used = run.gas_used;
        self.phase.blob_gas_used = run.blob_gas_used;
        Ok(outcome)
    }

    /// Whether `address` has code in the block so far; an account that cannot be read counts as
    /// having code (the small-block rule then picks the sequential path, which reports the error).
    fn has_code(&self, address: alloy_primitives::Address) -> bool {
        use revm::DatabaseRef;
        self.overlay.basic_ref(address).map_or(true, |info| info.is_some_and(|info| info.code_hash != revm::primitives::KECCAK_EMPTY))
    }

    /// Re-executes the transactions before `start` sequentially on a fresh overlay.
    fn rebuild(&mut self, start: ChunkStart) -> Result<(), BlockError> {
        self.overlay = Self::pre_block(self.state, self.input)?;
        let earlier = &self.txs[..start.first_index];
        let redone = sequential::execute_transactions(&mut self.overlay, self.input, earlier, self.options.invalid_tx, ChunkStart::default())?;
        if redone.included != self.phase.included || redone.gas_used != self.phase.gas_used || redone.receipts != self.phase.receipts {
            return Err(BlockError::Evm("the block so far executed differently when rebuilt sequentially".into()));
        }
        Ok(())
    }

    /// What the block so far changed in `address` (see [`BlockOverlay::account_diff`]); the
    /// post-block rules may still change it.
    pub fn account_diff(&self, address: &alloy_primitives::Address) -> Result<Option<crate::diff::AccountDiff>, BlockError> {
        Ok(self.overlay.account_diff(address)?)
    }

    /// Applies the post-block rules (withdrawals, rewards, requests) and returns the block's
    /// result.
    pub fn finish(mut self) -> Result<BlockOutput, BlockError> {
        let requests = if self.input.rules == BlockRules::All {
            rules::apply_post_block(&mut self.overlay, self.input, &self.phase.receipts)?
        } else {
            None
        };
        // The parallel path also normalises the diff on its threads, where its transactions ran
        // on them: after a sequential fallback the helpers have slept since the last block, and
        // waking them costs more than the diff of a block the rules kept sequential gains.
        let threads = match (self.options.mode, self.path) {
            (ExecutionMode::Sequential, _) | (_, Some(ExecutedPath::SmallBlockFallback | ExecutedPath::SenderChainFallback)) => 1,
            (ExecutionMode::Parallel { threads, .. } | ExecutionMode::Partitioned { threads }, _) => threads.get(),
        };
        let state = self.overlay.into_diff_on(threads)?;
        Ok(BlockOutput {
            receipts: self.phase.receipts,
            included: self.phase.included,
            skipped: self.phase.skipped,
            gas_used: self.phase.gas_used,
            blob_gas_used: self.phase.blob_gas_used,
            requests,
            state,
            path: self.path.unwrap_or(match self.options.mode {
                ExecutionMode::Sequential => ExecutedPath::Sequential,
                ExecutionMode::Parallel { .. } | ExecutionMode::Partitioned { .. } => ExecutedPath::SmallBlockFallback,
            }),
            stats: self.stats,
        })
    }
}
