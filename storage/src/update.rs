//! Turning a block's [`StateDiff`] into a [`StateUpdate`]: the new state root and every write
//! (plain and hashed state, trie nodes, history), computed against the stored head without
//! writing anything. Committing it is one `WriteBatch` ([`crate::Storage::commit_block`]).

use crate::{
    codec::{decode_value, encode_value, StoredAccount},
    db::{cf, Storage},
    error::{Result, StorageError},
    sources::{account_source, StorageReaders},
    tables,
    trie::{incremental_root_from, incremental_root_parallel, RootUpdate, TrieSource},
};
use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_trie::{Nibbles, EMPTY_ROOT_HASH};
use pseq_executor::{revm::primitives::KECCAK_EMPTY, StateDiff};
use rocksdb::{WriteBatch, DB};
use alloy_primitives::map::HashMap;
use std::collections::BTreeMap;

/// One write of a [`StateUpdate`].
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
    DeleteRange(&'static str, Vec<u8>, Vec<u8>),
}

/// The keys one block changed (stored per block, for unwinding).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChangeSet {
    pub accounts: Vec<Address>,
    pub slots: Vec<(Address, U256)>,
}

impl ChangeSet {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.accounts.len() * 20 + self.slots.len() * 52);
        out.extend_from_slice(&(self.accounts.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.slots.len() as u32).to_be_bytes());
        for address in &self.accounts {
            out.extend_from_slice(address.as_slice());
        }
        for (address, slot) in &self.slots {
            out.extend_from_slice(&tables::storage_key(address, slot));
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || StorageError::corrupt("changeset");
        if bytes.len() < 8 {
            return Err(bad());
        }
        let accounts = u32::from_be_bytes(bytes[..4].try_into().map_err(|_| bad())?) as usize;
        let slots = u32::from_be_bytes(bytes[4..8].try_into().map_err(|_| bad())?) as usize;
        let expected = accounts.checked_mul(20).and_then(|a| slots.checked_mul(52).and_then(|s| a.checked_add(s))).and_then(|n| n.checked_add(8));
        if expected != Some(bytes.len()) {
            return Err(bad());
        }
        let body = &bytes[8..];
        let (account_bytes, slot_bytes) = body.split_at(accounts * 20);
        Ok(Self {
            accounts: account_bytes.chunks_exact(20).map(Address::from_slice).collect(),
            slots: slot_bytes.chunks_exact(52).map(|c| (Address::from_slice(&c[..20]), U256::from_be_slice(&c[20..]))).collect(),
        })
    }
}

/// Cache entries to refresh after the update is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheChanges {
    pub accounts: Vec<(Address, Option<StoredAccount>)>,
    pub slots: Vec<(Address, U256, U256)>,
    pub wiped: Vec<Address>,
}

/// A block's state changes, ready to commit: the new state root and the writes that produce it.
#[derive(Debug)]
pub struct StateUpdate {
    /// Head (number, hash) the update was computed on; it commits only there.
    pub(crate) parent: (u64, B256),
    /// The state root after the update.
    pub state_root: B256,
    pub(crate) ops: Vec<Op>,
    pub(crate) changes: ChangeSet,
    pub(crate) cache: CacheChanges,
    /// Number of trie nodes written or deleted.
    pub trie_nodes_changed: usize,
    /// Time spent on the accounts (history, storage tries, leaves), on all threads.
    pub accounts_time: std::time::Duration,
    /// Time spent on the account trie after them.
    pub account_trie_time: std::time::Duration,
}

impl Op {
    fn sort_key(&self) -> (&'static str, &[u8]) {
        match self {
            Op::Put(table, key, _) | Op::Delete(table, key) | Op::DeleteRange(table, key, _) => (table, key),
        }
    }
}

impl StateUpdate {
    /// Orders the writes by table and key, so that each memtable takes its keys in ascending
    /// order (RocksDB's skip list then inserts next to the previous key instead of searching
    /// from the top). Stable: writes with equal keys keep their order, and a range deletion
    /// (keyed by its start) stays before the writes that follow it in its range.
    pub(crate) fn sort_writes(&mut self) {
        self.ops.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }

