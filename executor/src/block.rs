//! [`execute_block`]: the entry point. Pre-block rules, the transactions (sequentially or with
//! Block-STM), post-block rules, then the normalised [`StateDiff`]. It is a
//! [`BlockSession`] given every transaction at once.

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

/// Techniques of Block-STM that can be switched off, to measure what each one buys in the same
/// process (`pseq bench exec --without`). Every combination gives the sequential result; only
/// the time changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Techniques(u8);

impl Techniques {
    /// Heavy transactions late in the block started first ([`crate::parallel::hoist`]).
    pub const HOISTING: Self = Self(1);
    /// A transaction that finds its sender's nonce too high waits for the sender's lower
    /// transaction instead of being recorded invalid ([`crate::parallel::worker`]).
    pub const NONCE_WAITS: Self = Self(2);
    /// ERC-20 `transfer` credits applied as deltas ([`crate::parallel::tokens`]).
    pub const LAZY_TOKEN_CREDITS: Self = Self(4);
    /// Balances of accounts that cannot be empty (with code, or a nonce) read only when the EVM
    /// looks at them ([`crate::parallel::held`]).
    pub const HELD_BALANCES: Self = Self(8);
    /// Every technique: the default.
    pub const ALL: Self = Self(15);
    /// Each technique with the name `--without` takes.
    pub const NAMED: [(&'static str, Self); 4] = [
        ("hoisting", Self::HOISTING),
        ("nonce-waits", Self::NONCE_WAITS),
        ("lazy-token-credits", Self::LAZY_TOKEN_CREDITS),
        ("held-balances", Self::HELD_BALANCES),
    ];

    /// Whether every technique of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` without the techniques of `other`.
    pub fn remove(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Both sets together.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The technique called `name` (see [`Techniques::NAMED`]).
    pub fn named(name: &str) -> Option<Self> {
        Self::NAMED.iter().find(|(known, _)| *known == name).map(|(_, technique)| *technique)
    }

    /// The names of the techniques in the set, comma separated.
    pub fn names(self) -> String {
        Self::NAMED.iter().filter(|(_, technique)| self.contains(*technique)).map(|(name, _)| *name).collect::<Vec<_>>().join(",")
    }
}

/// How to execute a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionOptions {
    /// Sequential or parallel.
    pub mode: ExecutionMode,
    /// Invalid transactions: reject the block or skip them.
    pub invalid_tx: InvalidTxPolicy,
    /// The techniques Block-STM uses (all by default).
    pub techniques: Techniques,
}

impl ExecutionOptions {
    /// The sequential reference path, rejecting invalid transactions.
    pub fn sequential() -> Self {
        Self { mode: ExecutionMode::Sequential, invalid_tx: InvalidTxPolicy::Reject, techniques: Techniques::ALL }
    }

    /// The parallel path on `threads` threads, rejecting invalid transactions.
    pub fn parallel(threads: usize) -> Self {
        let threads = NonZeroUsize::new(threads).unwrap_or(NonZeroUsize::MIN);
        Self { mode: ExecutionMode::Parallel { threads, force: false }, invalid_tx: InvalidTxPolicy::Reject, techniques: Techniques::ALL }
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
        Self { mode: ExecutionMode::Partitioned { threads }, invalid_tx: InvalidTxPolicy::Reject, techniques: Techniques::ALL }
    }

    /// The same options with another invalid-transaction policy.
    pub fn with_invalid_tx(mut self, policy: InvalidTxPolicy) -> Self {
        self.invalid_tx = policy;
        self
    }

