//! Incremental Merkle-Patricia root over stored branch nodes.
//!
//! The trie is never held in memory. What is stored are its branch nodes in alloy-trie's compact
//! form ([`BranchNodeCompact`]: which children exist, which children are stored branch nodes, and
//! the hashes of the children that are branch nodes), keyed by their path, next to the leaves
//! themselves (hashed keys in sorted order). A root computation walks the stored nodes from the
//! top and feeds a [`HashBuilder`], in key order:
//!
//! - a child subtree with no changed key under it whose hash is stored is added as one hash;
//! - a child subtree with changed keys that holds stored nodes is descended into;
//! - anything else (changed leaves, subtrees of leaves only) is read as leaves.
//!
//! So the work grows with the number of changed keys times the depth of the trie, not with its
//! size. The builder reports every branch node it built; stored nodes that were descended into and
//! not rebuilt no longer exist and are deleted.
//!
//! Only children that are branch nodes are added by hash (alloy-trie clears the hash bit of a
//! child reached through an extension), so when a deletion collapses a branch, the surviving child
//! is a branch (extension above it is right) or leaves read again (merged into one leaf).
//!
//! With a cache of branches ([`crate::bottom`]), a changed branch found in it is rebuilt from its
//! cached children and the pending changes instead, and a changed stored child of it the same way,
//! down to the leaves (`Walker::cached_stored`, `Walker::unstored_branch`); a trie's root is found
//! by the root hash before the change ([`incremental_root_from`]). A lowest branch not found is
//! rebuilt from all its leaves so that it goes in (`Walker::rebuild_lowest`). Either way the
//! nodes stored are exactly the ones above.

use crate::{
    bottom::{branch_hash, build_bottom, classify, is_bottom_branch, leaf_children, leaf_hash, nibble, BottomBranches, BottomLeaf, Child},
    error::Result,
};
use alloy_primitives::{B256, U256};
use alloy_trie::{BranchNodeCompact, HashBuilder, Nibbles, TrieMask};
use alloy_primitives::map::HashMap;

/// Where the stored nodes and current leaves of one trie come from.
pub(crate) trait TrieSource {
    /// The stored branch node at exactly `path`.
    fn node(&mut self, path: &Nibbles) -> Result<Option<BranchNodeCompact>>;
    /// The first stored node (in key order) whose path starts with `prefix`.
    fn first_node_under(&mut self, prefix: &Nibbles) -> Result<Option<(Nibbles, BranchNodeCompact)>>;
    /// Calls `f` with every current leaf whose hashed key lies in `lo..=hi`, in key order, with the
    /// leaf's RLP value.
    fn leaves(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, &[u8])) -> Result<()>;
    /// Calls `f` with every leaf the pending update changes in `lo..=hi`, in key order, with its
    /// new RLP value (`None`: deleted).
    fn pending(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, Option<&[u8]>));
}

/// The bottom-branch cache a root computation uses, and which trie it computes (see
/// [`crate::bottom`]).
pub(crate) type Bottom<'a> = Option<(&'a BottomBranches, B256)>;

/// A computed root and the node changes that go with it.
#[derive(Debug, Default)]
pub(crate) struct RootUpdate {
    /// The new root.
    pub root: B256,
    /// Branch nodes to store (new or changed).
    pub updated: HashMap<Nibbles, BranchNodeCompact>,
    /// Stored branch nodes that no longer exist.
    pub removed: Vec<Nibbles>,
}

/// Computes the root after the leaves at `changed` (sorted hashed keys: inserted, updated or
/// deleted) changed. `stored_root` is the root before, used as is when nothing changed.
pub(crate) fn incremental_root(source: &mut impl TrieSource, changed: &[B256], bottom: Bottom<'_>) -> Result<RootUpdate> {
    debug_assert!(changed.windows(2).all(|w| w[0] < w[1]), "changed keys must be sorted and unique");
    let root_path = Nibbles::default();
    let root_node = source.node(&root_path)?;
    if changed.is_empty() {
        if let Some(root) = root_node.as_ref().and_then(|n| n.root_hash) {
            return Ok(RootUpdate { root, ..Default::default() });
        }
    }
    let mut walker = Walker::new(source, changed, bottom, 0);
    match root_node {
        Some(node) => walker.walk(root_path, &node)?,
        None => walker.subtree(root_path, None, true)?,
    }
    let root = walker.hb.root();
    Ok(walker.take_update(root))
}

/// [`incremental_root`] of a trie whose root hash before the change is `old_root`: with a cache,
/// a root branch node found in it is rebuilt from it (see [`Walker::cached_stored`]) without
/// reading the stored root node; otherwise, or when that does not work out, as
/// [`incremental_root`].
pub(crate) fn incremental_root_from(source: &mut impl TrieSource, changed: &[B256], bottom: Bottom<'_>, old_root: B256) -> Result<RootUpdate> {
    if let (Some((cache, owner)), false) = (bottom, changed.is_empty()) {
        let mut walker = Walker::new(source, changed, bottom, 0);
        if let Some((root, _)) = walker.cached_stored(cache, &owner, Nibbles::default(), old_root, None, changed)? {
            return Ok(walker.take_update(root));
        }
    }
    incremental_root(source, changed, bottom)
}

/// Changed keys below which [`incremental_root_parallel`] splits the work.
pub(crate) const PARALLEL_MIN_CHANGES: usize = 256;