    pub(crate) fn write_into(&self, db: &DB, batch: &mut WriteBatch) -> Result<()> {
        for op in &self.ops {
            match op {
                Op::Put(table, key, value) => batch.put_cf(cf(db, table)?, key, value),
                Op::Delete(table, key) => batch.delete_cf(cf(db, table)?, key),
                Op::DeleteRange(table, from, to) => batch.delete_range_cf(cf(db, table)?, from, to),
            }
        }
        Ok(())
    }

    /// Number of writes the update holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the update writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Whether to record the values before the update (a block going forward) or not (genesis, an
/// unwind putting them back).
#[derive(Debug, Clone, Copy)]
pub(crate) enum History {
    Record(u64),
    Skip,
}

/// Accounts per block above which their storage tries are computed on several threads.
const PARALLEL_ACCOUNTS: usize = 64;

/// One account's writes, history and leaf, computed independently of the others.
#[derive(Default)]
struct AccountResult {
    ops: Vec<Op>,
    changes: ChangeSet,
    cache: CacheChanges,
    hashed: B256,
    leaf: Option<Vec<u8>>,
    trie_nodes: usize,
}

/// Per-account state-root work done before a block's state changes are final: each account's
/// writes, history, storage trie and leaf, computed from the change it had then. Continuous
/// building prepares the accounts a run of transactions wrote while the block is still open;
/// [`crate::Storage::prepare_state_reusing`] then reuses every result whose account ended the
/// block with exactly the change it was prepared from, and recomputes the others. Valid only on
/// the head it was prepared on (checked).
#[derive(Default)]
pub struct PreparedAccounts {
    parent: Option<(u64, B256)>,
    done: HashMap<Address, (pseq_executor::AccountDiff, AccountResult)>,
}

impl std::fmt::Debug for PreparedAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAccounts").field("parent", &self.parent).field("accounts", &self.done.len()).finish()
    }
}

impl PreparedAccounts {
    /// Number of accounts prepared.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether no account is prepared.
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}

/// Prepares `accounts` (with their changes so far) into `prepared`, on the head, for the block
/// after it.
pub(crate) fn prepare_ahead(storage: &Storage, prepared: &mut PreparedAccounts, accounts: Vec<(Address, pseq_executor::AccountDiff)>) -> Result<()> {
    let parent = storage.head();
    if prepared.parent != Some(parent) {
        prepared.done.clear();
        prepared.parent = Some(parent);
    }
    let history = History::Record(parent.0.checked_add(1).ok_or_else(|| StorageError::corrupt("block number overflow"))?);
    let mut readers = StorageReaders::new(storage.db())?;
    // One change per account (the last one given), in hashed-address order.
    let latest: HashMap<Address, pseq_executor::AccountDiff> = accounts.into_iter().collect();
    let mut todo: Vec<(B256, Address, pseq_executor::AccountDiff)> = latest
        .into_iter()
        .filter(|(address, change)| !prepared.done.get(address).is_some_and(|(done, _)| done == change))
        .map(|(address, change)| (keccak256(address), address, change))
        .collect();
    todo.sort_unstable_by_key(|entry| entry.0);
    let before = read_before(storage, todo.iter().map(|(hashed, address, change)| (hashed, address, change)), history)?;
    for ((hashed, address, change), before) in todo.into_iter().zip(before) {
        let result = prepare_account(storage, &mut readers, &address, hashed, &change, history, before)?;
        prepared.done.insert(address, (change, result));
    }
    Ok(())
}

/// What one account of an update held before it: the stored account (with its storage root) and,
/// when history is recorded, the values of the slots the update sets (sorted by slot).
struct Before {
    account: Option<StoredAccount>,
    slots: Vec<(U256, U256)>,
}

impl Before {
    fn slot(&self, slot: &U256) -> U256 {
        self.slots.binary_search_by(|(s, _)| s.cmp(slot)).map_or(U256::ZERO, |i| self.slots[i].1)
    }
}

