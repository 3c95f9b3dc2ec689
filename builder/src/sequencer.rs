//! [`Sequencer`]: the node's shared core. It owns the storage, the chain spec and the pool,
//! admits transactions, builds and commits blocks, and tells subscribers about new blocks.

use crate::{
    chain_rules::ChainRules,
    error::BuildError,
    metrics::Metrics,
};
use alloy_consensus::{constants::EMPTY_WITHDRAWALS, proofs, Block, BlockBody, Header, TxEnvelope, EMPTY_OMMER_ROOT_HASH};
use alloy_eips::eip1559::BaseFeeParams;
use alloy_evm::FromRecoveredTx;
use alloy_primitives::{Address, Bytes, B256};
use parking_lot::Mutex;
use pseq_config::ChainSpec;
use pseq_executor::{
    execute_block, logs_bloom, receipts_root,
    revm::{context::TxEnv, database::DatabaseRef, primitives::hardfork::SpecId},
    BlockOutput, ExecutionOptions, InvalidTxPolicy, TxReceipt,
};
use pseq_mempool::{Added, Pool, PoolConfig, PoolError, PooledTx, SenderAccount, ValidationConfig};
use pseq_storage::Storage;
use std::{
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::sync::broadcast;

/// How blocks are built.
#[derive(Debug, Clone)]
pub struct BuilderSettings {
    /// Gas limit of built blocks.
    pub gas_limit: u64,
    /// Executor threads.
    pub threads: usize,
    /// Fee recipient of built blocks.
    pub coinbase: Address,
    /// Extra data of built headers (at most 32 bytes).
    pub extra_data: Bytes,
    /// In interval mode, keep the next block open and execute transactions into it as they
    /// arrive ([`crate::continuous`]).
    pub continuous: bool,
}

impl Default for BuilderSettings {
    fn default() -> Self {
        Self { gas_limit: 30_000_000, threads: 1, coinbase: Address::ZERO, extra_data: Bytes::from_static(b"pseq"), continuous: false }
    }
}

/// A committed block, as subscribers see it.
#[derive(Debug, Clone)]
pub struct NewBlock {
    /// The header.
    pub header: Header,
    /// Its hash.
    pub hash: B256,
    /// Hashes of its transactions, in order.
    pub tx_hashes: Vec<B256>,
    /// Its receipts, in order.
    pub receipts: Vec<TxReceipt>,
}

/// What building one block measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BuildTimings {
    /// Choosing transactions from the pool.
    pub select: Duration,
    /// Executing them.
    pub execute: Duration,
    /// Computing the state root and the writes.
    pub state_root: Duration,
    /// Writing the block.
    pub commit: Duration,
    /// Choosing and executing transactions before the block was due (continuous building; not
    /// part of the other times, which count from the deadline).
    pub ahead: Duration,
}

/// The result of building a block.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    /// The committed block.
    pub block: Arc<NewBlock>,
    /// Transactions left out as invalid, with the reason.
    pub skipped: Vec<(B256, String)>,
    /// Where the time went.
    pub timings: BuildTimings,
}

/// What a consensus client asks a block to be built with (`forkchoiceUpdated` attributes, with
/// the OP-stack extensions `transactions`, `noTxPool` and `gasLimit`, and `testing_buildBlockV1`'s
/// extra data).
#[derive(Debug, Clone, Default)]
pub struct PayloadAttributes {
    /// Timestamp of the block.
    pub timestamp: u64,
    /// `prevRandao` (the header's mix hash).
    pub prev_randao: B256,
    /// Fee recipient.
    pub fee_recipient: Address,
    /// Withdrawals (Shanghai on).
    pub withdrawals: Vec<alloy_eips::eip4895::Withdrawal>,
    /// Parent beacon block root (Cancun on).
    pub parent_beacon_block_root: Option<B256>,
    /// Build without pool transactions.
    pub no_tx_pool: bool,
    /// Transactions the block must start with, in this order (OP deposits, `testing_buildBlockV1`);
    /// if one of them is invalid the build fails.
    pub transactions: Vec<Arc<PooledTx>>,
    /// Gas limit of the block; by default it moves from the parent's towards the configured one
    /// by at most 1/1024 (geth's `CalcGasLimit`).
    pub gas_limit: Option<u64>,
    /// Extra data of the header, instead of the configured one.
    pub extra_data: Option<Bytes>,
}