/// [`incremental_root`] with the root's changed children computed on up to `threads` threads.
///
/// A changed child of the root that is a stored branch node is built by a walker of its own
/// whose builder sees keys without their first nibble: it builds the subtree as a standalone
/// trie, whose root node is exactly the child node (same RLP), whose stored nodes are the
/// child's (paths re-prefixed) and whose root hash the root level then adds like an unchanged
/// child. When a child does not come back as a stored branch node (it collapsed), the whole
/// computation is redone sequentially, so the result and the stored nodes never differ from
/// [`incremental_root`]'s.
pub(crate) fn incremental_root_parallel<S, F>(make_source: &F, changed: &[B256], threads: usize, bottom: Bottom<'_>) -> Result<RootUpdate>
where
    S: TrieSource,
    F: Fn() -> Result<S> + Sync,
{
    let mut source = make_source()?;
    let root_path = Nibbles::default();
    let root_node = match source.node(&root_path)? {
        Some(node) if threads > 1 && changed.len() >= PARALLEL_MIN_CHANGES => node,
        _ => return incremental_root(&mut source, changed, bottom),
    };
    let jobs = split_children(&root_node, changed);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let sub_results: Vec<(u8, Result<Option<RootUpdate>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(jobs.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&nibble) = jobs.get(i) else { break };
                        done.push((nibble, child_subtree(make_source, changed, nibble, root_node.hash_for_nibble(nibble), bottom)));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    if sub_results.len() != jobs.len() {
        return incremental_root(&mut source, changed, bottom);
    }
    let mut subtrees: [Option<RootUpdate>; 16] = Default::default();
    for (nibble, result) in sub_results {
        match result? {
            Some(update) => subtrees[nibble as usize] = Some(update),
            None => return incremental_root(&mut source, changed, bottom),
        }
    }

    let roots = subtrees.each_ref().map(|sub| sub.as_ref().map(|sub| sub.root));
    let mut update = root_from_subtrees(&mut source, changed, &root_node, &roots, bottom)?;
    for sub in subtrees.into_iter().flatten() {
        update.updated.extend(sub.updated);
        update.removed.extend(sub.removed);
    }
    Ok(update)
}

/// The children of the root node `root_node` that [`child_subtree`] can build on their own:
/// stored branch nodes whose hash the root keeps, with keys of `changed` (sorted) under them.
pub(crate) fn split_children(root_node: &BranchNodeCompact, changed: &[B256]) -> Vec<u8> {
    (0..16u8)
        .filter(|&n| {
            let (lo, hi) = bounds(&Nibbles::from_nibbles([n]));
            let index = changed.partition_point(|k| k < &lo);
            root_node.tree_mask.is_bit_set(n) && root_node.hash_mask.is_bit_set(n) && changed.get(index).is_some_and(|k| k <= &hi)
        })
        .collect()
}

/// The root level of a trie whose changed children were built on their own ([`child_subtree`]:
/// their new hashes in `subtrees`); the other children are taken from `root_node` (reading
/// their leaves from `source` where they changed). Returns the root and the root level's node
/// changes only.
pub(crate) fn root_from_subtrees<S: TrieSource>(source: &mut S, changed: &[B256], root_node: &BranchNodeCompact, subtrees: &[Option<B256>; 16], bottom: Bottom<'_>) -> Result<RootUpdate> {
    let root_path = Nibbles::default();
    let mut walker = Walker::new(source, changed, bottom, 0);
    walker.visited.push(root_path);
    for nibble in 0..16u8 {
        match subtrees[nibble as usize] {
            Some(root) => walker.hb.add_branch(Nibbles::from_nibbles([nibble]), root, true),
            None => walker.child(root_path, root_node, nibble)?,
        }
    }
    let root = walker.hb.root();
    Ok(walker.take_update(root))
}

/// The subtree under root child `nibble` (hash `hash` before), built as a trie of its own;
/// `None` when it is not a stored branch node any more. With a cache, rebuilt from it when it
/// can be (see [`Walker::cached_stored`]), otherwise walked from its stored node.
pub(crate) fn child_subtree<S, F>(make_source: &F, changed: &[B256], nibble: u8, hash: B256, bottom: Bottom<'_>) -> Result<Option<RootUpdate>>
where
    S: TrieSource,
    F: Fn() -> Result<S>,
{
    let mut source = make_source()?;
    let path = Nibbles::from_nibbles([nibble]);
    let mut walker = Walker::new(&mut source, changed, bottom, 1);
    let mut root = None;
    if let Some((cache, owner)) = bottom {
        let (lo, hi) = bounds(&path);
        let under = &changed[changed.partition_point(|k| k < &lo)..changed.partition_point(|k| k <= &hi)];
        root = walker.cached_stored(cache, &owner, path, hash, None, under)?.map(|(root, _)| root);
    }
    let root = match root {
        Some(root) => root,
        None => match walker.walked_stored(path)? {
            Some(root) => root,
            None => return Ok(None),
        },
    };
    Ok(Some(walker.take_update(root)))
}

/// Computes a root from scratch over every leaf `source` has (ignoring stored nodes), with the
/// branch nodes to store.
#[cfg(test)]
pub(crate) fn full_root(source: &mut impl TrieSource) -> Result<RootUpdate> {
    let mut hb = HashBuilder::default().with_updates(true);
    source.leaves(&B256::ZERO, &B256::repeat_byte(0xff), &mut |key, value| hb.add_leaf(Nibbles::unpack(key), value))?;
    let root = hb.root();
    let (_, updated) = hb.split();
    Ok(RootUpdate { root, updated, removed: Vec::new() })
}

struct Walker<'a, S> {
    source: &'a mut S,
    changed: &'a [B256],
    hb: HashBuilder,
    visited: Vec<Nibbles>,
    /// Leading nibbles dropped from the keys the builder sees: a walker of the subtree under a
    /// one-nibble prefix builds that subtree as a trie of its own (see [`incremental_root_parallel`]).
    strip: usize,
    bottom: Bottom<'a>,
    /// Scratch space for node RLP.
    buf: Vec<u8>,
    /// Stored nodes rebuilt from the cache ([`Walker::lowest_stored`]), by absolute path: the
    /// builder saw them as hashes.
    built: Vec<(Nibbles, BranchNodeCompact)>,
    /// Cache lookups that found their branch, and that did not; lookups that searched the map.
    hits: usize,
    misses: usize,
    by_path: usize,
}

impl<S> Drop for Walker<'_, S> {
    fn drop(&mut self) {
        if let Some((cache, _)) = self.bottom {
            cache.count(self.hits, self.misses, self.by_path);
        }
    }
}

impl<'a, S: TrieSource> Walker<'a, S> {
    fn new(source: &'a mut S, changed: &'a [B256], bottom: Bottom<'a>, strip: usize) -> Self {
        Self { source, changed, hb: HashBuilder::default().with_updates(true), visited: Vec::new(), strip, bottom, buf: Vec::new(), built: Vec::new(), hits: 0, misses: 0, by_path: 0 }
    }

    /// What the walk changed, with the new `root`: the nodes the builder built and those rebuilt
    /// from the cache, and the stored nodes it visited and did not rebuild, to delete.
    fn take_update(&mut self, root: B256) -> RootUpdate {
        let visited = std::mem::take(&mut self.visited);
        let built = std::mem::take(&mut self.built);
        let (_, mut updated) = std::mem::take(&mut self.hb).split();
        updated.extend(built);
        let removed = visited.into_iter().filter(|path| !updated.contains_key(path)).collect();
        RootUpdate { root, updated, removed }
    }

    /// The cached children of the branch at `path` of hash `hash`, and its slot, counted as a hit
    /// or a miss: found at `slot` when its parent knows it, by path otherwise.
    fn lookup(&mut self, cache: &BottomBranches, owner: &B256, path: &Nibbles, hash: &B256, slot: Option<u32>) -> Option<(std::sync::Arc<[Child]>, u32)> {
        let found = match slot {
            Some(slot) => cache.get_at(slot, hash).map(|children| (children, slot)),
            None => {
                self.by_path += 1;
                cache.get(owner, path, hash)
            }
        };
        match found.is_some() {
            true => self.hits += 1,
            false => self.misses += 1,
        }
        found
    }

    /// Every current leaf in `lo..=hi` (key and RLP value), in key order.
    fn read_leaves(&mut self, lo: &B256, hi: &B256) -> Result<Vec<(B256, Vec<u8>)>> {
        let mut leaves = Vec::new();
        self.source.leaves(lo, hi, &mut |key, value| leaves.push((*key, value.to_vec())))?;
        Ok(leaves)
    }

    /// Whether a changed key lies in `lo..=hi`.
    fn changed_in(&self, lo: &B256, hi: &B256) -> bool {
        let index = self.changed.partition_point(|k| k < lo);
        self.changed.get(index).is_some_and(|k| k <= hi)
    }

    fn add_leaves(&mut self, lo: &B256, hi: &B256) -> Result<()> {
        let hb = &mut self.hb;
        let strip = self.strip;
        self.source.leaves(lo, hi, &mut |key, value| hb.add_leaf(Nibbles::unpack(key).slice(strip..), value))
    }

    /// Every child of the stored branch node at `path`.
    fn walk(&mut self, path: Nibbles, node: &BranchNodeCompact) -> Result<()> {
        self.visited.push(path);
        for nibble in 0..16u8 {
            self.child(path, node, nibble)?;
        }
        Ok(())
    }

    /// Child `nibble` of the stored branch node at `path`.
    fn child(&mut self, path: Nibbles, node: &BranchNodeCompact, nibble: u8) -> Result<()> {
        let mut child = path;
        child.push(nibble);
        if node.state_mask.is_bit_set(nibble) {
            let hash = node.hash_mask.is_bit_set(nibble).then(|| node.hash_for_nibble(nibble));
            self.subtree(child, hash, node.tree_mask.is_bit_set(nibble))
        } else {
            let (lo, hi) = bounds(&child);
            if self.changed_in(&lo, &hi) {
                self.add_leaves(&lo, &hi)?;
            }
            Ok(())
        }
    }

    /// The subtree under `prefix`, given what its parent stores about it.
    fn subtree(&mut self, prefix: Nibbles, hash: Option<B256>, in_db: bool) -> Result<()> {
        let (lo, hi) = bounds(&prefix);
        let changed = self.changed_in(&lo, &hi);
        if let (false, Some(hash)) = (changed, hash) {
            self.hb.add_branch(prefix.slice(self.strip..), hash, in_db);
            return Ok(());
        }
        if !in_db {
            return match hash {
                Some(hash) => self.unstored_branch(prefix, hash, &lo, &hi),
                None => self.add_leaves(&lo, &hi),
            };
        }
        if let Some(hash) = hash {
            if self.lowest_stored(prefix, hash)? {
                return Ok(());
            }
        }
        let Some((path, node)) = self.source.first_node_under(&prefix)? else {
            return self.add_leaves(&lo, &hi);
        };
        // Rebuilt from all its leaves only to go into the cache: reading them costs more than
        // walking the node (its bottom branches go in by their stored hashes).
        if let (Some(hash), true, true) = (hash, path == prefix, node.tree_mask.is_empty()) {
            if self.bottom.is_some_and(|(cache, _)| !cache.is_full()) {
                return self.rebuild_lowest(prefix, hash, &lo, &hi);
            }
        }
        // Between `prefix` and `path` there is an extension (or nothing): keys under `prefix`
        // outside `path` can only be new ones.
        let (node_lo, node_hi) = bounds(&path);
        let before = U256::from_be_bytes(node_lo.0).checked_sub(U256::from(1)).map(|v| B256::from(v.to_be_bytes::<32>()));
        if let Some(before) = before.filter(|b| *b >= lo) {
            if self.changed_in(&lo, &before) {
                self.add_leaves(&lo, &before)?;
            }
        }
        self.walk(path, &node)?;
        let after = U256::from_be_bytes(node_hi.0).checked_add(U256::from(1)).map(|v| B256::from(v.to_be_bytes::<32>()));
        if let Some(after) = after.filter(|a| *a <= hi) {
            if self.changed_in(&after, &hi) {
                self.add_leaves(&after, &hi)?;
            }
        }
        Ok(())
    }
}

impl<S: TrieSource> Walker<'_, S> {
    /// A changed child at `prefix` that was a branch node (hash `hash`) with no stored node
    /// under it. When it is still a bottom branch (see [`crate::bottom`]) it is added by its new
    /// hash, computed from the cached hashes of its unchanged leaves (or, on a miss, from all
    /// its leaves, which then go into the cache); otherwise its leaves are added one by one.
    fn unstored_branch(&mut self, prefix: Nibbles, hash: B256, lo: &B256, hi: &B256) -> Result<()> {
        let Some((cache, owner)) = self.bottom else { return self.add_leaves(lo, hi) };
        let mut buf = std::mem::take(&mut self.buf);
        let built = match self.cached_bottom(cache, &owner, &prefix, &hash, None, &mut buf) {
            Some((new, children, _)) => (new, children),
            None if cache.is_full() => {
                self.buf = buf;
                return self.add_leaves(lo, hi);
            }
            None => {
                let all = self.read_leaves(lo, hi)?;
                match build_bottom(&all, prefix.len(), &mut buf) {
                    Some(built) => built,
                    None => {
                        self.buf = buf;
                        for (key, value) in &all {
                            self.hb.add_leaf(Nibbles::unpack(key).slice(self.strip..), value);
                        }
                        return Ok(());
                    }
                }
            }
        };
        self.buf = buf;
        let (new, children) = built;
        self.hb.add_branch(prefix.slice(self.strip..), new, false);
        cache.insert(&owner, &prefix, Some(&hash), new, children);
        Ok(())
    }

    /// The bottom branch at `prefix` (hash `hash` before) rebuilt from its cached leaves and the
    /// pending changes: its new hash and children, and its slot. `None` when it is not cached or
    /// does not stay a bottom branch. `slot`: where its parent says it is kept, if known.
    fn cached_bottom(&mut self, cache: &BottomBranches, owner: &B256, prefix: &Nibbles, hash: &B256, slot: Option<u32>, buf: &mut Vec<u8>) -> Option<(B256, Vec<Child>, u32)> {
        let (old, slot) = self.lookup(cache, owner, prefix, hash, slot)?;
        let (lo, hi) = bounds(prefix);
        let depth = prefix.len();
        let merged = self.merge_pending(&old, depth, &lo, &hi, buf)?;
        if !is_bottom_branch(&merged, depth) {
            return None;
        }
        let children = leaf_children(&merged, depth);
        branch_hash(&children, buf).map(|new| (new, children, slot))
    }

    /// The leaves of the cached bottom branch `old` with the pending changes in `lo..=hi`
    /// applied; `None` when a child is not a leaf or a changed leaf's node is too short to be
    /// hashed.
    fn merge_pending(&mut self, old: &[Child], depth: usize, lo: &B256, hi: &B256, buf: &mut Vec<u8>) -> Option<Vec<BottomLeaf>> {
        let changes = self.pending_hashes(depth, lo, hi, buf)?;
        let mut merged = Vec::with_capacity(old.len() + changes.len());
        let mut old = old.iter().map(|child| child.leaf.map(|key| (key, child.hash))).peekable();
        for (key, hash) in changes {
            while let Some(leaf) = old.next_if(|leaf| leaf.is_none_or(|(k, _)| k < key)) {
                merged.push(leaf?);
            }
            old.next_if(|leaf| leaf.is_some_and(|(k, _)| k == key));
            if let Some(hash) = hash {
                merged.push((key, hash));
            }
        }
        for leaf in old {
            merged.push(leaf?);
        }
        Some(merged)
    }

    /// The pending changes in `lo..=hi` with the hash of each new leaf node at depth `depth + 1`
    /// (`None`: deleted); `None` when one is too short to be hashed.
    fn pending_hashes(&mut self, depth: usize, lo: &B256, hi: &B256, buf: &mut Vec<u8>) -> Option<Vec<(B256, Option<B256>)>> {
        let mut changes = Vec::new();
        let mut inline = false;
        self.source.pending(lo, hi, &mut |key, value| match value {
            Some(value) => match leaf_hash(key, depth + 1, value, buf) {
                Some(hash) => changes.push((*key, Some(hash))),
                None => inline = true,
            },
            None => changes.push((*key, None)),
        });
        (!inline).then_some(changes)
    }

    /// A changed child at `prefix` that is a stored branch node (hash `hash`), rebuilt from the
    /// cache without reading it or its leaves (see [`Walker::cached_stored`]) and added by its
    /// new hash. Returns whether it was done; when not, nothing was added and the caller walks
    /// the node as usual.
    fn lowest_stored(&mut self, prefix: Nibbles, hash: B256) -> Result<bool> {
        let Some((cache, owner)) = self.bottom else { return Ok(false) };
        let (lo, hi) = bounds(&prefix);
        let changed = self.changed;
        let under = &changed[changed.partition_point(|k| k < &lo)..changed.partition_point(|k| k <= &hi)];
        let Some((new, _)) = self.cached_stored(cache, &owner, prefix, hash, None, under)? else { return Ok(false) };
        self.hb.add_branch(prefix.slice(self.strip..), new, true);
        Ok(true)
    }

    /// The stored branch node at `prefix` (hash `hash` before) rebuilt from its cache entry and
    /// the pending changes: its unchanged children keep their cached hashes, a changed stored
    /// child is rebuilt the same way (recursively), a changed bottom branch from its cached
    /// leaves, and a leaf slot may see its leaf updated, deleted or (when empty) one leaf
    /// inserted. Records the node (and those rebuilt under it) as built and visited, and
    /// returns its new hash and its slot. `None` when an entry is missing or the changes reshape a
    /// node: then nothing is recorded. `under`: the changed keys under `prefix` (sorted). `slot`:
    /// where its parent says it is kept, if known.
    fn cached_stored(&mut self, cache: &BottomBranches, owner: &B256, prefix: Nibbles, hash: B256, slot: Option<u32>, under: &[B256]) -> Result<Option<(B256, u32)>> {
        let Some((entry, slot)) = self.lookup(cache, owner, &prefix, &hash, slot) else { return Ok(None) };
        let depth = prefix.len();
        let (visited, built) = (self.visited.len(), self.built.len());
        let mut buf = std::mem::take(&mut self.buf);
        let mut children: Vec<Child> = Vec::with_capacity(16);
        let mut bottoms = Vec::new();
        // The changed keys under each child: the next ones in order.
        let mut ranges = [0usize; 17];
        for nibble in 0..16u8 {
            let start = ranges[usize::from(nibble)];
            ranges[usize::from(nibble) + 1] = start + under[start..].iter().take_while(|key| crate::bottom::nibble(key, depth) == nibble).count();
        }
        // The entries of the changed children the walk goes down into, loaded in parallel.
        let linked = || entry.iter().filter(|c| c.slot().is_some() && ranges[usize::from(c.nibble)] < ranges[usize::from(c.nibble) + 1]);
        if linked().nth(1).is_some() {
            linked().for_each(|c| cache.prefetch_slot(c.slot));
            linked().for_each(|c| cache.prefetch_children(c.slot, &c.hash));
        }
        let mut old = entry.iter().copied().peekable();
        let mut reshaped = false;
        for nibble in 0..16u8 {
            let before = old.next_if(|child| child.nibble == nibble);
            let mine = &under[ranges[usize::from(nibble)]..ranges[usize::from(nibble) + 1]];
            if mine.is_empty() {
                children.extend(before);
                continue;
            }
            let mut path = prefix;
            path.push(nibble);
            let (lo, hi) = bounds(&path);
            // The cheap ways: a stored child or a bottom branch rebuilt from its entry, a leaf
            // slot that keeps at most one leaf.
            match before {
                Some(child) if child.stored => {
                    self.buf = buf;
                    let rebuilt = match self.cached_stored(cache, owner, path, child.hash, child.slot(), mine)? {
                        Some((new, slot)) => Some(Child::stored(nibble, new).at(Some(slot))),
                        // Not in the cache, or reshaped below: walked from its stored node.
                        None => self.walked_stored(path)?.map(|new| Child::stored(nibble, new)),
                    };
                    buf = std::mem::take(&mut self.buf);
                    match rebuilt {
                        Some(child) => children.push(child),
                        None => {
                            reshaped = true;
                            break;
                        }
                    }
                    continue;
                }
                Some(child) if child.other => {}
                Some(child @ Child { leaf: None, .. }) => {
                    if let Some((new, leaves, slot)) = self.cached_bottom(cache, owner, &path, &child.hash, child.slot(), &mut buf) {
                        children.push(Child::bottom(nibble, new).at(Some(slot)));
                        bottoms.push((path, Some(slot), Some(child.hash), new, leaves));
                        continue;
                    }
                }
                _ => {
                    if let Some(slot) = self.pending_slot(before, depth, &lo, &hi, &mut buf) {
                        children.extend(slot.map(|(key, hash)| Child::leaf(nibble, key, hash)));
                        continue;
                    }
                }
            }
            // Otherwise the slot's leaves, read in one range (a few of them), make its new child.
            let leaves = self.read_leaves(&lo, &hi)?;
            if leaves.is_empty() {
                continue;
            }
            match classify(&path, &leaves, &mut buf) {
                Some((child, bottom)) => {
                    children.push(child);
                    bottoms.extend(bottom.map(|(new, entry)| (path, None, None, new, entry)));
                }
                None => {
                    reshaped = true;
                    break;
                }
            }
        }
        let new = match reshaped {
            // Still a stored branch: two children or more, one of them a branch.
            false if children.len() >= 2 && children.iter().any(|c| c.marked) => branch_hash(&children, &mut buf),
            _ => None,
        };
        self.buf = buf;
        let Some(new) = new else {
            self.visited.truncate(visited);
            self.built.truncate(built);
            return Ok(None);
        };
        self.visited.push(prefix);
        self.built.push((prefix, stored_node(&children, prefix.is_empty().then_some(new))));
        for (path, slot, keep, new_hash, leaves) in bottoms {
            match slot {
                Some(slot) => cache.insert_at(slot, keep.as_ref(), new_hash, leaves),
                None => {
                    let slot = cache.insert(owner, &path, keep.as_ref(), new_hash, leaves);
                    link(&mut children, path.last().unwrap_or_default(), slot);
                }
            }
        }
        cache.insert_at(slot, Some(&hash), new, children);
        Ok(Some((new, slot)))
    }

    /// The stored branch node at `prefix` after the changes, walked from its stored node as a
    /// trie of its own (as [`child_subtree`] does a root child): its new hash, with the nodes
    /// walked recorded as visited and those built as built; `None` (nothing recorded) when it
    /// does not stay a stored branch node.
    fn walked_stored(&mut self, prefix: Nibbles) -> Result<Option<B256>> {
        let Some(node) = self.source.node(&prefix)? else { return Ok(None) };
        let mut walker = Walker::new(&mut *self.source, self.changed, self.bottom, prefix.len());
        walker.walk(prefix, &node)?;
        let root = walker.hb.root();
        let visited = std::mem::take(&mut walker.visited);
        let mut nodes = std::mem::take(&mut walker.built);
        let (_, relative) = std::mem::take(&mut walker.hb).split();
        drop(walker);
        let mut top_stored = false;
        for (relative_path, mut node) in relative {
            if relative_path.is_empty() {
                top_stored = true;
                node.root_hash = None;
            }
            let mut absolute = prefix;
            absolute.extend(&relative_path);
            nodes.push((absolute, node));
        }
        if !top_stored {
            return Ok(None);
        }
        self.visited.extend(visited);
        self.built.extend(nodes);
        Ok(Some(root))
    }

    /// A leaf slot (`before`: its leaf, if any) after the pending changes in `lo..=hi`, when it
    /// holds at most one leaf then: that leaf's key and node hash (`Some(None)`: empty). `None`
    /// when it would hold more, or a new leaf node is too short to be hashed.
    fn pending_slot(&mut self, before: Option<Child>, depth: usize, lo: &B256, hi: &B256, buf: &mut Vec<u8>) -> Option<Option<(B256, B256)>> {
        let changes = self.pending_hashes(depth, lo, hi, buf)?;
        let mut slot: Option<(B256, B256)> = before.and_then(|child| child.leaf.map(|key| (key, child.hash)));
        for (key, new) in changes {
            match (new, slot) {
                (None, Some((k, _))) if k == key => slot = None,
                (None, _) => {}
                (Some(_), Some((k, _))) if k != key => return None,
                (Some(new), _) => slot = Some((key, new)),
            }
        }
        Some(slot)
    }
}