/// Reads what `accounts` (in hashed-address order) held before the update: from the state cache
/// where it has them (the executor read them while executing the block), the others with two
/// batched RocksDB MultiGets (accounts by hashed address, then slots by plain key, each in key
/// order) instead of one point read per account and slot: the batch shares filter, index and
/// block lookups between the keys.
fn read_before<'a>(
    storage: &Storage,
    accounts: impl Iterator<Item = (&'a B256, &'a Address, &'a pseq_executor::AccountDiff)>,
    history: History,
) -> Result<Vec<Before>> {
    let accounts: Vec<_> = accounts.collect();
    debug_assert!(accounts.windows(2).all(|w| w[0].0 < w[1].0), "accounts must be in hashed-address order");
    let db = storage.db();
    let cache = &storage.cache;
    let mut out: Vec<Before> = Vec::with_capacity(accounts.len());
    let mut missing = Vec::new();
    for (index, (_, address, _)) in accounts.iter().enumerate() {
        let cached = cache.accounts.get(*address).map(|entry| *entry);
        if cached.is_none() {
            missing.push(index);
        }
        out.push(Before { account: cached.flatten(), slots: Vec::new() });
    }
    if !missing.is_empty() {
        let stored = db.batched_multi_get_cf(cf(db, tables::HASHED_ACCOUNTS)?, missing.iter().map(|&index| accounts[index].0.as_slice()), true);
        for (&index, value) in missing.iter().zip(stored) {
            out[index].account = value?.map(|v| StoredAccount::decode(&v)).transpose()?;
        }
    }
    if matches!(history, History::Record(_)) {
        let mut keys: Vec<([u8; 52], usize, U256)> = Vec::new();
        for (index, (_, address, change)) in accounts.iter().enumerate() {
            for slot in change.storage.keys() {
                match cache.slots.get(&(**address, *slot)) {
                    Some(value) => out[index].slots.push((*slot, *value)),
                    None => keys.push((tables::storage_key(address, slot), index, *slot)),
                }
            }
        }
        keys.sort_unstable_by_key(|entry| entry.0);
        let values = db.batched_multi_get_cf(cf(db, tables::STORAGE)?, keys.iter().map(|(key, _, _)| key.as_slice()), true);
        for ((_, index, slot), value) in keys.iter().zip(values) {
            let value = value?.map(|v| decode_value(&v)).transpose()?.unwrap_or_default();
            out[*index].slots.push((*slot, value));
        }
        // `Before::slot` searches each account's slots by slot.
        for before in &mut out {
            before.slots.sort_unstable_by_key(|(slot, _)| *slot);
        }
    }
    Ok(out)
}

pub(crate) fn prepare(storage: &Storage, diff: &StateDiff, history: History) -> Result<StateUpdate> {
    prepare_reusing(storage, diff, history, PreparedAccounts::default())
}