/// geth's `CalcGasLimit`: the parent's gas limit moved towards `desired` by less than 1/1024 of
/// it (the most a valid header may move), never below the protocol minimum of 5,000.
pub fn next_gas_limit(parent: u64, desired: u64) -> u64 {
    let delta = (parent / 1024).saturating_sub(1);
    let desired = desired.max(5_000);
    if parent < desired {
        parent.saturating_add(delta).min(desired)
    } else {
        parent.saturating_sub(delta).max(desired)
    }
}

/// A block built and executed, its state update prepared, not yet committed.
#[derive(Debug)]
pub struct Assembled {
    /// The block.
    pub block: Block<TxEnvelope>,
    /// Its receipts.
    pub receipts: Vec<TxReceipt>,
    /// The prepared state writes (valid while the head is the block's parent).
    pub update: pseq_storage::StateUpdate,
    /// Hashes of its transactions.
    pub tx_hashes: Vec<B256>,
    /// Senders of the transactions considered (for the pool update).
    pub senders: Vec<Address>,
    /// Transactions left out as invalid.
    pub skipped: Vec<(B256, String)>,
    /// EIP-7685 requests (Prague on).
    pub requests: Option<alloy_eips::eip7685::Requests>,
    /// What the fee recipient earns in tips.
    pub block_value: alloy_primitives::U256,
    /// Blob sidecars of the included blob transactions, in block order (for the payload's blobs
    /// bundle).
    pub sidecars: Vec<Arc<alloy_eips::eip7594::BlobTransactionSidecarVariant>>,
    /// Senders of included transactions that their signatures do not give (impersonation), by
    /// position in the block.
    pub sender_overrides: Vec<(u32, Address)>,
    /// Where the time went so far.
    pub timings: BuildTimings,
    started: Instant,
}

/// The parts of a block fixed before its transactions are chosen ([`Sequencer::plan_block`]).
#[derive(Debug)]
pub(crate) struct BlockPlan {
    /// The header, without the fields its transactions decide.
    pub header: Header,
    /// What executing the block depends on besides its transactions.
    pub input: pseq_executor::BlockInput,
    /// The block's fork.
    pub spec: SpecId,
    /// Blobs a block may hold.
    pub max_blobs: u64,
    /// The body's withdrawals (Shanghai on).
    pub body_withdrawals: Option<alloy_eips::eip4895::Withdrawals>,
    /// When building started.
    pub started: Instant,
}

impl BlockPlan {
    /// The block's whole gas and blob budget.
    pub fn budget(&self) -> Budget {
        Budget { gas: self.header.gas_limit, blobs: self.max_blobs }
    }
}

/// What is left of a block's gas limit and blob budget while transactions are chosen (by their
/// gas limits, so that whatever they use the block fits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub gas: u64,
    pub blobs: u64,
}

fn blob_count(tx: &PooledTx) -> u64 {
    alloy_consensus::Transaction::blob_versioned_hashes(&tx.envelope).map_or(0, |h| h.len() as u64)
}

impl Budget {
    /// Counts `tx` against the budget (forced transactions, counted whether they fit or not).
    pub fn take(&mut self, tx: &PooledTx) {
        self.gas = self.gas.saturating_sub(tx.gas_limit());
        self.blobs = self.blobs.saturating_sub(blob_count(tx));
    }

    /// Takes transactions from `best` in its order while they fit; a transaction that does not
    /// fit (or that `exclude` names) leaves its sender's later ones out too.
    pub fn fill(&mut self, mut best: pseq_mempool::BestTransactions, exclude: impl Fn(&PooledTx) -> bool) -> Vec<Arc<PooledTx>> {
        let mut chosen = Vec::new();
        while self.gas >= 21_000 {
            let Some(tx) = best.next() else { break };
            if tx.gas_limit() > self.gas || blob_count(&tx) > self.blobs || exclude(&tx) {
                best.mark_invalid(&tx);
                continue;
            }
            self.take(&tx);
            chosen.push(tx);
        }
        chosen
    }
}

