//! The pool: every admitted transaction in exactly one sub-pool, per sender in nonce order.
//!
//! - **pending**: executable now: the nonces from the account nonce on with no gap, the sender's
//!   balance covers them all, and each fee cap covers the current base fee;
//! - **base-fee**: would be pending but a fee cap (its own or an ancestor's) is below the base fee;
//! - **queued**: behind a nonce gap, or beyond what the balance covers.
//!
//! A sender's transactions are re-classified whenever anything about the sender changes (a new
//! transaction fills a gap, a block moves its nonce or balance) or the base fee moves. Same-sender
//! same-nonce replacements need a fee bump (10% by default) on both the fee cap and the tip.
//! Each sub-pool is bounded in count and bytes; when one is over, the worst transactions are
//! evicted from the ends of their senders' nonce chains (so no gap opens inside pending), local
//! (RPC-submitted) transactions last.

use crate::{
    config::{ValidationConfig, DEFAULT_ACCOUNT_SLOTS, DEFAULT_PRICE_BUMP},
    error::PoolError,
    tx::PooledTx,
    validate::{check_stateful, check_stateless, SenderAccount},
};
use alloy_primitives::{map::HashMap, Address, B256};
use std::{
    collections::{BTreeMap, BinaryHeap},
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

/// Which sub-pool a transaction is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubPool {
    /// Executable now.
    Pending,
    /// Fee cap below the base fee (its own or an ancestor's).
    BaseFee,
    /// Nonce gap or insufficient balance.
    Queued,
}

/// Bounds of one sub-pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubPoolLimit {
    /// Most transactions.
    pub max_txs: usize,
    /// Most bytes of encoded transactions.
    pub max_bytes: usize,
}

impl Default for SubPoolLimit {
    /// reth's defaults: 10,000 transactions or 20 MB.
    fn default() -> Self {
        Self { max_txs: 10_000, max_bytes: 20 * 1024 * 1024 }
    }
}

/// Pool configuration (reth's defaults).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Admission checks.
    pub validation: ValidationConfig,
    /// Replacement bump in percent, on fee cap and tip.
    pub price_bump: u128,
    /// Transactions per sender (local senders are exempt).
    pub account_slots: usize,
    /// Bounds of the pending sub-pool.
    pub pending: SubPoolLimit,
    /// Bounds of the base-fee sub-pool.
    pub base_fee: SubPoolLimit,
    /// Bounds of the queued sub-pool.
    pub queued: SubPoolLimit,
    /// How long a non-local queued transaction may wait.
    pub queued_lifetime: Duration,
}

impl PoolConfig {
    /// reth's defaults around these admission checks.
    pub fn new(validation: ValidationConfig) -> Self {
        Self {
            validation,
            price_bump: DEFAULT_PRICE_BUMP,
            account_slots: DEFAULT_ACCOUNT_SLOTS,
            pending: SubPoolLimit::default(),
            base_fee: SubPoolLimit::default(),
            queued: SubPoolLimit::default(),
            queued_lifetime: Duration::from_secs(3 * 3600),
        }
    }
}

/// One pooled transaction with its bookkeeping.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    /// The transaction.
    pub tx: Arc<PooledTx>,
    /// Its sub-pool.
    pub sub_pool: SubPool,
    /// Submitted over RPC (exempt from slot limits and evicted last).
    pub local: bool,
    /// Order of submission.
    pub id: u64,
    /// When it entered the pool.
    pub added: Instant,
}

#[derive(Debug, Default)]
struct Sender {
    account: SenderAccount,
    txs: BTreeMap<u64, PoolEntry>,
}

/// What an accepted transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its hash.
    pub hash: B256,
    /// Where it went.
    pub sub_pool: SubPool,
    /// The transaction it replaced.
    pub replaced: Option<B256>,
}

/// Counts per sub-pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Pending transactions.
    pub pending: usize,
    /// Base-fee transactions.
    pub base_fee: usize,
    /// Queued transactions.
    pub queued: usize,
}

/// The transaction pool.
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    base_fee: u64,
    senders: HashMap<Address, Sender>,
    by_hash: HashMap<B256, (Address, u64)>,
    next_id: u64,
    listeners: Vec<mpsc::Sender<B256>>,
    /// Transactions and bytes per sub-pool, kept up to date on every move.
    sizes: [(usize, usize); 3],
}

fn slot(pool: SubPool) -> usize {
    match pool {
        SubPool::Pending => 0,
        SubPool::BaseFee => 1,
        SubPool::Queued => 2,
    }
}