pub(crate) fn prepare_reusing(storage: &Storage, diff: &StateDiff, history: History, mut prepared: PreparedAccounts) -> Result<StateUpdate> {
    let db = storage.db();
    let parent = storage.head();
    let started = std::time::Instant::now();
    let reusable = prepared.parent == Some(parent) && matches!(history, History::Record(n) if Some(n) == parent.0.checked_add(1));
    // Accounts prepared ahead with the change they ended with are done; the rest are computed.
    let mut results: Vec<Option<AccountResult>> = Vec::with_capacity(diff.accounts.len());
    let mut accounts: Vec<(B256, usize, &Address, &pseq_executor::AccountDiff)> = Vec::new();
    for (index, (address, change)) in diff.accounts.iter().enumerate() {
        let ready = if reusable { prepared.done.remove(address).filter(|(done, _)| done == change).map(|(_, result)| result) } else { None };
        if ready.is_none() {
            accounts.push((B256::ZERO, index, address, change));
        }
        results.push(ready);
    }
    let reused = diff.accounts.len() - accounts.len();
    let threads = if accounts.len() >= PARALLEL_ACCOUNTS { std::thread::available_parallelism().map_or(1, |n| n.get()).min(16) } else { 1 };
    hash_addresses(&mut accounts, threads);
    // In hashed-address order, each thread reads the hashed tables and the storage tries forward
    // through a key range instead of jumping around them.
    accounts.sort_unstable_by_key(|entry| entry.0);

    // Split by the first nibble of the hashed address when there are enough changes and the
    // account trie's root children can be built on their own: each job computes the accounts under one root child, then that
    // child's subtree, with no wait for the other jobs in between (see `prepare_split`).
    let changed: Vec<B256> = {
        let mut keys: Vec<B256> = accounts.iter().map(|a| a.0).chain(results.iter().flatten().map(|r| r.hashed)).collect();
        keys.sort_unstable();
        keys
    };
    let root_node = match threads > 1 && changed.len() >= crate::trie::PARALLEL_MIN_CHANGES {
        true => account_source(db, &BTreeMap::new())?.node(&Nibbles::default())?,
        false => None,
    };
    let split = root_node.as_ref().map(|node| (node, crate::trie::split_children(node, &changed)));
    if let Some((root_node, nibbles)) = split.filter(|(_, nibbles)| splittable(nibbles, &changed)) {
        let split = Split { parent, history, changed: &changed, root_node, nibbles: &nibbles, threads, started, reused };
        return prepare_split(storage, &split, &accounts, results);
    }

    let parts: Vec<_> = accounts.chunks(accounts.len().div_ceil(threads).max(1)).collect();
    let computed = pseq_executor::map_on_threads(
        parts,
        |part| {
            let mut readers = StorageReaders::new(db)?;
            let before = read_before(storage, part.iter().map(|(hashed, _, address, change)| (hashed, *address, *change)), history)?;
            part.iter()
                .zip(before)
                .map(|((hashed, index, address, change), before)| prepare_account(storage, &mut readers, address, *hashed, change, history, before).map(|r| (*index, r)))
                .collect::<Result<Vec<_>>>()
        },
        || StorageError::corrupt("state root worker panicked"),
    )?;
    for (index, result) in computed.into_iter().flatten() {
        results[index] = Some(result);
    }
    let results: Vec<AccountResult> = results.into_iter().collect::<Option<_>>().ok_or_else(|| StorageError::corrupt("an account of the update was not prepared"))?;
    let mut merged = Merged::with_capacity(results.iter().map(|r| r.ops.len()).sum::<usize>() + 64);
    let mut account_overlay: BTreeMap<B256, Option<Vec<u8>>> = BTreeMap::new();
    for mut result in results {
        account_overlay.insert(result.hashed, result.leaf.take());
        merged.add(result);
    }

    let accounts_done = started.elapsed();
    let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let bottom = Some((&storage.bottom, crate::bottom::ACCOUNT_TRIE_OWNER));
    let update = incremental_root_parallel(&|| account_source(db, &account_overlay), &changed, parallelism, bottom)?;
    merged.trie_nodes_changed += push_trie_ops(&mut merged.ops, tables::ACCOUNT_TRIE, &[], &update);
    Ok(merged.finish(parent, update.root, accounts_done, started, reused))
}

/// Computes the hashed address of each of `accounts` (on up to `threads` threads).
fn hash_addresses(accounts: &mut [(B256, usize, &Address, &pseq_executor::AccountDiff)], threads: usize) {
    if threads <= 1 {
        accounts.iter_mut().for_each(|a| a.0 = keccak256(a.2));
        return;
    }
    let chunk = accounts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in accounts.chunks_mut(chunk) {
            scope.spawn(move || part.iter_mut().for_each(|a| a.0 = keccak256(a.2)));
        }
    });
}

/// Whether the account trie can be built by root child ([`prepare_split`]): every root child with
/// changes under it (`changed`) is one of `nibbles`, the children
/// [`crate::trie::split_children`] found buildable on their own, and there are two or more.
fn splittable(nibbles: &[u8], changed: &[B256]) -> bool {
    let mut touched = [false; 16];
    for key in changed {
        touched[usize::from(key[0] >> 4)] = true;
    }
    nibbles.len() == touched.iter().filter(|t| **t).count() && nibbles.len() > 1
}

/// The per-account results of an update gathered into its writes, change set and cache changes.
struct Merged {
    accounts: usize,
    ops: Vec<Op>,
    changes: ChangeSet,
    cache: CacheChanges,
    trie_nodes_changed: usize,
}

impl Merged {
    fn with_capacity(ops: usize) -> Self {
        Self { accounts: 0, ops: Vec::with_capacity(ops), changes: ChangeSet::default(), cache: CacheChanges::default(), trie_nodes_changed: 0 }
    }