/// Time settings of the next blocks (dev RPC: `evm_increaseTime`, `evm_setNextBlockTimestamp`).
#[derive(Debug, Default)]
struct Clock {
    offset_secs: AtomicI64,
    next_timestamp: Mutex<Option<u64>>,
}

impl Assembled {
    /// Counts the build time from `from` (continuous building: from the last run).
    pub(crate) fn restart_clock(&mut self, from: Instant) {
        self.started = from;
    }
}

/// The node's core, shared by the block producer and the RPC servers.
pub struct Sequencer {
    storage: Arc<Storage>,
    spec: ChainSpec,
    rules: ChainRules,
    settings: BuilderSettings,
    pool: Mutex<Pool>,
    build_lock: Mutex<()>,
    events: broadcast::Sender<Arc<NewBlock>>,
    wake: Mutex<Option<std::sync::mpsc::Sender<crate::miner::MinerCommand>>>,
    clock: Clock,
    metrics: Metrics,
    built: AtomicU64,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer").field("storage", &self.storage).field("settings", &self.settings).finish()
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Sequencer {
    /// A sequencer over an opened datadir of `spec`'s chain.
    pub fn new(storage: Arc<Storage>, spec: ChainSpec, settings: BuilderSettings) -> Result<Self, BuildError> {
        let rules = ChainRules::from_spec(&spec);
        let head = storage.header_by_number(storage.head().0)?.ok_or_else(|| BuildError::Storage("head header missing".into()))?;
        let validation = validation_rules(&rules, &head, settings.gas_limit)?;
        let base_fee = next_base_fee(&head);
        let mut pool_config = PoolConfig::new(validation);
        // reth's 10,000-transaction sub-pools hold less than one block of a high-gas-limit chain:
        // keep room for four blocks of plain transfers.
        let block_capacity = (settings.gas_limit / 21_000) as usize;
        for limit in [&mut pool_config.pending, &mut pool_config.base_fee, &mut pool_config.queued] {
            limit.max_txs = limit.max_txs.max(4 * block_capacity);
            limit.max_bytes = limit.max_bytes.max(4 * block_capacity * 200);
        }
        let pool = Pool::new(pool_config, base_fee);
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            storage,
            spec,
            rules,
            settings,
            pool: Mutex::new(pool),
            build_lock: Mutex::new(()),
            events,
            wake: Mutex::new(None),
            clock: Clock::default(),
            metrics: Metrics::default(),
            built: AtomicU64::new(0),
        })
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The chain spec.
    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// The chain's per-block rules.
    pub fn rules(&self) -> &ChainRules {
        &self.rules
    }

    /// The builder settings.
    pub fn settings(&self) -> &BuilderSettings {
        &self.settings
    }

    /// The transaction pool (lock briefly: admission and block building wait on it).
    pub fn pool(&self) -> &Mutex<Pool> {
        &self.pool
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The head header.
    pub fn head_header(&self) -> Result<Header, BuildError> {
        let (number, _) = self.storage.head();
        self.storage.header_by_number(number)?.ok_or_else(|| BuildError::Storage(format!("header {number} missing")))
    }

    /// A stream of committed blocks.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<NewBlock>> {
        self.events.subscribe()
    }

    /// Lets the block producer know of new transactions.
    pub(crate) fn set_wake(&self, sender: std::sync::mpsc::Sender<crate::miner::MinerCommand>) {
        *self.wake.lock() = Some(sender);
    }