impl<S: TrieSource> Walker<'_, S> {
    /// A changed stored branch node at `prefix` (hash `hash` before) with no stored node below
    /// it, not in the cache: built from all its leaves, read in one range. When it stays a lowest
    /// stored branch (its children single leaves and bottom branches, one branch at least) it is
    /// added by hash, and it and its bottom branches go into the cache; otherwise its leaves are
    /// added one by one (what walking it would add).
    fn rebuild_lowest(&mut self, prefix: Nibbles, hash: B256, lo: &B256, hi: &B256) -> Result<()> {
        let Some((cache, owner)) = self.bottom else { return self.add_leaves(lo, hi) };
        self.visited.push(prefix);
        let all = self.read_leaves(lo, hi)?;
        let depth = prefix.len();
        let mut buf = std::mem::take(&mut self.buf);
        let mut children = Vec::with_capacity(16);
        let mut bottoms = Vec::new();
        let mut whole = true;
        for group in all.chunk_by(|a, b| nibble(&a.0, depth) == nibble(&b.0, depth)) {
            let mut path = prefix;
            path.push(nibble(&group[0].0, depth));
            match classify(&path, group, &mut buf) {
                Some((child, bottom)) => {
                    children.push(child);
                    bottoms.extend(bottom.map(|(new, entry)| (path, new, entry)));
                }
                None => {
                    whole = false;
                    break;
                }
            }
        }
        let new = match whole && children.len() >= 2 && children.iter().any(|c| c.marked) {
            true => branch_hash(&children, &mut buf),
            false => None,
        };
        self.buf = buf;
        let Some(new) = new else {
            for (key, value) in &all {
                self.hb.add_leaf(Nibbles::unpack(key).slice(self.strip..), value);
            }
            return Ok(());
        };
        self.hb.add_branch(prefix.slice(self.strip..), new, true);
        self.built.push((prefix, stored_node(&children, None)));
        for (path, new_hash, leaves) in bottoms {
            let slot = cache.insert(&owner, &path, None, new_hash, leaves);
            link(&mut children, path.last().unwrap_or_default(), slot);
        }
        cache.insert(&owner, &prefix, Some(&hash), new, children);
        Ok(())
    }
}

