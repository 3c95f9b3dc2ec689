//! [`execute_block`]: the entry point. Pre-block rules, the transactions (sequentially or with
//! Block-STM), post-block rules, then the normalised [`StateDiff`]. It is a
//! [`BlockSession`](crate::session::BlockSession) given every transaction at once.

use crate::{
    diff::StateDiff,
    error::BlockError,
    parallel,
    receipt::TxReceipt,
    session::BlockSession,
    state::StateSource,
};
use alloy_eips::eip7685::Requests;
use alloy_primitives::{address, Address, TxKind, B256};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use std::num::NonZeroUsize;

/// The mainnet deposit contract (EIP-6110); chains configure their own.
pub const MAINNET_DEPOSIT_CONTRACT: Address = address!("00000000219ab540356cbb839cbe05303d7705fa");

/// A withdrawal (EIP-4895): credit `amount_gwei` to `address` after the transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Withdrawal {
    /// Recipient.
    pub address: Address,
    /// Amount in gwei.
    pub amount_gwei: u64,
}

/// An ommer (uncle) header's fields that its reward depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ommer {
    /// The ommer's beneficiary.
    pub beneficiary: Address,
    /// The ommer's block number.
    pub number: u64,
}

/// Everything about a block that its execution depends on, besides its transactions.
#[derive(Debug, Clone)]
pub struct BlockInput {
    /// Chain id, spec (fork), blob parameters and other EVM configuration.
    pub cfg: CfgEnv,
    /// Number, beneficiary, timestamp, gas limit, base fee, prevrandao, blob gas price.
    pub block: BlockEnv,
    /// Hash of the parent block (EIP-2935 system call).
    pub parent_hash: B256,
    /// Parent beacon block root (EIP-4788 system call), Cancun on.
    pub parent_beacon_block_root: Option<B256>,
    /// Withdrawals, Shanghai on.
    pub withdrawals: Option<Vec<Withdrawal>>,
    /// Ommers, rewarded before the merge.
    pub ommers: Vec<Ommer>,
    /// Whether this block is the DAO fork block (irregular balance move).
    pub dao_fork: bool,
    /// The EIP-6110 deposit contract whose logs become deposit requests (Prague on).
    pub deposit_contract: Address,
    /// The block's blob gas limit (Cancun on); `None` to not check.
    pub max_blob_gas: Option<u64>,
    /// Which block-level rules (system calls, rewards, withdrawals, requests) apply. State tests
    /// execute a bare transaction without any.
    pub rules: BlockRules,
}

/// Which block-level rules a block execution applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRules {
    /// Pre-block and post-block rules: a real block.
    All,
    /// Only the rules before the transactions (DAO drain, EIP-2935, EIP-4788): the state after a
    /// prefix of a block, as pre-Byzantium receipts record it.
    PreOnly,
    /// None: a bare transaction, as state tests run it.
    None,
}

impl BlockInput {
    /// A block input with the given configuration and environment and no extras.
    pub fn new(cfg: CfgEnv, block: BlockEnv) -> Self {
        Self {
            cfg,
            block,
            parent_hash: B256::ZERO,
            parent_beacon_block_root: None,
            withdrawals: None,
            ommers: Vec::new(),
            dao_fork: false,
            deposit_contract: MAINNET_DEPOSIT_CONTRACT,
            max_blob_gas: None,
            rules: BlockRules::All,
        }
    }
}

/// Which path executes the transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// Plain revm, one transaction after the other: the reference.
    Sequential,
    /// Block-STM on `threads` worker threads.
    Parallel {
        /// Worker threads.
        threads: NonZeroUsize,
        /// Run Block-STM even where the small-block rule would pick the sequential path, and to
        /// the end even when conflicts make it slower than sequential execution
        /// ([`parallel::FallbackReason::Contention`]).
        force: bool,
    },
    /// The partitioned path ([`crate::partition`]) whenever its plan finds two groups, whatever
    /// the block's size and balance; Block-STM, forced, where it does not or its check fails.
    /// For tests and for measuring the path itself; the default path
    /// ([`ExecutionMode::Parallel`] without `force`) tries it only where it should pay off.
    Partitioned {
        /// Worker threads.
        threads: NonZeroUsize,
    },
}