    /// A sender's account at the head, as the pool sees it.
    pub fn sender_account(&self, address: Address) -> Result<SenderAccount, BuildError> {
        let view = self.storage.latest();
        let info = view.basic_ref(address).map_err(|e| BuildError::Storage(e.0))?;
        let Some(info) = info else { return Ok(SenderAccount::default()) };
        let code = match &info.code {
            Some(code) => code.original_bytes(),
            None if info.code_hash != pseq_executor::revm::primitives::KECCAK_EMPTY => {
                view.code_by_hash_ref(info.code_hash).map_err(|e| BuildError::Storage(e.0))?.original_bytes()
            }
            None => Bytes::new(),
        };
        Ok(SenderAccount { nonce: info.nonce, balance: info.balance, code })
    }

    /// Admits a recovered transaction into the pool and wakes the block producer.
    pub fn submit(&self, tx: PooledTx, local: bool) -> Result<Added, PoolError> {
        let account = self.sender_account(tx.sender).map_err(|e| PoolError::Internal(e.to_string()))?;
        let added = self.pool.lock().add(tx, account, local)?;
        self.metrics.txs_admitted.fetch_add(1, Ordering::Relaxed);
        if let Some(wake) = self.wake.lock().as_ref() {
            let _ = wake.send(crate::miner::MinerCommand::TxArrived);
        }
        Ok(added)
    }

    /// Moves the clock of the next blocks forward by `seconds` (`evm_increaseTime`); returns the
    /// total offset.
    pub fn increase_time(&self, seconds: i64) -> i64 {
        self.clock.offset_secs.fetch_add(seconds, Ordering::SeqCst) + seconds
    }

    /// Fixes the timestamp of the next block (`evm_setNextBlockTimestamp`).
    pub fn set_next_timestamp(&self, timestamp: u64) -> Result<(), BuildError> {
        let head = self.head_header()?;
        if timestamp <= head.timestamp {
            return Err(BuildError::Chain(format!("timestamp {timestamp} is not after the head's {}", head.timestamp)));
        }
        *self.clock.next_timestamp.lock() = Some(timestamp);
        Ok(())
    }

    /// The clock settings of the next block: the offset and a fixed next timestamp.
    pub(crate) fn clock_state(&self) -> (i64, Option<u64>) {
        (self.clock.offset_secs.load(Ordering::SeqCst), *self.clock.next_timestamp.lock())
    }

    /// Holds off every other block build and commit while alive.
    pub(crate) fn build_guard(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.build_lock.lock()
    }

    fn next_timestamp(&self, parent: &Header) -> u64 {
        if let Some(t) = self.clock.next_timestamp.lock().take() {
            return t.max(parent.timestamp + 1);
        }
        let now = now_secs().saturating_add_signed(self.clock.offset_secs.load(Ordering::SeqCst));
        now.max(parent.timestamp + 1)
    }

    /// Whether the pool holds transactions ready for the next block.
    pub fn has_pending(&self) -> bool {
        self.pool.lock().status().pending > 0
    }

    /// Builds the next block from the pool's best transactions, commits it and updates the pool.
    pub fn build_block(&self) -> Result<BuiltBlock, BuildError> {
        let _guard = self.build_lock.lock();
        let assembled = self.assemble(None, None)?;
        self.commit_assembled(assembled)
    }

    /// Dev mode: edits one account (balance, nonce, code, storage: `anvil_setBalance` and
    /// friends) and commits the edit in a new block without transactions, so that the state root
    /// of every header stays true. `edit` gets the account as it is (a new empty one if it does
    /// not exist) and the slots to write.
    pub fn edit_account(
        &self,
        address: Address,
        edit: impl FnOnce(&mut pseq_executor::AccountState, &mut std::collections::BTreeMap<alloy_primitives::U256, alloy_primitives::U256>),
    ) -> Result<BuiltBlock, BuildError> {
        let _guard = self.build_lock.lock();
        let view = self.storage.latest();
        let current = view.basic_ref(address).map_err(|e| BuildError::Storage(e.0))?;
        let mut account = match current {
            Some(info) => pseq_executor::AccountState { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash, code: None },
            None => pseq_executor::AccountState {
                balance: alloy_primitives::U256::ZERO,
                nonce: 0,
                code_hash: pseq_executor::revm::primitives::KECCAK_EMPTY,
                code: None,
            },
        };
        let mut slots = std::collections::BTreeMap::new();
        edit(&mut account, &mut slots);
        let mut overrides = pseq_executor::StateDiff::default();
        overrides.accounts.insert(address, pseq_executor::AccountDiff { info: Some(account), storage_cleared: false, storage: slots });
        let no_pool = PayloadAttributes { no_tx_pool: true, ..Default::default() };
        let assembled = self.assemble(Some(&no_pool), Some(&overrides))?;
        self.commit_assembled(assembled)
    }