/// Records in `children` that the child at `nibble` is kept at `slot`.
pub(crate) fn link(children: &mut [Child], nibble: u8, slot: Option<u32>) {
    if let Some(child) = children.iter_mut().find(|c| c.nibble == nibble) {
        child.slot = slot.unwrap_or(crate::bottom::NO_SLOT);
    }
}

/// The node alloy-trie stores for a branch with these children: its stored children in the tree
/// mask, the hashes of its branch children, and (`root_hash`) its own hash when it is the root.
fn stored_node(children: &[Child], root_hash: Option<B256>) -> BranchNodeCompact {
    let (mut state_mask, mut tree_mask, mut hash_mask) = (TrieMask::default(), TrieMask::default(), TrieMask::default());
    let mut hashes = Vec::with_capacity(children.iter().filter(|c| c.marked).count());
    for child in children {
        state_mask.set_bit(child.nibble);
        if child.stored {
            tree_mask.set_bit(child.nibble);
        }
        if child.marked {
            hash_mask.set_bit(child.nibble);
            hashes.push(child.hash);
        }
    }
    BranchNodeCompact::new(state_mask, tree_mask, hash_mask, hashes, root_hash)
}

/// The smallest and largest 32-byte keys under a nibble prefix.
pub(crate) fn bounds(prefix: &Nibbles) -> (B256, B256) {
    let mut lo = [0u8; 32];
    let mut hi = [0xffu8; 32];
    for i in 0..prefix.len().min(64) {
        let nibble = prefix.get_unchecked(i);
        let byte = i / 2;
        if i % 2 == 0 {
            lo[byte] = nibble << 4;
            hi[byte] = (nibble << 4) | 0x0f;
        } else {
            lo[byte] |= nibble;
            hi[byte] = (hi[byte] & 0xf0) | nibble;
        }
    }
    (B256::from(lo), B256::from(hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A trie held in maps: stored nodes and leaves.
    #[derive(Default, Clone)]
    struct MemTrie {
        nodes: BTreeMap<Vec<u8>, BranchNodeCompact>,
        leaves: BTreeMap<B256, Vec<u8>>,
        /// The keys the update being computed changed (sorted), for [`TrieSource::pending`].
        pending: Vec<B256>,
    }

    impl TrieSource for MemTrie {
        fn node(&mut self, path: &Nibbles) -> Result<Option<BranchNodeCompact>> {
            Ok(self.nodes.get(&path.to_vec()).cloned())
        }
        fn first_node_under(&mut self, prefix: &Nibbles) -> Result<Option<(Nibbles, BranchNodeCompact)>> {
            let key = prefix.to_vec();
            Ok(self
                .nodes
                .range(key.clone()..)
                .next()
                .filter(|(k, _)| k.starts_with(&key))
                .map(|(k, n)| (Nibbles::from_nibbles(k), n.clone())))
        }
        fn leaves(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, &[u8])) -> Result<()> {
            for (k, v) in self.leaves.range(*lo..=*hi) {
                f(k, v);
            }
            Ok(())
        }
        fn pending(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, Option<&[u8]>)) {
            for key in self.pending.iter().filter(|k| *k >= lo && *k <= hi) {
                f(key, self.leaves.get(key).map(Vec::as_slice));
            }
        }
    }

    impl MemTrie {
        /// Puts every stored node into `cache` as [`crate::Storage::warm_trie_cache`] does.
        fn warm(&self, cache: &BottomBranches, owner: &B256) {
            let (mut report, mut found, mut buf) = (Default::default(), Vec::new(), Vec::new());
            for (path, node) in &self.nodes {
                let mut leaves = |lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, &[u8])| -> Result<()> {
                    self.leaves.range(*lo..=*hi).for_each(|(k, v)| f(k, v));
                    Ok(())
                };
                crate::warm::warm_node(cache, owner, Nibbles::from_nibbles(path), node, &mut leaves, &mut report, &mut found, &mut buf).unwrap();
            }
        }

        fn apply(&mut self, update: &RootUpdate) {
            for path in &update.removed {
                self.nodes.remove(&path.to_vec());
            }
            for (path, node) in &update.updated {
                self.nodes.insert(path.to_vec(), node.clone());
            }
        }
    }

    /// A small deterministic generator, so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn key(&mut self, clustered: bool) -> B256 {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&self.next().to_be_bytes());
            }
            if clustered {
                // Long shared prefixes: extensions, collapses and inline nodes.
                bytes[..30].fill(0xab);
                bytes[30] &= 0x13;
            }
            B256::from(bytes)
        }
    }

    /// Incremental roots over random updates (inserts, updates, deletes, keys splitting
    /// extensions at every depth, clustered keys with inlined nodes) equal from-scratch roots,
    /// and the stored nodes equal a from-scratch build's, with and without the bottom-branch
    /// cache (which must be hit).
    #[test]
    fn incremental_root_equals_full_root_under_random_updates() {
        let (hits, _) = random_updates(false, usize::MAX, false);
        assert_eq!(hits, 0);
        let (hits, misses) = random_updates(true, usize::MAX, false);
        assert!(hits > 500 && misses > 500, "the bottom-branch cache was hit {hits} times and missed {misses} times");
        // A cache that fills up early: past its limit it only keeps what it has.
        let (hits, _) = random_updates(true, 30_000, false);
        assert!(hits > 50, "the full cache was hit {hits} times");
        // Warmed with every stored node (upper branches and roots included), as a node warms
        // it from its datadir: the roots and nodes are the same.
        let (hits, _) = random_updates(true, usize::MAX, true);
        assert!(hits > 1_000, "the warmed cache was hit {hits} times");
    }

    fn random_updates(cached: bool, limit: usize, warmed: bool) -> (usize, usize) {
        let cache = BottomBranches::new(limit);
        let owner = B256::repeat_byte(7);
        let bottom = cached.then_some((&cache, owner));
        for seed in 1..=60u64 {
            let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
            let clustered = seed % 3 == 0;
            let mut trie = MemTrie::default();
            for _ in 0..(rng.next() % 300) {
                let key = rng.key(clustered);
                trie.leaves.insert(key, vec![0x80 + (rng.next() % 50) as u8; 1 + (rng.next() % 40) as usize]);
            }
            let initial = full_root(&mut trie.clone()).unwrap();
            trie.apply(&initial);
            let mut expected_root = initial.root;
            for round in 0..8 {
                // Warmed before every other round: the rounds between run on what the last
                // roots put in.
                if warmed && round % 2 == 0 {
                    trie.warm(&cache, &owner);
                }
                let mut changed = Vec::new();
                let existing: Vec<B256> = trie.leaves.keys().copied().collect();
                for _ in 0..(rng.next() % 40) {
                    match rng.next() % 3 {
                        0 if !existing.is_empty() => {
                            let key = existing[(rng.next() % existing.len() as u64) as usize];
                            trie.leaves.remove(&key);
                            changed.push(key);
                        }
                        1 if !existing.is_empty() => {
                            let key = existing[(rng.next() % existing.len() as u64) as usize];
                            trie.leaves.insert(key, vec![0x42; 1 + (rng.next() % 33) as usize]);
                            changed.push(key);
                        }
                        2 if !existing.is_empty() && rng.next().is_multiple_of(2) => {
                            // A key sharing a random-length prefix with an existing one: splits
                            // extensions at every depth.
                            let near = existing[(rng.next() % existing.len() as u64) as usize];
                            let mut key = rng.key(false);
                            let shared = (rng.next() % 64) as usize;
                            let mut nibbles = Nibbles::unpack(near).slice(..shared);
                            nibbles.extend(&Nibbles::unpack(key).slice(shared..));
                            key = B256::from_slice(&nibbles.pack());
                            trie.leaves.insert(key, vec![0x17; 1 + (rng.next() % 33) as usize]);
                            changed.push(key);
                        }
                        _ => {
                            let key = rng.key(clustered);
                            trie.leaves.insert(key, vec![0x17; 1 + (rng.next() % 33) as usize]);
                            changed.push(key);
                        }
                    }
                }
                changed.sort();
                changed.dedup();
                trie.pending = changed.clone();
                let update = match warmed {
                    true => incremental_root_from(&mut trie, &changed, bottom, expected_root).unwrap(),
                    false => incremental_root(&mut trie, &changed, bottom).unwrap(),
                };
                let mut fresh = MemTrie { nodes: BTreeMap::new(), leaves: trie.leaves.clone(), pending: Vec::new() };
                let full = full_root(&mut fresh).unwrap();
                assert_eq!(update.root, full.root, "seed {seed} round {round}");
                if changed.is_empty() {
                    assert_eq!(update.root, expected_root);
                }
                trie.apply(&update);
                // The stored nodes are exactly the ones a from-scratch build stores.
                fresh.apply(&full);
                assert_eq!(trie.nodes.keys().collect::<Vec<_>>(), fresh.nodes.keys().collect::<Vec<_>>(), "seed {seed} round {round}");
                for (path, node) in &fresh.nodes {
                    let ours = &trie.nodes[path];
                    assert_eq!((ours.state_mask, ours.tree_mask, ours.hash_mask), (node.state_mask, node.tree_mask, node.hash_mask), "seed {seed} round {round} path {path:?}");
                    assert_eq!(ours.hashes, node.hashes);
                    assert_eq!(ours.root_hash, node.root_hash, "seed {seed} round {round} path {path:?}");
                }
                expected_root = update.root;
            }
        }
        cache.hits_and_misses()
    }

    /// The parallel root (the root's changed children on their own threads) gives the same
    /// root and exactly the same stored nodes as the sequential one, round after round.
    #[test]
    fn parallel_root_equals_sequential_root_and_nodes() {
        let cache = BottomBranches::new(usize::MAX);
        for seed in 1..=4u64 {
            // Odd seeds use the bottom-branch cache for the parallel root, even ones for the
            // sequential one.
            let bottom = Some((&cache, B256::repeat_byte(seed as u8)));
            let (parallel_bottom, sequential_bottom) = if seed % 2 == 1 { (bottom, None) } else { (None, bottom) };
            let mut rng = Rng(seed * 0x2545_f491_4f6c_dd1d);
            let mut trie = MemTrie::default();
            for _ in 0..6_000 {
                let key = rng.key(false);
                trie.leaves.insert(key, vec![0x81; 1 + (rng.next() % 40) as usize]);
            }
            let initial = full_root(&mut trie.clone()).unwrap();
            trie.apply(&initial);
            // Seeds 3 and 4 start with every stored node in the cache (upper branches too).
            if seed >= 3 {
                trie.warm(&cache, &B256::repeat_byte(seed as u8));
            }
            for round in 0..5 {
                let existing: Vec<B256> = trie.leaves.keys().copied().collect();
                let mut changed = Vec::new();
                let deletes_only = round == 4;
                for _ in 0..400 {
                    let key = if deletes_only || rng.next().is_multiple_of(2) { existing[(rng.next() % existing.len() as u64) as usize] } else { rng.key(false) };
                    if deletes_only || rng.next().is_multiple_of(3) {
                        trie.leaves.remove(&key);
                    } else {
                        trie.leaves.insert(key, vec![0x55; 1 + (rng.next() % 40) as usize]);
                    }
                    changed.push(key);
                }
                changed.sort();
                changed.dedup();
                trie.pending = changed.clone();
                let snapshot = trie.clone();
                let parallel = incremental_root_parallel(&|| Ok(snapshot.clone()), &changed, 3, parallel_bottom).unwrap();
                let sequential = incremental_root(&mut trie.clone(), &changed, sequential_bottom).unwrap();
                assert_eq!(parallel.root, sequential.root, "seed {seed} round {round}");
                let mut a = trie.clone();
                a.apply(&parallel);
                let mut b = trie.clone();
                b.apply(&sequential);
                assert_eq!(a.nodes, b.nodes, "seed {seed} round {round}: stored nodes differ");
                trie = a;
            }
            let mut fresh = MemTrie { nodes: BTreeMap::new(), leaves: trie.leaves.clone(), pending: Vec::new() };
            let full = full_root(&mut fresh).unwrap();
            fresh.apply(&full);
            assert_eq!(fresh.nodes, trie.nodes, "seed {seed}: nodes after rounds differ from a fresh build");
        }
        let (hits, _) = cache.hits_and_misses();
        assert!(hits > 300, "the bottom-branch cache was hit only {hits} times");
    }

    #[test]
    fn root_of_nothing_is_the_empty_root() {
        let mut trie = MemTrie::default();
        assert_eq!(incremental_root(&mut trie, &[], None).unwrap().root, alloy_trie::EMPTY_ROOT_HASH);
    }

    #[test]
    fn bounds_cover_the_prefix() {
        let (lo, hi) = bounds(&Nibbles::from_nibbles([0xa, 0xb, 0xc]));
        assert_eq!(&lo[..2], &[0xab, 0xc0]);
        assert_eq!(&hi[..2], &[0xab, 0xcf]);
        assert!(hi[2..].iter().all(|b| *b == 0xff));
    }
}