/// What to do with a transaction that is invalid against the state it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidTxPolicy {
    /// The block is invalid (importing or validating a block).
    #[default]
    Reject,
    /// Leave the transaction out: it writes nothing and later transactions run without it; a
    /// transaction that does not fit the remaining block gas ends the block (building a block).
    Skip,
}

/// How to execute a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionOptions {
    /// Sequential or parallel.
    pub mode: ExecutionMode,
    /// Invalid transactions: reject the block or skip them.
    pub invalid_tx: InvalidTxPolicy,
}

impl ExecutionOptions {
    /// The sequential reference path, rejecting invalid transactions.
    pub fn sequential() -> Self {
        Self { mode: ExecutionMode::Sequential, invalid_tx: InvalidTxPolicy::Reject }
    }

    /// The parallel path on `threads` threads, rejecting invalid transactions.
    pub fn parallel(threads: usize) -> Self {
        let threads = NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN);
        Self { mode: ExecutionMode::Parallel { threads, force: false }, invalid_tx: InvalidTxPolicy::Reject }
    }

    /// Like [`ExecutionOptions::parallel`] but never taking the small-block fallback.
    pub fn force_parallel(threads: usize) -> Self {
        let mut options = Self::parallel(threads);
        if let ExecutionMode::Parallel { force, .. } = &mut options.mode {
            *force = true;
        }
        options
    }

    /// [`ExecutionMode::Partitioned`] on `threads` threads, rejecting invalid transactions.
    pub fn partitioned(threads: usize) -> Self {
        let threads = NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN);
        Self { mode: ExecutionMode::Partitioned { threads }, invalid_tx: InvalidTxPolicy::Reject }
    }

    /// The same options with another invalid-transaction policy.
    pub fn with_invalid_tx(mut self, policy: InvalidTxPolicy) -> Self {
        self.invalid_tx = policy;
        self
    }
}

/// Which path produced a block's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutedPath {
    /// The sequential path was asked for.
    Sequential,
    /// The block was too small (or its transactions too cheap) for Block-STM to pay off.
    SmallBlockFallback,
    /// One sender sent more than half of the transactions ([`one_sender_majority`]): their nonces
    /// chain them, so Block-STM could not pay off either.
    SenderChainFallback,
    /// Block-STM produced the result.
    Parallel,
    /// The partitioned path produced the result: independent groups, each run sequentially on
    /// its own thread ([`crate::partition`]).
    Partitioned,
    /// Block-STM gave up (see [`parallel::FallbackReason`]) and the sequential path ran.
    ParallelFallback(parallel::FallbackReason),
}

/// The result of executing a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutput {
    /// One receipt per included transaction, in block order.
    pub receipts: Vec<TxReceipt>,
    /// Indexes (into the input transactions) of the included transactions.
    pub included: Vec<usize>,
    /// Transactions left out under [`InvalidTxPolicy::Skip`], with the reason.
    pub skipped: Vec<(usize, String)>,
    /// Gas used by the block.
    pub gas_used: u64,
    /// Blob gas used by the block's transactions.
    pub blob_gas_used: u64,
    /// EIP-7685 requests (Prague on).
    pub requests: Option<Requests>,
    /// Everything the block changed.
    pub state: StateDiff,
    /// The path that produced the result (not part of equality between paths).
    pub path: ExecutedPath,
    /// Counters of the Block-STM run, when one produced the result.
    pub stats: Option<parallel::ParallelStats>,
}

impl BlockOutput {
    /// Whether two outputs describe the same block result, whichever path produced them.
    pub fn same_result(&self, other: &BlockOutput) -> bool {
        self.receipts == other.receipts
            && self.included == other.included
            && self.skipped == other.skipped
            && self.gas_used == other.gas_used
            && self.blob_gas_used == other.blob_gas_used
            && self.requests == other.requests
            && self.state == other.state
    }
}