    /// Builds a block on the head for a consensus client's payload attributes without committing
    /// it (`forkchoiceUpdated` with attributes); [`Sequencer::commit_payload`] commits it when it
    /// comes back through `newPayload`.
    pub fn build_payload(&self, attributes: &PayloadAttributes) -> Result<Assembled, BuildError> {
        let _guard = self.build_lock.lock();
        self.assemble(Some(attributes), None)
    }

    /// Commits a block [`Sequencer::build_payload`] built, if the head has not moved since.
    pub fn commit_payload(&self, assembled: Assembled) -> Result<BuiltBlock, BuildError> {
        let _guard = self.build_lock.lock();
        if self.storage.head().1 != assembled.block.header.parent_hash {
            return Err(BuildError::Chain("the head moved since the payload was built".into()));
        }
        self.commit_assembled(assembled)
    }

    fn assemble(&self, attributes: Option<&PayloadAttributes>, overrides: Option<&pseq_executor::StateDiff>) -> Result<Assembled, BuildError> {
        let started = Instant::now();
        let parent = self.head_header()?;
        let timestamp = match attributes.filter(|a| a.timestamp != 0) {
            None => self.next_timestamp(&parent),
            Some(a) if a.timestamp <= parent.timestamp => {
                return Err(BuildError::Chain(format!("payload timestamp {} is not after the head's {}", a.timestamp, parent.timestamp)))
            }
            Some(a) => a.timestamp,
        };
        let plan = self.plan_block(&parent, attributes, timestamp, started)?;

        // Forced transactions first, then the pool's best tip first while the gas limits and the
        // blob budget fit the block.
        let forced: &[Arc<PooledTx>] = attributes.map_or(&[], |a| &a.transactions);
        let mut chosen: Vec<Arc<PooledTx>> = forced.to_vec();
        let forced_hashes: std::collections::HashSet<B256> = forced.iter().map(|tx| tx.hash).collect();
        let mut budget = plan.budget();
        for tx in &chosen {
            budget.take(tx);
        }
        if attributes.is_none_or(|a| !a.no_tx_pool) {
            let pool = self.pool.lock();
            chosen.extend(budget.fill(pool.best_transactions(), |tx| forced_hashes.contains(&tx.hash)));
        }
        let txs: Vec<TxEnv> = chosen.iter().map(|tx| TxEnv::from_recovered_tx(&tx.envelope, tx.sender)).collect();
        let select = started.elapsed();

        let options = ExecutionOptions::parallel(self.settings.threads).with_invalid_tx(InvalidTxPolicy::Skip);
        let execute_started = Instant::now();
        let head_state = self.storage.latest();
        let mut output = match overrides {
            Some(diff) => execute_block(&crate::overlay::DiffOverlay { base: &head_state, diff }, &plan.input, &txs, &options),
            None => execute_block(&head_state, &plan.input, &txs, &options),
        }
        .map_err(|e| BuildError::Execution(e.to_string()))?;
        if let Some(diff) = overrides {
            output.state = crate::overlay::merge_diffs(diff, std::mem::take(&mut output.state));
        }
        let execute = execute_started.elapsed();
        // A forced transaction that cannot be applied fails the build (geth's testing_buildBlockV1
        // and op-geth's deposits do the same).
        if let Some((_, why)) = output.skipped.iter().find(|(i, _)| *i < forced.len()) {
            return Err(BuildError::Invalid(why.clone()));
        }
        self.seal(plan, &chosen, output, BuildTimings { select, execute, ..Default::default() }, None)
    }

