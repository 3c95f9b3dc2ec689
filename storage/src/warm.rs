//! Filling the bottom-branch cache ([`crate::bottom`]) from the stored state, so that the first
//! blocks after the node starts get the same state-root speed as later ones.

use crate::{
    bottom::{branch_hash, build_bottom, classify, BottomBranches, Child, ACCOUNT_TRIE_OWNER},
    codec::decode_node,
    db::{cf, Storage},
    error::{Result, StorageError},
    sources::{account_source, StorageReaders},
    tables,
    trie::{bounds, TrieSource},
};
use alloy_primitives::B256;
use alloy_trie::{BranchNodeCompact, Nibbles};
use std::collections::BTreeMap;

/// What [`Storage::warm_trie_cache`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Branches put in the cache (bottom branches and stored ones).
    pub branches: u64,
    /// Leaves under them.
    pub leaves: u64,
    /// Bottom branches whose leaves did not hash to what their parent stores (a datadir
    /// written by a broken build, or a state changing under the walk): left out.
    pub mismatches: u64,
    /// Whether the cache filled up before every branch was visited.
    pub full: bool,
}

impl Storage {
    /// Reads every bottom branch of the account trie and of the storage tries (the branches
    /// alloy-trie does not store, whose children are leaves) with its leaves, hashes them, checks
    /// the result against the hash their parent stores, and keeps them, and every stored branch
    /// above them (see `warm_node`), in the in-memory cache the incremental state root uses,
    /// until the cache's byte limit
    /// ([`crate::StorageOptions::trie_cache_bytes`]). Safe while blocks are committed: entries
    /// are found by content, so one read across a commit is only left unused. The account trie
    /// and the storage tries are read on two threads.
    pub fn warm_trie_cache(&self) -> Result<WarmReport> {
        let db = self.db();
        let (accounts, storage) = std::thread::scope(|scope| {
            let accounts = scope.spawn(|| {
                let overlay = BTreeMap::new();
                let mut source = account_source(db, &overlay)?;
                self.warm_table(tables::ACCOUNT_TRIE, 0, &mut |_, lo, hi, f| source.leaves(lo, hi, f))
            });
            let storage = scope.spawn(|| {
                let mut readers = StorageReaders::new(db)?;
                let overlay = BTreeMap::new();
                self.warm_table(tables::STORAGE_TRIE, 32, &mut |owner, lo, hi, f| readers.source(*owner, false, &overlay).leaves(lo, hi, f))
            });
            let join = |h: std::thread::ScopedJoinHandle<'_, Result<WarmReport>>| h.join().unwrap_or_else(|_| Err(StorageError::corrupt("trie cache warm-up panicked")));
            (join(accounts), join(storage))
        });
        let (a, s) = (accounts?, storage?);
        Ok(WarmReport { branches: a.branches + s.branches, leaves: a.leaves + s.leaves, mismatches: a.mismatches + s.mismatches, full: a.full || s.full })
    }

    /// Warms the bottom branches under every stored node of `table` (keys: an owner of
    /// `owner_len` bytes, then the node's nibble path), reading leaves with `leaves`.
    #[allow(clippy::type_complexity)]
    fn warm_table(
        &self,
        table: &str,
        owner_len: usize,
        leaves: &mut dyn FnMut(&B256, &B256, &B256, &mut dyn FnMut(&B256, &[u8])) -> Result<()>,
    ) -> Result<WarmReport> {
        let db = self.db();
        let mut report = WarmReport::default();
        let mut nodes = db.raw_iterator_cf(cf(db, table)?);
        nodes.seek_to_first();
        let mut found: Vec<(B256, Vec<u8>)> = Vec::new();
        let mut buf = Vec::new();
        while let Some((key, value)) = nodes.item() {
            if key.len() < owner_len || key.len() > owner_len + 64 || key[owner_len..].iter().any(|n| *n > 0x0f) {
                return Err(StorageError::corrupt("trie node key"));
            }
            let owner = if owner_len == 0 { ACCOUNT_TRIE_OWNER } else { B256::from_slice(&key[..owner_len]) };
            let path = Nibbles::from_nibbles_unchecked(&key[owner_len..]);
            let node: BranchNodeCompact = decode_node(value)?;
            if self.bottom.is_full() {
                report.full = true;
                return Ok(report);
            }
            warm_node(&self.bottom, &owner, path, &node, &mut |lo, hi, f| leaves(&owner, lo, hi, f), &mut report, &mut found, &mut buf)?;
            nodes.next();
        }
        nodes.status()?;
        Ok(report)
    }