/// Blocks with fewer transactions than this run sequentially unless forced.
///
/// Chosen from measurement (docs/benchmarks.md, "Small-block fallback"), with the two limits
/// below: over the 67 mainnet blocks at 2 threads, per-block times of Block-STM forced on every
/// block against sequential execution, the rule that sends the rest to the sequential path.
/// Re-measure when the parallel path gets faster.
pub const MIN_PARALLEL_TXS: usize = 32;

/// Blocks whose transactions average a lower gas limit than this run sequentially unless forced:
/// cheap transactions (plain transfers, small calls) cost less to execute than to schedule,
/// record and validate.
pub const MIN_PARALLEL_AVG_GAS_LIMIT: u64 = 75_000;

/// Blocks whose transactions average a gas limit between this and [`MIN_PARALLEL_AVG_GAS_LIMIT`]
/// run through Block-STM only when no one recipient takes more than half of their transactions
/// other than token transfers ([`one_recipient_majority`]): cheap calls spread over many
/// contracts, or token transfers, still pay off (the large mainnet blocks of small calls), cheap
/// calls into one contract's state do not (the synthetic sequential chain: counter calls with a
/// 60,000 gas limit, where the contention rule stops Block-STM late or not at all). Chosen from
/// measurement (docs/benchmarks.md, "Small-block fallback").
pub const MIN_SPREAD_AVG_GAS_LIMIT: u64 = 50_000;

/// Blocks whose transactions' gas limits add up to less than this run sequentially unless forced:
/// too little work to pay for starting the workers and merging their results (the mainnet blocks
/// below it that Block-STM ran took 0.1-1.4 ms sequentially and lost).
pub const MIN_PARALLEL_TOTAL_GAS_LIMIT: u64 = 15_000_000;

/// Whether a block is worth running through Block-STM on `threads` threads.
pub fn parallel_pays_off(txs: &[TxEnv], threads: usize) -> bool {
    if threads < 2 || txs.len() < MIN_PARALLEL_TXS {
        return false;
    }
    let gas_limits: u64 = txs.iter().map(|tx| tx.gas_limit).fold(0, u64::saturating_add);
    if gas_limits < MIN_PARALLEL_TOTAL_GAS_LIMIT {
        return false;
    }
    let average = gas_limits / txs.len() as u64;
    average >= MIN_PARALLEL_AVG_GAS_LIMIT || (average >= MIN_SPREAD_AVG_GAS_LIMIT && !one_recipient_majority(txs))
}

/// The strict majority of `items` (Boyer-Moore's vote: two passes, nothing allocated); `None`
/// counts as no one.
fn majority<T: PartialEq + Copy>(items: impl Iterator<Item = Option<T>> + Clone) -> bool {
    let mut candidate = None;
    let mut lead = 0usize;
    let mut count = 0usize;
    for item in items.clone() {
        count += 1;
        if lead == 0 {
            candidate = item;
            lead = 1;
        } else if candidate.is_some() && candidate == item {
            lead += 1;
        } else {
            lead -= 1;
        }
    }
    let Some(candidate) = candidate else { return false };
    items.filter(|item| *item == Some(candidate)).count() * 2 > count
}

/// Whether one account is the recipient of more than half of `txs`, not counting ERC-20
/// `transfer` calls (each moves two balances of its own, a pattern Block-STM runs in parallel,
/// with lazy credits for the recognised tokens) nor creations.
pub fn one_recipient_majority(txs: &[TxEnv]) -> bool {
    majority(txs.iter().map(|tx| match tx.kind {
        TxKind::Call(to) if crate::parallel::tokens::decode_transfer(&tx.data).is_none() => Some(to),
        _ => None,
    }))
}