    /// Fixes everything about the block after `parent` that does not depend on its transactions:
    /// the header's fields, the execution input, the gas and blob budget.
    pub(crate) fn plan_block(&self, parent: &Header, attributes: Option<&PayloadAttributes>, timestamp: u64, started: Instant) -> Result<BlockPlan, BuildError> {
        let parent_hash = self.storage.head().1;
        let number = parent.number + 1;
        let (fork, spec) = self.rules.fork(number, timestamp).map_err(BuildError::Chain)?;
        let params = self.rules.blob_params(&fork);
        let engine = attributes.filter(|a| a.timestamp != 0);
        let gas_limit = match engine {
            Some(a) => a.gas_limit.unwrap_or_else(|| next_gas_limit(parent.gas_limit, self.settings.gas_limit)),
            None => self.settings.gas_limit,
        };
        let header = Header {
            parent_hash,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: engine.map_or(self.settings.coinbase, |a| a.fee_recipient),
            number,
            gas_limit,
            timestamp,
            extra_data: attributes.and_then(|a| a.extra_data.clone()).unwrap_or_else(|| self.settings.extra_data.clone()),
            mix_hash: engine.map_or(parent.mix_hash, |a| a.prev_randao),
            base_fee_per_gas: spec.is_enabled_in(SpecId::LONDON).then(|| next_base_fee(parent)),
            withdrawals_root: spec.is_enabled_in(SpecId::SHANGHAI).then(|| match attributes {
                Some(a) => proofs::calculate_withdrawals_root(&a.withdrawals),
                None => EMPTY_WITHDRAWALS,
            }),
            excess_blob_gas: params.map(|p| {
                p.next_block_excess_blob_gas_osaka(
                    parent.excess_blob_gas.unwrap_or_default(),
                    parent.blob_gas_used.unwrap_or_default(),
                    parent.base_fee_per_gas.unwrap_or_default(),
                )
            }),
            parent_beacon_block_root: spec
                .is_enabled_in(SpecId::CANCUN)
                .then(|| attributes.and_then(|a| a.parent_beacon_block_root).unwrap_or_default()),
            ..Default::default()
        };
        let withdrawals = spec.is_enabled_in(SpecId::SHANGHAI).then(|| {
            attributes.map_or_else(Vec::new, |a| {
                a.withdrawals.iter().map(|w| pseq_executor::Withdrawal { address: w.address, amount_gwei: w.amount }).collect()
            })
        });
        let input = self.rules.block_input(&header, Vec::new(), withdrawals).map_err(BuildError::Chain)?;
        let body_withdrawals = header.withdrawals_root.map(|_| attributes.map_or_else(Default::default, |a| a.withdrawals.clone().into()));
        Ok(BlockPlan { header, input, spec, max_blobs: params.map_or(0, |p| p.max_blob_count), body_withdrawals, started })
    }