    /// Adds another part's writes and changes.
    fn absorb(&mut self, mut other: Merged) {
        self.accounts += other.accounts;
        self.ops.append(&mut other.ops);
        self.changes.accounts.append(&mut other.changes.accounts);
        self.changes.slots.append(&mut other.changes.slots);
        self.cache.accounts.append(&mut other.cache.accounts);
        self.cache.slots.append(&mut other.cache.slots);
        self.cache.wiped.append(&mut other.cache.wiped);
        self.trie_nodes_changed += other.trie_nodes_changed;
    }

    fn add(&mut self, result: AccountResult) {
        self.accounts += 1;
        self.ops.extend(result.ops);
        self.changes.accounts.extend(result.changes.accounts);
        self.changes.slots.extend(result.changes.slots);
        self.cache.accounts.extend(result.cache.accounts);
        self.cache.slots.extend(result.cache.slots);
        self.cache.wiped.extend(result.cache.wiped);
        self.trie_nodes_changed += result.trie_nodes;
    }

    fn finish(self, parent: (u64, B256), state_root: B256, accounts_done: std::time::Duration, started: std::time::Instant, reused: usize) -> StateUpdate {
        let account_trie_time = started.elapsed().saturating_sub(accounts_done);
        tracing::debug!(
            accounts = self.accounts,
            reused,
            accounts_ms = accounts_done.as_secs_f64() * 1e3,
            account_trie_ms = account_trie_time.as_secs_f64() * 1e3,
            "state root prepared"
        );
        StateUpdate {
            parent,
            state_root,
            ops: self.ops,
            changes: self.changes,
            cache: self.cache,
            trie_nodes_changed: self.trie_nodes_changed,
            accounts_time: accounts_done,
            account_trie_time,
        }
    }
}

/// What one job of [`prepare_split`] produced: its accounts' writes and changes, their leaves,
/// and its root child's subtree (its new hash, its node writes in `trie_ops`), `None` when the
/// child did not stay a stored branch node.
struct SplitJob {
    merged: Merged,
    leaves: BTreeMap<B256, Option<Vec<u8>>>,
    trie_ops: Vec<Op>,
    trie_nodes: usize,
    subtree: Option<(u8, B256)>,
}

/// What [`prepare_split`] works from.
struct Split<'a> {
    parent: (u64, B256),
    history: History,
    /// Every changed account's hashed address, sorted.
    changed: &'a [B256],
    /// The account trie's root node.
    root_node: &'a alloy_trie::BranchNodeCompact,
    /// The root children to build on their own.
    nibbles: &'a [u8],
    threads: usize,
    started: std::time::Instant,
    reused: usize,
}