/// Whether one sender sent more than half of `txs`. Each of its transactions needs the one before
/// it (the nonce, and the balance unless the transfer is lazy), so more than half of the block is
/// one chain; where every such block was measured (docs/benchmarks.md, "Sender chains"), Block-STM
/// lost to sequential execution, by giving up half-way or by contending on the sender's entries.
/// Boyer-Moore's majority vote: two passes, nothing allocated.
pub fn one_sender_majority(txs: &[TxEnv]) -> bool {
    majority(txs.iter().map(|tx| Some(tx.caller)))
}

/// Results of the transaction phase, whichever path produced them.
#[derive(Debug, Default)]
pub(crate) struct TxPhase {
    pub receipts: Vec<TxReceipt>,
    pub included: Vec<usize>,
    pub skipped: Vec<(usize, String)>,
    pub gas_used: u64,
    pub blob_gas_used: u64,
}

/// Executes a block's transactions on `state` and returns receipts and state changes.
pub fn execute_block<S: StateSource>(
    state: &S,
    input: &BlockInput,
    txs: &[TxEnv],
    options: &ExecutionOptions,
) -> Result<BlockOutput, BlockError> {
    let started = std::time::Instant::now();
    let mut session = BlockSession::new(state, input, *options)?;
    session.append_last(txs)?;
    let ran = started.elapsed();
    let output = session.finish();
    tracing::trace!(run_us = ran.as_micros() as u64, finish_us = (started.elapsed() - ran).as_micros() as u64, "block executed");
    output
}

/// Where a run of transactions starts in its block: the index of its first transaction and the
/// gas and blob gas the transactions before it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChunkStart {
    pub first_index: usize,
    pub gas_used: u64,
    pub blob_gas_used: u64,
}

impl ChunkStart {
    /// An empty transaction phase that continues from here.
    pub(crate) fn phase(self) -> TxPhase {
        TxPhase { gas_used: self.gas_used, blob_gas_used: self.blob_gas_used, ..TxPhase::default() }
    }
}

impl TxPhase {
    /// Makes room for `txs` more transactions.
    pub(crate) fn reserve(&mut self, txs: usize) {
        self.receipts.reserve(txs);
        self.included.reserve(txs);
    }

    /// [`TxPhase::include`] from the parts of a result a receipt needs.
    pub(crate) fn include_parts(&mut self, index: usize, tx: &TxEnv, gas_used: u64, success: bool, logs: Vec<alloy_primitives::Log>) {
        self.gas_used += gas_used;
        self.blob_gas_used += tx_blob_gas(tx);
        self.included.push(index);
        self.receipts.push(TxReceipt { tx_type: tx.tx_type, success, gas_used, cumulative_gas_used: self.gas_used, logs, post_state: None });
    }

    /// Appends an executed transaction: its receipt and its gas.
    pub(crate) fn include(&mut self, index: usize, tx: &TxEnv, result: revm::context::result::ExecutionResult) {
        let (gas_used, success) = (result.tx_gas_used(), result.is_success());
        self.include_parts(index, tx, gas_used, success, result.into_logs());
    }
}

/// Checks, in block order, whether transaction `index` still fits the block's gas and blob gas.
/// Returns the error for [`InvalidTxPolicy::Reject`]; under `Skip` the caller ends the block.
pub(crate) fn check_block_limits(
    input: &BlockInput,
    index: usize,
    tx: &TxEnv,
    gas_used: u64,
    blob_gas_used: u64,
) -> Result<(), BlockError> {
    let remaining = input.block.gas_limit.saturating_sub(gas_used);
    if tx.gas_limit > remaining {
        return Err(BlockError::BlockGasLimitExceeded { index, gas_limit: tx.gas_limit, remaining });
    }
    if let Some(max) = input.max_blob_gas {
        if blob_gas_used.saturating_add(tx_blob_gas(tx)) > max {
            return Err(BlockError::BlobGasLimitExceeded { index });
        }
    }
    Ok(())
}

/// Blob gas of a transaction (EIP-4844).
pub(crate) fn tx_blob_gas(tx: &TxEnv) -> u64 {
    (tx.blob_hashes.len() as u64).saturating_mul(alloy_eips::eip4844::DATA_GAS_PER_BLOB)
}
