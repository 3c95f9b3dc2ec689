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

use crate::error::Result;
use alloy_primitives::{B256, U256};
use alloy_trie::{BranchNodeCompact, HashBuilder, Nibbles};
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
}

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
pub(crate) fn incremental_root(source: &mut impl TrieSource, changed: &[B256]) -> Result<RootUpdate> {
    debug_assert!(changed.windows(2).all(|w| w[0] < w[1]), "changed keys must be sorted and unique");
    let root_path = Nibbles::default();
    let root_node = source.node(&root_path)?;
    if changed.is_empty() {
        if let Some(root) = root_node.as_ref().and_then(|n| n.root_hash) {
            return Ok(RootUpdate { root, ..Default::default() });
        }
    }
    let mut walker = Walker { source, changed, hb: HashBuilder::default().with_updates(true), visited: Vec::new() };
    match root_node {
        Some(node) => walker.walk(root_path, &node)?,
        None => walker.subtree(root_path, None, true)?,
    }
    let root = walker.hb.root();
    let visited = std::mem::take(&mut walker.visited);
    let (_, updated) = walker.hb.split();
    let removed = visited.into_iter().filter(|path| !updated.contains_key(path)).collect();
    Ok(RootUpdate { root, updated, removed })
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
}

impl<S: TrieSource> Walker<'_, S> {
    /// Whether a changed key lies in `lo..=hi`.
    fn changed_in(&self, lo: &B256, hi: &B256) -> bool {
        let index = self.changed.partition_point(|k| k < lo);
        self.changed.get(index).is_some_and(|k| k <= hi)
    }

    fn add_leaves(&mut self, lo: &B256, hi: &B256) -> Result<()> {
        let hb = &mut self.hb;
        self.source.leaves(lo, hi, &mut |key, value| hb.add_leaf(Nibbles::unpack(key), value))
    }

    /// Every child of the stored branch node at `path`.
    fn walk(&mut self, path: Nibbles, node: &BranchNodeCompact) -> Result<()> {
        self.visited.push(path);
        let mut hash_index = 0;
        for nibble in 0..16u8 {
            let mut child = path;
            child.push(nibble);
            if node.state_mask.is_bit_set(nibble) {
                let hash = node.hash_mask.is_bit_set(nibble).then(|| {
                    let hash = node.hashes[hash_index];
                    hash_index += 1;
                    hash
                });
                self.subtree(child, hash, node.tree_mask.is_bit_set(nibble))?;
            } else {
                let (lo, hi) = bounds(&child);
                if self.changed_in(&lo, &hi) {
                    self.add_leaves(&lo, &hi)?;
                }
            }
        }
        Ok(())
    }

    /// The subtree under `prefix`, given what its parent stores about it.
    fn subtree(&mut self, prefix: Nibbles, hash: Option<B256>, in_db: bool) -> Result<()> {
        let (lo, hi) = bounds(&prefix);
        let changed = self.changed_in(&lo, &hi);
        if let (false, Some(hash)) = (changed, hash) {
            self.hb.add_branch(prefix, hash, in_db);
            return Ok(());
        }
        if !in_db {
            return self.add_leaves(&lo, &hi);
        }
        let Some((path, node)) = self.source.first_node_under(&prefix)? else {
            return self.add_leaves(&lo, &hi);
        };
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
    }

    impl MemTrie {
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

    #[test]
    fn incremental_root_equals_full_root_under_random_updates() {
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
                        2 if !existing.is_empty() && rng.next() % 2 == 0 => {
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
                let update = incremental_root(&mut trie, &changed).unwrap();
                let mut fresh = MemTrie { nodes: BTreeMap::new(), leaves: trie.leaves.clone() };
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
                }
                expected_root = update.root;
            }
        }
    }

    #[test]
    fn root_of_nothing_is_the_empty_root() {
        let mut trie = MemTrie::default();
        assert_eq!(incremental_root(&mut trie, &[]).unwrap().root, alloy_trie::EMPTY_ROOT_HASH);
    }

    #[test]
    fn bounds_cover_the_prefix() {
        let (lo, hi) = bounds(&Nibbles::from_nibbles([0xa, 0xb, 0xc]));
        assert_eq!(&lo[..2], &[0xab, 0xc0]);
        assert_eq!(&hi[..2], &[0xab, 0xcf]);
        assert!(hi[2..].iter().all(|b| *b == 0xff));
    }
}