    /// Completes a planned block from its executed transactions (`chosen`, of which `output`
    /// says which were included): roots, bloom, gas, the state update and its root.
    /// `prepared` holds state-root work done ahead (continuous building).
    pub(crate) fn seal(
        &self,
        plan: BlockPlan,
        chosen: &[Arc<PooledTx>],
        output: BlockOutput,
        timings: BuildTimings,
        prepared: Option<pseq_storage::PreparedAccounts>,
    ) -> Result<Assembled, BuildError> {
        let BlockPlan { mut header, spec, body_withdrawals, started, .. } = plan;
        let included: Vec<TxEnvelope> = output.included.iter().map(|&i| chosen[i].envelope.clone()).collect();
        header.transactions_root = proofs::calculate_transaction_root(&included);
        header.receipts_root = receipts_root(&output.receipts);
        header.logs_bloom = logs_bloom(output.receipts.iter().flat_map(|r| r.logs.iter()));
        header.gas_used = output.gas_used;
        header.blob_gas_used = spec.is_enabled_in(SpecId::CANCUN).then_some(output.blob_gas_used);
        header.requests_hash = spec.is_enabled_in(SpecId::PRAGUE).then(|| output.requests.as_ref().map(|r| r.requests_hash()).unwrap_or_default());

        let root_started = Instant::now();
        let update = match prepared {
            Some(prepared) => self.storage.prepare_state_reusing(&output.state, prepared)?,
            None => self.storage.prepare_state(&output.state)?,
        };
        header.state_root = update.state_root;
        let state_root = root_started.elapsed();

        let tx_hashes: Vec<B256> = output.included.iter().map(|&i| chosen[i].hash).collect();
        let skipped: Vec<(B256, String)> = output.skipped.iter().map(|(i, why)| (chosen[*i].hash, why.clone())).collect();
        let base_fee = header.base_fee_per_gas.unwrap_or_default();
        let mut block_value = alloy_primitives::U256::ZERO;
        let mut previous = 0;
        for (receipt, &i) in output.receipts.iter().zip(&output.included) {
            let gas = receipt.cumulative_gas_used - previous;
            previous = receipt.cumulative_gas_used;
            block_value += alloy_primitives::U256::from(chosen[i].effective_tip(base_fee).unwrap_or_default()) * alloy_primitives::U256::from(gas);
        }
        let body = BlockBody { transactions: included, ommers: Vec::new(), withdrawals: body_withdrawals };
        let senders = chosen.iter().map(|tx| tx.sender).collect();
        let sidecars = output.included.iter().filter_map(|&i| chosen[i].sidecar.clone()).collect();
        let sender_overrides = output.included.iter().enumerate().filter(|(_, &i)| chosen[i].impersonated).map(|(at, &i)| (at as u32, chosen[i].sender)).collect();
        Ok(Assembled {
            block: Block { header, body },
            receipts: output.receipts,
            update,
            tx_hashes,
            senders,
            skipped,
            requests: output.requests,
            block_value,
            sidecars,
            sender_overrides,
            timings: BuildTimings { state_root, ..timings },
            started,
        })
    }

    pub(crate) fn commit_assembled(&self, assembled: Assembled) -> Result<BuiltBlock, BuildError> {
        let Assembled { block, receipts, update, tx_hashes, senders, skipped, timings, started, sender_overrides, .. } = assembled;
        let (select, execute, state_root, ahead) = (timings.select, timings.execute, timings.state_root, timings.ahead);
        let commit_started = Instant::now();
        let committed = self.storage.commit_block_with_senders(&block, &receipts, update, &sender_overrides)?;
        let commit = commit_started.elapsed();

        self.after_commit(&block.header, senders, &skipped);

        let timings = BuildTimings { select, execute, state_root, commit, ahead };
        let new_block = Arc::new(NewBlock { header: block.header, hash: committed.hash, tx_hashes, receipts });
        self.metrics.record_block(&new_block, started.elapsed());
        self.metrics.ahead_micros.fetch_add(ahead.as_micros() as u64, Ordering::Relaxed);
        self.built.fetch_add(1, Ordering::Relaxed);
        let total = started.elapsed();
        let mgas = new_block.header.gas_used as f64 / 1e6 / execute.as_secs_f64().max(1e-9);
        tracing::info!(
            number = new_block.header.number,
            txs = new_block.tx_hashes.len(),
            gas = new_block.header.gas_used,
            mgas_per_s = format!("{mgas:.0}"),
            select_ms = ms(select),
            execute_ms = ms(execute),
            state_root_ms = ms(state_root),
            commit_ms = ms(commit),
            total_ms = ms(total),
            ahead_ms = ms(ahead),
            hash = %new_block.hash,
            "built block"
        );
        for (hash, why) in &skipped {
            tracing::debug!(%hash, why, "transaction left out of the block");
        }
        let _ = self.events.send(new_block.clone());
        Ok(BuiltBlock { block: new_block, skipped, timings })
    }