/// [`prepare_reusing`] with the account trie built by root child: one job per root child with
/// changes (the accounts under it, merged into writes, then its subtree, see
/// [`crate::trie::child_subtree`]), run on `threads` threads, then the root level. Gives exactly
/// the root and writes of the unsplit computation; when a child does not stay a stored branch
/// node, the account trie is built whole ([`incremental_root_parallel`]) from the jobs' leaves.
fn prepare_split(storage: &Storage, split: &Split<'_>, accounts: &[(B256, usize, &Address, &pseq_executor::AccountDiff)], results: Vec<Option<AccountResult>>) -> Result<StateUpdate> {
    let Split { parent, history, changed, root_node, nibbles, threads, started, reused } = *split;
    let db = storage.db();
    let bottom = Some((&storage.bottom, crate::bottom::ACCOUNT_TRIE_OWNER));
    // The accounts prepared ahead: merged here, their leaves go to their root child's job.
    let ready: Vec<AccountResult> = results.into_iter().flatten().collect();
    let ready_leaves: BTreeMap<B256, Option<Vec<u8>>> = ready.iter().map(|r| (r.hashed, r.leaf.clone())).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers: Vec<usize> = (0..threads.min(nibbles.len())).collect();
    let jobs = pseq_executor::map_on_threads(
        workers,
        |_| {
            let mut done = Vec::new();
            let mut readers = StorageReaders::new(db)?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&nibble) = nibbles.get(i) else { break };
                let (lo, hi) = crate::trie::bounds(&Nibbles::from_nibbles([nibble]));
                let mine = &accounts[accounts.partition_point(|a| a.0 < lo)..accounts.partition_point(|a| a.0 <= hi)];
                let before = read_before(storage, mine.iter().map(|(hashed, _, address, change)| (hashed, *address, *change)), history)?;
                let mut leaves: BTreeMap<B256, Option<Vec<u8>>> = ready_leaves.range(lo..=hi).map(|(k, v)| (*k, v.clone())).collect();
                let mut merged = Merged::with_capacity(mine.len() * 4);
                for ((hashed, _, address, change), before) in mine.iter().zip(before) {
                    let mut result = prepare_account(storage, &mut readers, address, *hashed, change, history, before)?;
                    leaves.insert(*hashed, result.leaf.take());
                    merged.add(result);
                }
                let keys: Vec<B256> = leaves.keys().copied().collect();
                let mut job = SplitJob { merged, leaves, trie_ops: Vec::new(), trie_nodes: 0, subtree: None };
                if let Some(sub) = crate::trie::child_subtree(&|| account_source(db, &job.leaves), &keys, nibble, root_node.hash_for_nibble(nibble), bottom)? {
                    job.trie_nodes = push_trie_ops(&mut job.trie_ops, tables::ACCOUNT_TRIE, &[], &sub);
                    job.subtree = Some((nibble, sub.root));
                }
                done.push(job);
            }
            Ok(done)
        },
        || StorageError::corrupt("state root worker panicked"),
    )?;
    let jobs: Vec<SplitJob> = jobs.into_iter().flatten().collect();
    if jobs.len() != nibbles.len() {
        return Err(StorageError::corrupt("a state root job was not run"));
    }
    let accounts_done = started.elapsed();
    let mut merged = Merged::with_capacity(jobs.iter().map(|j| j.merged.ops.len() + j.trie_ops.len()).sum::<usize>() + ready.iter().map(|r| r.ops.len()).sum::<usize>() + 64);
    for result in ready {
        merged.add(result);
    }
    let mut roots = [None; 16];
    let whole = jobs.iter().all(|job| job.subtree.is_some());
    let mut overlay = BTreeMap::new();
    let mut trie_ops = Vec::new();
    for mut job in jobs {
        merged.absorb(job.merged);
        if let Some((nibble, root)) = job.subtree {
            roots[usize::from(nibble)] = Some(root);
        }
        match whole {
            true => {
                trie_ops.append(&mut job.trie_ops);
                merged.trie_nodes_changed += job.trie_nodes;
            }
            false => overlay.append(&mut job.leaves),
        }
    }
    let update = match whole {
        true => crate::trie::root_from_subtrees(&mut account_source(db, &BTreeMap::new())?, changed, root_node, &roots, bottom)?,
        // A root child collapsed: the subtrees built are dropped, the account trie built whole.
        false => incremental_root_parallel(&|| account_source(db, &overlay), changed, threads, bottom)?,
    };
    merged.ops.append(&mut trie_ops);
    merged.trie_nodes_changed += push_trie_ops(&mut merged.ops, tables::ACCOUNT_TRIE, &[], &update);
    Ok(merged.finish(parent, update.root, accounts_done, started, reused))
}