/// Whether `new` is at least `bump` percent above `old` (rounding the requirement up).
fn bumped(new: u128, old: u128, bump: u128) -> bool {
    let required = old.saturating_mul(100 + bump).div_ceil(100);
    new >= required
}

impl Pool {
    /// An empty pool at this base fee.
    pub fn new(config: PoolConfig, base_fee: u64) -> Self {
        Self { config, base_fee, senders: HashMap::default(), by_hash: HashMap::default(), next_id: 0, listeners: Vec::new(), sizes: [(0, 0); 3] }
    }

    /// Replaces the admission rules (the next block's fork changed: types, limits, sidecars).
    pub fn set_validation(&mut self, validation: crate::ValidationConfig) {
        self.config.validation = validation;
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The base fee the pool classifies by.
    pub fn base_fee(&self) -> u64 {
        self.base_fee
    }

    /// A stream of hashes of transactions that become pending.
    pub fn subscribe_pending(&mut self) -> mpsc::Receiver<B256> {
        let (sender, receiver) = mpsc::channel();
        self.listeners.push(sender);
        receiver
    }

    /// Adds a recovered transaction; `account` is the sender's account at the head.
    pub fn add(&mut self, tx: PooledTx, account: SenderAccount, local: bool) -> Result<Added, PoolError> {
        if self.by_hash.contains_key(&tx.hash) {
            return Err(PoolError::AlreadyKnown);
        }
        check_stateless(&tx, &self.config.validation)?;
        check_stateful(&tx, &account, &self.config.validation)?;
        let sender_address = tx.sender;
        let nonce = tx.nonce();
        let hash = tx.hash;
        let bump = self.config.price_bump;
        let slots = self.config.account_slots;
        let sender = self.senders.entry(sender_address).or_default();
        sender.account = account;
        let mut replaced = None;
        if let Some(old) = sender.txs.get(&nonce) {
            let old_tip = old.tx.max_priority_fee_per_gas().unwrap_or(old.tx.max_fee_per_gas());
            let new_tip = tx.max_priority_fee_per_gas().unwrap_or(tx.max_fee_per_gas());
            if !bumped(tx.max_fee_per_gas(), old.tx.max_fee_per_gas(), bump) || !bumped(new_tip, old_tip, bump) {
                return Err(PoolError::ReplacementUnderpriced);
            }
            replaced = Some(old.tx.hash);
        } else if !local && sender.txs.len() >= slots {
            return Err(PoolError::AccountLimitExceeded);
        }
        if let Some(old) = replaced {
            self.by_hash.remove(&old);
        }
        let id = self.next_id;
        self.next_id += 1;
        let bytes = tx.pooled_size();
        let entry = PoolEntry { tx: Arc::new(tx), sub_pool: SubPool::Queued, local, id, added: Instant::now() };
        if let Some(old) = sender.txs.insert(nonce, entry) {
            let size = &mut self.sizes[slot(old.sub_pool)];
            *size = (size.0 - 1, size.1 - old.tx.pooled_size());
        }
        let size = &mut self.sizes[slot(SubPool::Queued)];
        *size = (size.0 + 1, size.1 + bytes);
        self.by_hash.insert(hash, (sender_address, nonce));
        self.classify(&sender_address);
        self.enforce_limits();
        match self.get(&hash) {
            Some(entry) => Ok(Added { hash, sub_pool: entry.sub_pool, replaced }),
            None => Err(PoolError::TxPoolFull),
        }
    }

    /// The entry of a pooled transaction.
    pub fn get(&self, hash: &B256) -> Option<&PoolEntry> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.senders.get(sender)?.txs.get(nonce)
    }

    /// Whether the pool holds this transaction.
    pub fn contains(&self, hash: &B256) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Removes one transaction (`anvil_dropTransaction`); its same-sender successors are
    /// re-classified (they are now behind a gap).
    pub fn remove(&mut self, hash: &B256) -> Option<Arc<PooledTx>> {
        let removed = self.remove_one(hash);
        // Successors behind the new gap may push the queued sub-pool over its limit.
        self.enforce_limits();
        removed
    }

    fn remove_one(&mut self, hash: &B256) -> Option<Arc<PooledTx>> {
        let (sender, nonce) = self.by_hash.remove(hash)?;
        let removed = self.senders.get_mut(&sender)?.txs.remove(&nonce)?;
        self.uncount(&removed);
        self.classify(&sender);
        Some(removed.tx)
    }

    fn uncount(&mut self, entry: &PoolEntry) {
        let size = &mut self.sizes[slot(entry.sub_pool)];
        *size = (size.0 - 1, size.1 - entry.tx.pooled_size());
    }