    /// Validates, executes and commits a block built elsewhere (the Engine API's `newPayload`)
    /// on top of the head. Errors describe why the block is invalid.
    pub fn import_block(&self, block: Block<TxEnvelope>) -> Result<B256, BuildError> {
        let _guard = self.build_lock.lock();
        let encoded_len = alloy_rlp::Encodable::length(&block);
        let options = ExecutionOptions::parallel(self.settings.threads);
        let (executed, committed) =
            crate::import::import_into_storage(&self.storage, block, encoded_len, &self.rules, &options, false).map_err(|e| match e {
                crate::import::ImportError::Invalid(reason) => BuildError::Invalid(reason),
                crate::import::ImportError::Storage(reason) => BuildError::Storage(reason),
            })?;
        let senders: Vec<Address> = {
            use alloy_consensus::transaction::SignerRecoverable;
            executed.block.body.transactions.iter().filter_map(|tx| tx.recover_signer().ok()).collect()
        };
        self.after_commit(&executed.block.header, senders, &[]);
        let tx_hashes = executed.block.body.transactions.iter().map(|tx| *tx.tx_hash()).collect();
        let new_block = Arc::new(NewBlock { header: executed.block.header, hash: committed.hash, tx_hashes, receipts: executed.receipts });
        self.metrics.head.store(new_block.header.number, Ordering::Relaxed);
        tracing::info!(number = new_block.header.number, txs = new_block.tx_hashes.len(), gas = new_block.header.gas_used, hash = %committed.hash, "imported block");
        let _ = self.events.send(new_block);
        Ok(committed.hash)
    }

    /// Makes block `number` the head again, undoing the blocks above it (a reorg through
    /// `forkchoiceUpdated`, or a rollback).
    pub fn unwind_to(&self, number: u64) -> Result<(), BuildError> {
        let _guard = self.build_lock.lock();
        self.storage.unwind_to(number)?;
        let head = self.head_header()?;
        self.pool.lock().on_block(&[], next_base_fee(&head));
        Ok(())
    }

    /// After a commit: included transactions leave the pool (through the senders' new nonces),
    /// invalid ones are dropped, and everything is re-classified at the next base fee.
    fn after_commit(&self, header: &Header, mut senders: Vec<Address>, skipped: &[(B256, String)]) {
        senders.sort_unstable();
        senders.dedup();
        let accounts: Vec<(Address, SenderAccount)> =
            senders.into_iter().filter_map(|a| self.sender_account(a).ok().map(|acc| (a, acc))).collect();
        let mut pool = self.pool.lock();
        for (hash, _) in skipped {
            pool.remove(hash);
        }
        pool.on_block(&accounts, next_base_fee(header));
        // Across a fork boundary the pool admits by the next block's rules.
        if let Ok(rules) = validation_rules(&self.rules, header, self.settings.gas_limit) {
            if rules.spec != pool.config().validation.spec {
                tracing::info!(from = ?pool.config().validation.spec, to = ?rules.spec, "pool admission follows the fork");
                pool.set_validation(rules);
            }
        }
    }

    /// Blocks built since start.
    pub fn blocks_built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }
}

/// Admission rules for the block after `head`: its fork's transaction types, blobs (Cancun on;
/// per transaction EIP-7594's 6 from Osaka on, before it whatever a block holds), the gas limit.
fn validation_rules(rules: &ChainRules, head: &Header, gas_limit: u64) -> Result<ValidationConfig, BuildError> {
    let (next_fork, next_spec) = rules.fork(head.number + 1, now_secs().max(head.timestamp + 1)).map_err(BuildError::Chain)?;
    let mut validation = ValidationConfig::new(rules.chain_id, next_spec);
    validation.block_gas_limit = gas_limit;
    validation.blobs_enabled = next_spec.is_enabled_in(SpecId::CANCUN);
    if !next_spec.is_enabled_in(SpecId::OSAKA) {
        if let Some(params) = rules.blob_params(&next_fork) {
            validation.max_blobs_per_tx = params.max_blob_count as usize;
        }
    }
    Ok(validation)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// The EIP-1559 base fee of the block after `parent`.
pub fn next_base_fee(parent: &Header) -> u64 {
    parent.next_block_base_fee(BaseFeeParams::ethereum()).unwrap_or(pseq_config::genesis::INITIAL_BASE_FEE)
}