/// One account (`hashed`: its hashed address): its plain and hashed writes, history, storage trie
/// and new leaf.
fn prepare_account(
    storage: &Storage,
    readers: &mut StorageReaders<'_>,
    address: &Address,
    hashed: B256,
    change: &pseq_executor::AccountDiff,
    history: History,
    before: Before,
) -> Result<AccountResult> {
    let mut out = AccountResult::default();
    let ops = &mut out.ops;
    let old = before.account;
    let wiped = change.info.is_none() || change.storage_cleared;
    if let History::Record(block) = history {
        let value = old.map(|a| a.encode_full().to_vec()).unwrap_or_default();
        ops.push(Op::Put(tables::ACCOUNT_HISTORY, tables::account_history_key(address, block).to_vec(), value));
        out.changes.accounts.push(*address);
    }

    // Storage: wipe first (the batch applies in order), then the slots the block set.
    let mut slot_overlay: BTreeMap<B256, U256> = BTreeMap::new();
    let mut recorded: Vec<U256> = Vec::new();
    // Only an account that had storage can have non-zero slots in the cache to forget.
    if wiped && old.is_some_and(|a| a.storage_root != EMPTY_ROOT_HASH) {
        out.cache.wiped.push(*address);
        let existing = storage.plain_slots(address)?;
        for (slot, value) in &existing {
            if let History::Record(block) = history {
                ops.push(Op::Put(tables::STORAGE_HISTORY, tables::storage_history_key(address, slot, block).to_vec(), encode_value(value)));
                out.changes.slots.push((*address, *slot));
                recorded.push(*slot);
            }
        }
        ops.push(Op::DeleteRange(tables::STORAGE, address.to_vec(), tables::prefix_end(address.as_slice())));
        ops.push(Op::DeleteRange(tables::HASHED_STORAGE, hashed.to_vec(), tables::prefix_end(hashed.as_slice())));
        ops.push(Op::DeleteRange(tables::STORAGE_TRIE, hashed.to_vec(), tables::prefix_end(hashed.as_slice())));
    }
    recorded.sort();
    for (slot, value) in &change.storage {
        if let History::Record(block) = history {
            if recorded.binary_search(slot).is_err() {
                ops.push(Op::Put(tables::STORAGE_HISTORY, tables::storage_history_key(address, slot, block).to_vec(), encode_value(&before.slot(slot))));
                out.changes.slots.push((*address, *slot));
            }
        }
        if change.info.is_none() {
            continue;
        }
        let plain_key = tables::storage_key(address, slot).to_vec();
        let hashed_slot = keccak256(B256::from(*slot));
        let hashed_key = tables::hashed_storage_key(&hashed, &hashed_slot).to_vec();
        if value.is_zero() {
            ops.push(Op::Delete(tables::STORAGE, plain_key));
            ops.push(Op::Delete(tables::HASHED_STORAGE, hashed_key));
        } else {
            ops.push(Op::Put(tables::STORAGE, plain_key, encode_value(value)));
            ops.push(Op::Put(tables::HASHED_STORAGE, hashed_key, encode_value(value)));
        }
        slot_overlay.insert(hashed_slot, *value);
        out.cache.slots.push((*address, *slot, *value));
    }

    out.hashed = hashed;
    match &change.info {
        None => {
            ops.push(Op::Delete(tables::ACCOUNTS, address.to_vec()));
            ops.push(Op::Delete(tables::HASHED_ACCOUNTS, hashed.to_vec()));
            out.cache.accounts.push((*address, None));
        }
        Some(info) => {
            let old_root = if wiped { EMPTY_ROOT_HASH } else { old.map(|a| a.storage_root).unwrap_or(EMPTY_ROOT_HASH) };
            let storage_root = if slot_overlay.is_empty() {
                old_root
            } else {
                let mut source = readers.source(hashed, wiped || old_root == EMPTY_ROOT_HASH, &slot_overlay);
                let changed: Vec<B256> = slot_overlay.keys().copied().collect();
                let update = incremental_root_from(&mut source, &changed, Some((&storage.bottom, hashed)), old_root)?;
                out.trie_nodes += push_trie_ops(ops, tables::STORAGE_TRIE, hashed.as_slice(), &update);
                update.root
            };
            if let Some(code) = &info.code {
                if info.code_hash != KECCAK_EMPTY {
                    ops.push(Op::Put(tables::CODE, info.code_hash.to_vec(), code.original_bytes().to_vec()));
                }
            }
            let stored = StoredAccount { nonce: info.nonce, balance: info.balance, code_hash: info.code_hash, storage_root };
            ops.push(Op::Put(tables::ACCOUNTS, address.to_vec(), stored.encode_full().to_vec()));
            ops.push(Op::Put(tables::HASHED_ACCOUNTS, hashed.to_vec(), stored.encode_full().to_vec()));
            out.cache.accounts.push((*address, Some(stored)));
            out.leaf = Some(stored.leaf_rlp());
        }
    }
    Ok(out)
}

/// Writes and deletes of one trie's nodes; returns how many.
fn push_trie_ops(ops: &mut Vec<Op>, table: &'static str, prefix: &[u8], update: &RootUpdate) -> usize {
    let key = |path: &Nibbles| {
        let mut key = prefix.to_vec();
        key.extend(path.to_vec());
        key
    };
    for path in &update.removed {
        ops.push(Op::Delete(table, key(path)));
    }
    for (path, node) in &update.updated {
        ops.push(Op::Put(table, key(path), crate::codec::encode_node(node)));
    }
    update.removed.len() + update.updated.len()
}