    /// A block was committed: the senders' accounts are now `accounts` (transactions below the
    /// new nonces were mined or are dead and leave the pool) and the next block's base fee is
    /// `base_fee`. Returns the hashes that left the pool.
    pub fn on_block(&mut self, accounts: &[(Address, SenderAccount)], base_fee: u64) -> Vec<B256> {
        let mut removed = Vec::new();
        for (address, account) in accounts {
            let Some(sender) = self.senders.get_mut(address) else { continue };
            sender.account = account.clone();
            let stale: Vec<u64> = sender.txs.range(..account.nonce).map(|(n, _)| *n).collect();
            for nonce in stale {
                if let Some(entry) = sender.txs.remove(&nonce) {
                    self.by_hash.remove(&entry.tx.hash);
                    removed.push(entry.tx.hash);
                    let size = &mut self.sizes[slot(entry.sub_pool)];
                    *size = (size.0 - 1, size.1 - entry.tx.pooled_size());
                }
            }
        }
        let fee_moved = base_fee != self.base_fee;
        self.base_fee = base_fee;
        let to_classify: Vec<Address> = if fee_moved { self.senders.keys().copied().collect() } else { accounts.iter().map(|(a, _)| *a).collect() };
        for address in to_classify {
            self.classify(&address);
        }
        self.enforce_limits();
        removed
    }

    /// Drops non-local queued transactions older than the configured lifetime.
    pub fn prune_stale(&mut self, now: Instant) -> Vec<B256> {
        let lifetime = self.config.queued_lifetime;
        let stale: Vec<B256> = self
            .senders
            .values()
            .flat_map(|s| s.txs.values())
            .filter(|e| !e.local && e.sub_pool == SubPool::Queued && now.saturating_duration_since(e.added) > lifetime)
            .map(|e| e.tx.hash)
            .collect();
        for hash in &stale {
            self.remove_one(hash);
        }
        self.enforce_limits();
        stale
    }

    /// Counts per sub-pool.
    pub fn status(&self) -> PoolStatus {
        PoolStatus { pending: self.sizes[0].0, base_fee: self.sizes[1].0, queued: self.sizes[2].0 }
    }

    /// Bytes of encoded transactions per sub-pool (pending, base-fee, queued).
    pub fn bytes(&self) -> [usize; 3] {
        [self.sizes[0].1, self.sizes[1].1, self.sizes[2].1]
    }

    /// The pooled transactions of one sender, by nonce.
    pub fn sender_txs(&self, address: &Address) -> Option<&BTreeMap<u64, PoolEntry>> {
        self.senders.get(address).map(|s| &s.txs)
    }

    /// The nonce a new transaction of `address` should take: the first nonce at or above
    /// `account_nonce` that the pool does not hold (`eth_getTransactionCount(addr, "pending")`).
    pub fn next_nonce(&self, address: &Address, account_nonce: u64) -> u64 {
        let mut next = account_nonce;
        if let Some(txs) = self.sender_txs(address) {
            for nonce in txs.range(account_nonce..).map(|(n, _)| *n) {
                if nonce != next {
                    break;
                }
                next += 1;
            }
        }
        next
    }

    /// Every pooled transaction by sender and nonce (`txpool_content`).
    pub fn content(&self) -> BTreeMap<Address, BTreeMap<u64, PoolEntry>> {
        self.senders.iter().filter(|(_, s)| !s.txs.is_empty()).map(|(a, s)| (*a, s.txs.clone())).collect()
    }

    /// Pending transactions in effective-tip order, each sender's in nonce order.
    pub fn best_transactions(&self) -> BestTransactions {
        self.best_transactions_from(|_| None)
    }

    /// [`Pool::best_transactions`] without the transactions a block being built already holds:
    /// for each sender for which `taken` gives a nonce, only its pending transactions from that
    /// nonce on.
    pub fn best_transactions_from(&self, taken: impl Fn(&Address) -> Option<u64>) -> BestTransactions {
        let base_fee = self.base_fee;
        let mut chains = Vec::new();
        let mut heap = BinaryHeap::new();
        for (address, sender) in &self.senders {
            let from = taken(address).unwrap_or(0);
            let chain: Vec<Arc<PooledTx>> = sender.txs.range(from..).map(|(_, e)| e).filter(|e| e.sub_pool == SubPool::Pending).map(|e| e.tx.clone()).collect();
            if let Some(first) = chain.first() {
                let index = chains.len();
                let id = sender.txs.get(&first.nonce()).map_or(0, |e| e.id);
                heap.push(Head { tip: first.effective_tip(base_fee).unwrap_or_default(), id, chain: index });
                chains.push((chain, 0usize));
            }
        }
        BestTransactions { base_fee, chains, heap, invalid: Vec::new() }
    }