    /// The same options with Block-STM's `techniques` switched off.
    pub fn without(mut self, techniques: Techniques) -> Self {
        self.techniques = self.techniques.remove(techniques);
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
    /// One sender sent more than a quarter of the transactions ([`one_sender_chain`]): their
    /// nonces chain them, so Block-STM could not pay off either.
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
/// This and the limits below were chosen from measurement (docs/benchmarks.md, "Small-block
/// fallback" and "The small-block rule re-fitted"): over the 67 mainnet blocks at 2 threads,
/// per-block times of Block-STM forced on every block against sequential execution, the rule that
/// sends the losers to the sequential path. Re-measure when the parallel path gets faster.
pub const MIN_PARALLEL_TXS: usize = 16;

/// Blocks whose transactions that run code (with calldata, or creating a contract) have less gas
/// limit than this in all run sequentially unless forced. Plain value transfers cost about a
/// microsecond each, less than Block-STM spends scheduling, recording and validating them (a
/// 30 M-gas block of independent transfers, forced: 0.57x); what pays for a Block-STM run is
/// calls, which take tens of microseconds each, and a block with enough of them wins even when
/// most of its transactions are transfers (mainnet blocks of 866 and 1,100 transactions, most
/// paying one exchange: 1.5-1.6x).
pub const MIN_PARALLEL_CALL_GAS_LIMIT: u64 = 4_000_000;

/// Blocks whose calls and creations have less gas limit than this per plain value transfer run
/// sequentially unless forced: each transfer costs Block-STM more than it gains (2.4 µs of thread
/// time in a Block-STM run of 1,430 independent transfers, 0.8 µs sequentially), and the calls
/// must pay for them. Blocks near the line win only while both cores are free: a mainnet block of
/// 1,316 transfers and 30 calls (5,200 per transfer) won 1.1x then and fell to 0.7x whenever the
/// machine took part of a core away; one with 11,400 per transfer (15274915) fell from 1.27x to
/// 0.88-0.91x, while every block above 28,000 per transfer stayed above 1.15x.
pub const MIN_CALL_GAS_LIMIT_PER_TRANSFER: u64 = 15_000;

/// Blocks whose transactions average a gas limit of at least this go to Block-STM even when most
/// of them call one contract ([`majority_recipient`]): calls that costly give the workers
/// enough to do between conflicts, and the contention rule stops a run that is a chain.
pub const MIN_PARALLEL_AVG_GAS_LIMIT: u64 = 75_000;

/// Whether a block is worth running through Block-STM on `threads` threads. `has_code` tells
/// whether an account has code in the state the block starts from.
///
/// - At least [`MIN_PARALLEL_TXS`] transactions, whose calls and creations carry at least
///   [`MIN_PARALLEL_CALL_GAS_LIMIT`] of gas limit, and [`MIN_CALL_GAS_LIMIT_PER_TRANSFER`] per
///   plain transfer.
/// - Where one account receives more than half of the transactions (token `transfer`s and
///   creations left out), it must have no code: a hot recipient without code (an exchange's
///   deposit address) takes lazy credits, which do not conflict, but cheap calls into one
///   contract's state are a chain (the synthetic sequential chain: counter calls with a 60,000
///   gas limit). Blocks of costlier calls ([`MIN_PARALLEL_AVG_GAS_LIMIT`]) are let in anyway.
pub fn parallel_pays_off(txs: &[TxEnv], threads: usize, has_code: impl FnOnce(Address) -> bool) -> bool {
    if threads < 2 || txs.len() < MIN_PARALLEL_TXS {
        return false;
    }
    // One pass: the gas limits of the calls and creations, the plain transfers, all gas limits.
    let (mut call_gas_limits, mut transfers, mut gas_limits) = (0u64, 0u64, 0u64);
    for tx in txs {
        if tx.data.is_empty() && tx.kind != TxKind::Create {
            transfers += 1;
        } else {
            call_gas_limits = call_gas_limits.saturating_add(tx.gas_limit);
        }
        gas_limits = gas_limits.saturating_add(tx.gas_limit);
    }
    if call_gas_limits < MIN_PARALLEL_CALL_GAS_LIMIT.max(transfers.saturating_mul(MIN_CALL_GAS_LIMIT_PER_TRANSFER)) {
        return false;
    }
    if gas_limits / txs.len() as u64 >= MIN_PARALLEL_AVG_GAS_LIMIT {
        return true;
    }
    majority_recipient(txs).is_none_or(|recipient| !has_code(recipient))
}

/// The item that is more than `1 / (COUNTERS + 1)` of `items`, if one is (Misra and Gries's
/// frequent items: two passes, `COUNTERS` candidates, nothing allocated). `None` items count
/// towards the total but are never the answer.
fn frequent<T: PartialEq + Copy, const COUNTERS: usize>(items: impl Iterator<Item = Option<T>> + Clone) -> Option<T> {
    let mut candidates: [(Option<T>, usize); COUNTERS] = [(None, 0); COUNTERS];
    let mut total = 0usize;
    for item in items.clone() {
        total += 1;
        if let Some(slot) = candidates.iter_mut().find(|(candidate, weight)| *weight > 0 && *candidate == item) {
            slot.1 += 1;
        } else if let Some(slot) = candidates.iter_mut().find(|(_, weight)| *weight == 0) {
            *slot = (item, 1);
        } else {
            for slot in &mut candidates {
                slot.1 -= 1;
            }
        }
    }
    // Every item above the share is among the candidates; the exact counts decide.
    candidates.iter().filter_map(|(candidate, weight)| (*weight > 0).then_some(*candidate).flatten()).find(|candidate| {
        let count = items.clone().filter(|item| *item == Some(*candidate)).count();
        count * (COUNTERS + 1) > total
    })
}

/// The account that receives more than half of `txs`, not counting ERC-20 `transfer` calls (each
/// moves two balances of its own, a pattern Block-STM runs in parallel, with lazy credits for the
/// recognised tokens) nor creations.
pub fn majority_recipient(txs: &[TxEnv]) -> Option<Address> {
    frequent::<_, 1>(txs.iter().map(|tx| match tx.kind {
        TxKind::Call(to) if crate::parallel::tokens::decode_transfer(&tx.data).is_none() => Some(to),
        _ => None,
    }))
}

/// Whether one sender sent more than a quarter of `txs`. Each of its transactions needs the one
/// before it (the nonce, and the balance unless the transfer is lazy): Block-STM executes the
/// chain's later links early on the old nonce and throws them away. Where such mainnet blocks
/// were measured (docs/benchmarks.md, "Sender chains" and "The small-block rule re-fitted"),
/// every one with a third or more from one sender lost to sequential execution or gave up on
/// contention, and no block Block-STM runs under this rule has more than 15% from one sender.
pub fn one_sender_chain(txs: &[TxEnv]) -> bool {
    frequent::<_, 3>(txs.iter().map(|tx| Some(tx.caller))).is_some()
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