    /// A fingerprint of the stored trie nodes (account trie and storage tries): two datadirs
    /// holding the same state have the same one, whatever blocks led there and whether the
    /// state-root cache was used (the nodes stored are exactly alloy-trie's for that state).
    pub fn trie_fingerprint(&self) -> Result<B256> {
        let db = self.db();
        let mut hasher = alloy_primitives::Keccak256::new();
        for table in [tables::ACCOUNT_TRIE, tables::STORAGE_TRIE] {
            let mut iter = db.raw_iterator_cf(cf(db, table)?);
            iter.seek_to_first();
            while let Some((key, value)) = iter.item() {
                hasher.update((key.len() as u32).to_be_bytes());
                hasher.update(key);
                hasher.update((value.len() as u32).to_be_bytes());
                hasher.update(value);
                iter.next();
            }
            iter.status()?;
            hasher.update([0xff]);
        }
        Ok(hasher.finalize())
    }

    /// Empties the state-root cache of bottom branches (for benchmarks: the root of a node that
    /// has just started, before [`Storage::warm_trie_cache`]).
    pub fn clear_trie_cache(&self) {
        self.bottom.clear();
    }

    /// Empties the state cache of accounts, slots and code (for benchmarks: the state root of an
    /// update whose old values the executor did not read).
    pub fn clear_state_cache(&self) {
        self.cache.begin_change();
        self.cache.clear();
        self.cache.code.clear();
        self.cache.end_change();
    }

    /// Lookups in the state-root cache that searched its map by path (a trie's root, or a branch
    /// whose parent did not know where it is kept) since the datadir was opened.
    pub fn trie_cache_path_lookups(&self) -> usize {
        self.bottom.path_lookups()
    }

    /// Bottom branches in the state-root cache, its approximate size in bytes, and its hits and
    /// misses since the datadir was opened.
    pub fn trie_cache_stats(&self) -> (usize, usize, usize, usize) {
        let (hits, misses) = self.bottom.hits_and_misses();
        (self.bottom.len(), self.bottom.bytes(), hits, misses)
    }
}

/// Puts the stored branch node `node` at `path` of `owner`'s trie into `cache`, with the bottom
/// branches under it, reading the leaves of its children that are not stored nodes with
/// `leaves` (lo, hi, callback). The node goes in when every child is of a shape the cache
/// follows: a stored branch (found by the hash this node keeps for it), a bottom branch, a single
/// leaf or a small unmarked subtree. A trie's root goes in too: it is found by the trie's root
/// hash (the state root, or the account's storage root).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub(crate) fn warm_node(
    cache: &BottomBranches,
    owner: &B256,
    path: Nibbles,
    node: &BranchNodeCompact,
    leaves: &mut dyn FnMut(&B256, &B256, &mut dyn FnMut(&B256, &[u8])) -> Result<()>,
    report: &mut WarmReport,
    found: &mut Vec<(B256, Vec<u8>)>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let mut children: Option<Vec<Child>> = Some(Vec::with_capacity(16));
    for nibble in node.state_mask.iter() {
        if node.tree_mask.is_bit_set(nibble) {
            // Behind an extension a stored child has no hash here: not followed.
            match (node.hash_mask.is_bit_set(nibble), children.as_mut()) {
                (true, Some(list)) => {
                    // Its entry comes later (the table is read parents first): the slot it will
                    // go in is given now.
                    let mut child = path;
                    child.push(nibble);
                    list.push(Child::stored(nibble, node.hash_for_nibble(nibble)).at(cache.slot_or_new(owner, &child)));
                }
                _ => children = None,
            }
            continue;
        }
        let mut child = path;
        child.push(nibble);
        let (lo, hi) = bounds(&child);
        found.clear();
        leaves(&lo, &hi, &mut |k, v| found.push((*k, v.to_vec())))?;
        if node.hash_mask.is_bit_set(nibble) {
            let expected = node.hash_for_nibble(nibble);
            if let Some(list) = children.as_mut() {
                list.push(Child::bottom(nibble, expected));
            }
            let Some((hash, bottom)) = build_bottom(found, child.len(), buf) else { continue };
            if hash != expected {
                report.mismatches += 1;
                continue;
            }
            report.branches += 1;
            report.leaves += bottom.len() as u64;
            let slot = cache.insert(owner, &child, None, expected, bottom);
            if let Some(list) = children.as_mut() {
                crate::trie::link(list, nibble, slot);
            }
        } else {
            // A single leaf, or a subtree of a few leaves that alloy-trie does not mark.
            match (classify(&child, found, buf), children.as_mut()) {
                (Some((leaf, _)), Some(list)) => list.push(leaf),
                _ => children = None,
            }
        }
    }
    if let Some(children) = children.filter(|c| c.iter().any(|c| c.marked)) {
        if let Some(hash) = branch_hash(&children, buf) {
            report.branches += 1;
            report.leaves += children.iter().filter(|c| c.leaf.is_some()).count() as u64;
            cache.insert(owner, &path, None, hash, children);
        }
    }
    Ok(())
}