    /// Re-classifies one sender's transactions; emits newly pending hashes.
    fn classify(&mut self, address: &Address) {
        let base_fee = u128::from(self.base_fee);
        let Some(sender) = self.senders.get_mut(address) else { return };
        if sender.txs.is_empty() {
            self.senders.remove(address);
            return;
        }
        let mut expected = sender.account.nonce;
        let mut spent = alloy_primitives::U256::ZERO;
        let mut gap = false;
        let mut parked_fee = false;
        let mut newly_pending = Vec::new();
        for (nonce, entry) in sender.txs.iter_mut() {
            let cost = entry.tx.max_cost().unwrap_or(alloy_primitives::U256::MAX);
            spent = spent.saturating_add(cost);
            gap |= *nonce != expected || spent > sender.account.balance;
            let class = if gap {
                SubPool::Queued
            } else {
                parked_fee |= entry.tx.max_fee_per_gas() < base_fee;
                if parked_fee { SubPool::BaseFee } else { SubPool::Pending }
            };
            if class == SubPool::Pending && entry.sub_pool != SubPool::Pending {
                newly_pending.push(entry.tx.hash);
            }
            if class != entry.sub_pool {
                let bytes = entry.tx.pooled_size();
                let from = &mut self.sizes[slot(entry.sub_pool)];
                *from = (from.0 - 1, from.1 - bytes);
                let to = &mut self.sizes[slot(class)];
                *to = (to.0 + 1, to.1 + bytes);
            }
            entry.sub_pool = class;
            expected = nonce.saturating_add(1);
        }
        self.listeners.retain(|l| newly_pending.iter().all(|h| l.send(*h).is_ok()));
    }

    /// Evicts from each sub-pool over its limits: the transaction at the end of a sender's chain
    /// in that sub-pool with the lowest tip (then the latest submitted), non-local first.
    fn enforce_limits(&mut self) {
        for (pool, limit) in [(SubPool::Pending, self.config.pending), (SubPool::BaseFee, self.config.base_fee), (SubPool::Queued, self.config.queued)] {
            loop {
                let (count, bytes) = self.sizes[slot(pool)];
                if count <= limit.max_txs && bytes <= limit.max_bytes {
                    break;
                }
                let base_fee = self.base_fee;
                // The last transaction of each sender in this sub-pool; the worst of those goes.
                let worst = self
                    .senders
                    .iter()
                    .filter_map(|(address, s)| s.txs.values().rev().find(|e| e.sub_pool == pool).map(|e| (address, e)))
                    .min_by_key(|(_, e)| (e.local, e.tx.effective_tip(base_fee).unwrap_or_default(), std::cmp::Reverse(e.id)))
                    .map(|(_, e)| e.tx.hash);
                let Some(hash) = worst else { break };
                if self.get(&hash).is_some_and(|e| e.local) && count <= limit.max_txs.saturating_mul(2) {
                    // Only local transactions left over the limit: keep them (they are exempt).
                    break;
                }
                self.remove_one(&hash);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    tip: u128,
    id: u64,
    chain: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Highest tip first; on a tie, the earlier submission.
        self.tip.cmp(&other.tip).then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Iterator over pending transactions, best tip first, each sender's in nonce order. A snapshot:
/// the pool can change while it is used.
#[derive(Debug)]
pub struct BestTransactions {
    base_fee: u64,
    chains: Vec<(Vec<Arc<PooledTx>>, usize)>,
    heap: BinaryHeap<Head>,
    invalid: Vec<Address>,
}

impl BestTransactions {
    /// Drops `tx` and every later transaction of its sender from this iteration (the builder
    /// found it invalid).
    pub fn mark_invalid(&mut self, tx: &PooledTx) {
        self.invalid.push(tx.sender);
    }
}

impl Iterator for BestTransactions {
    type Item = Arc<PooledTx>;

    fn next(&mut self) -> Option<Arc<PooledTx>> {
        loop {
            let head = self.heap.pop()?;
            let (chain, position) = &mut self.chains[head.chain];
            let tx = chain[*position].clone();
            if self.invalid.contains(&tx.sender) {
                continue;
            }
            *position += 1;
            if let Some(next) = chain.get(*position) {
                self.heap.push(Head { tip: next.effective_tip(self.base_fee).unwrap_or_default(), id: head.id, chain: head.chain });
            }
            return Some(tx);
        }
    }
}
