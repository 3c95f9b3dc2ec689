//! The lowest branch nodes of a trie, kept in memory with the hashes of their children.
//!
//! alloy-trie stores a branch node only when one of its children is a branch node, so the
//! lowest branches of a trie are of two kinds:
//!
//! - *bottom branches*, whose children are all single leaves: not stored at all, only their hash
//!   is, in their parent;
//! - *lowest stored branches*, whose children are leaves and bottom branches: stored, but with
//!   the hashes of their bottom branches only, not those of their leaves.
//!
//! In a state of a million accounts these are the branches at depths 4 and 5, with about 15
//! leaves each. When one of their leaves changes, the walk must read the node and every sibling
//! leaf from RocksDB and hash each leaf again, and that is most of the work of an incremental
//! root.
//!
//! [`BottomBranches`] keeps, per such branch, each child's hash and, for a leaf, its key. It
//! keeps the stored branches above them the same way (their children are then mostly stored
//! branches, known by the hashes their parent stores), the roots included, so that a root
//! computation rebuilds the whole changed part of a trie from memory, reading from RocksDB only
//! where a node is missing or the changes reshape it. It is
//! content-addressed: an entry is found by the trie (owner) and path of the branch *and* the
//! branch's hash, which commits to every key and value under it. So an entry is either exactly
//! right for the state being read or not found: it never needs invalidating when blocks are
//! committed, unwound or discarded, and it can be filled at any time (by the walk itself, or by
//! [`crate::Storage::warm_trie_cache`]).

use alloy_primitives::{map::DefaultHashBuilder, B256};
use alloy_trie::{
    nodes::{BranchNodeRef, ExtensionNodeRef, LeafNodeRef, RlpNode},
    Nibbles, TrieMask,
};
use dashmap::DashMap;
use std::sync::{
    atomic::{AtomicU32, AtomicUsize, Ordering},
    Arc, OnceLock, RwLock,
};

/// One leaf of a bottom branch: its hashed key and the hash of its leaf node.
pub(crate) type BottomLeaf = (B256, B256);

/// One child of a cached branch: its nibble, its key when it is a single leaf, and the hash of
/// its node. A child that is not a leaf is a bottom branch, or (`other`) a subtree of a few
/// leaves of another shape holding no node alloy-trie would store (an extension over a bottom
/// branch, mostly), whose changes the cache does not follow, or (`stored`) a stored branch node,
/// which has an entry of its own. `marked`: the child is a branch node, which its parent marks in
/// its hash mask. `slot`: for a bottom or stored branch, where its entry is kept (see
/// [`BottomBranches`]; [`NO_SLOT`] when not known), so that a walk goes from a branch to its
/// child without searching the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Child {
    pub nibble: u8,
    pub leaf: Option<B256>,
    pub hash: B256,
    pub other: bool,
    pub marked: bool,
    pub stored: bool,
    pub slot: u32,
}

/// No slot known for a child.
pub(crate) const NO_SLOT: u32 = u32::MAX;

impl Child {
    /// A single leaf.
    pub(crate) fn leaf(nibble: u8, key: B256, hash: B256) -> Self {
        Self { nibble, leaf: Some(key), hash, other: false, marked: false, stored: false, slot: NO_SLOT }
    }

    /// A bottom branch.
    pub(crate) fn bottom(nibble: u8, hash: B256) -> Self {
        Self { nibble, leaf: None, hash, other: false, marked: true, stored: false, slot: NO_SLOT }
    }

    /// A stored branch node (its parent marks it in its tree mask and its hash mask).
    pub(crate) fn stored(nibble: u8, hash: B256) -> Self {
        Self { nibble, leaf: None, hash, other: false, marked: true, stored: true, slot: NO_SLOT }
    }

    /// This child with its entry kept at `slot`.
    pub(crate) fn at(self, slot: Option<u32>) -> Self {
        Self { slot: slot.unwrap_or(NO_SLOT), ..self }
    }

    /// Where this child's entry is kept, when known.
    pub(crate) fn slot(&self) -> Option<u32> {
        (self.slot != NO_SLOT).then_some(self.slot)
    }
}

/// The subtree holding `leaves` (sorted, at least one) under child `nibble` at a path of
/// `depth` nibbles, as an `other` child: when its node is hashed (not inlined) and it holds no
/// branch node alloy-trie would store (none with a hashed branch child).
pub(crate) fn other_child(nibble: u8, leaves: &[(B256, Vec<u8>)], depth: usize, buf: &mut Vec<u8>) -> Option<Child> {
    let (node, stored, is_branch) = subtree_node(leaves, depth, buf);
    if stored {
        return None;
    }
    node.as_hash().map(|hash| Child { nibble, leaf: None, hash, other: true, marked: is_branch, stored: false, slot: NO_SLOT })
}

/// The node of a subtree of `leaves` below a path of `depth` nibbles: its RLP reference, whether
/// it holds a node alloy-trie would store, and whether it is a branch node.
fn subtree_node(leaves: &[(B256, Vec<u8>)], depth: usize, buf: &mut Vec<u8>) -> (RlpNode, bool, bool) {
    let (first, last) = match leaves {
        [(key, value)] => {
            let suffix = Nibbles::unpack(key).slice(depth..);
            buf.clear();
            return (LeafNodeRef::new(&suffix, value).rlp(buf), false, false);
        }
        [first, .., last] => (Nibbles::unpack(first.0).slice(depth..), Nibbles::unpack(last.0).slice(depth..)),
        [] => return (RlpNode::default(), true, false),
    };
    let common = first.common_prefix_length(&last);
    if common > 0 {
        let (child, stored, _) = subtree_node(leaves, depth + common, buf);
        buf.clear();
        return (ExtensionNodeRef::new(&first.slice(..common), &child).rlp(buf), stored, false);
    }
    let (mut stack, mut mask, mut stored) = (Vec::new(), TrieMask::default(), false);
    for group in leaves.chunk_by(|a, b| nibble(&a.0, depth) == nibble(&b.0, depth)) {
        let (node, inner_stored, is_branch) = subtree_node(group, depth + 1, buf);
        // A branch child with a hashed node is marked in this branch's hash mask: stored.
        stored |= inner_stored || (is_branch && node.is_hash());
        mask.set_bit(nibble(&group[0].0, depth));
        stack.push(node);
    }
    buf.clear();
    (BranchNodeRef::new(&stack, mask).rlp(buf), stored, true)
}

/// The children of a bottom branch at a path of `depth` nibbles with these leaves.
pub(crate) fn leaf_children(leaves: &[BottomLeaf], depth: usize) -> Vec<Child> {
    leaves.iter().map(|(key, hash)| Child::leaf(nibble(key, depth), *key, *hash)).collect()
}

/// The trie an entry belongs to: the account trie, or the storage trie of a hashed address.
/// (No account's hashed address is zero, so zero names the account trie.)
pub(crate) const ACCOUNT_TRIE_OWNER: B256 = B256::ZERO;

/// One version of a branch: its hash and its children in nibble order.
#[derive(Debug, Clone)]
struct Version {
    hash: B256,
    children: Arc<[Child]>,
}

/// Bytes an entry of `children` children is counted as (the map's own overhead included roughly).
fn entry_bytes(children: usize) -> usize {
    160 + children * std::mem::size_of::<Child>()
}

/// Shards of the map: the walk's threads insert as often as they look up (every branch they
/// rebuild), and with few shards they wait on each other's write locks (measured: with
/// `DashMap`'s default of 4 per core, a dense block's account trie took twice as long).
const SHARDS: usize = 1024;

/// The two versions kept for one branch path (see [`BottomBranches`]).
type Versions = [Option<Version>; 2];

/// One path's versions, on cache lines of their own (two), so that a prefetch of a slot brings
/// exactly it.
#[derive(Debug)]
#[repr(align(64))]
struct Slot(RwLock<Versions>);

/// Asks the CPU to start loading the `lines` cache lines from `start`, without waiting for them:
/// a walk about to visit several children of a branch has their entries loaded in parallel
/// instead of one miss after the other.
fn prefetch<T>(start: *const T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines {
        // SAFETY: a prefetch is only a hint to the cache: it reads nothing into the program, and
        // an address that is not mapped is ignored, never a fault.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.cast::<i8>().wrapping_add(line * 64)) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, lines);
}

/// Slots per chunk of [`Slots`].
const SLOT_CHUNK_BITS: u32 = 14;

/// Where the entries are kept: one slot per branch path, in chunks allocated as they fill, never
/// moved (a slot number, once given to a path, names that path's entry until the cache is
/// cleared, so a branch can keep its children's slot numbers).
#[derive(Debug)]
struct Slots {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    next: AtomicU32,
}

impl Slots {
    fn new(chunks: usize) -> Self {
        Self { chunks: (0..chunks).map(|_| OnceLock::new()).collect(), next: AtomicU32::new(0) }
    }

    /// A new empty slot; `None` when every chunk is used.
    fn allocate(&self) -> Option<u32> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        let chunk = self.chunks.get((slot >> SLOT_CHUNK_BITS) as usize)?;
        chunk.get_or_init(|| (0..1usize << SLOT_CHUNK_BITS).map(|_| Slot(RwLock::new([None, None]))).collect());
        Some(slot)
    }

    fn get(&self, slot: u32) -> Option<&RwLock<Versions>> {
        self.chunks.get((slot >> SLOT_CHUNK_BITS) as usize)?.get()?.get((slot & ((1 << SLOT_CHUNK_BITS) - 1)) as usize).map(|slot| &slot.0)
    }

    /// Empties every slot given out so far and gives them out again from the first.
    fn reset(&self) {
        let next = self.next.swap(0, Ordering::Relaxed);
        for slot in (0..next).filter_map(|slot| self.get(slot)) {
            *write(slot) = [None, None];
        }
    }
}

/// The cache of bottom branches, shared by the threads of a root computation. Each path keeps
/// two versions: the one a computation started from (the committed one) and the one it built,
/// so that preparing a block does not push out what the next preparation on the same head
/// needs. Bounded by bytes: past the limit, new paths are not added.
///
/// A path's versions live in a slot of their own; the map gives a path's slot, and a cached
/// branch keeps the slots of its branch children, so that a walk down the changed paths reads
/// one slot per branch instead of searching the map (measured: the map search was a fifth of
/// an incremental root).
#[derive(Debug)]
pub(crate) struct BottomBranches {
    /// The slots of the branches below the roots, by trie and path.
    map: DashMap<(B256, Nibbles), u32, DefaultHashBuilder>,
    /// The slots of the tries' roots, by trie: a map of its own, small enough to stay in the CPU's
    /// caches, for the lookup every changed storage trie starts with.
    roots: DashMap<B256, u32, DefaultHashBuilder>,
    slots: Slots,
    bytes: AtomicUsize,
    limit: usize,
    hits: AtomicUsize,
    misses: AtomicUsize,
    by_path: AtomicUsize,
}

/// Reads a slot, whether or not a thread panicked holding it (a version is replaced whole).
fn read(slot: &RwLock<Versions>) -> std::sync::RwLockReadGuard<'_, Versions> {
    slot.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a slot, whether or not a thread panicked holding it.
fn write(slot: &RwLock<Versions>) -> std::sync::RwLockWriteGuard<'_, Versions> {
    slot.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BottomBranches {
    /// An empty cache holding at most about `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        // A slot is counted as at least an entry of no children: enough slots for the limit (up
        // to 2^28 of them).
        let chunks = (limit / entry_bytes(0)).div_ceil(1 << SLOT_CHUNK_BITS).clamp(1, 1 << 14);
        Self {
            map: DashMap::with_hasher_and_shard_amount(DefaultHashBuilder::default(), SHARDS),
            roots: DashMap::with_hasher_and_shard_amount(DefaultHashBuilder::default(), SHARDS),
            slots: Slots::new(chunks),
            bytes: AtomicUsize::new(0),
            limit,
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            by_path: AtomicUsize::new(0),
        }
    }

    /// The slot of the branch at `path` of `owner`'s trie, if it has one.
    pub(crate) fn slot(&self, owner: &B256, path: &Nibbles) -> Option<u32> {
        match path.is_empty() {
            true => self.roots.get(owner).map(|slot| *slot),
            false => self.map.get(&(*owner, *path)).map(|slot| *slot),
        }
    }

    /// The slot of the branch at `path` of `owner`'s trie, given one (empty) when it has none and
    /// the cache is not full.
    pub(crate) fn slot_or_new(&self, owner: &B256, path: &Nibbles) -> Option<u32> {
        self.slot(owner, path).or_else(|| self.path_slot(owner, path))
    }

    /// The slot of the branch at `path`, given one when it has none and the cache is not full,
    /// taking the map's entry (write lock) at once.
    fn path_slot(&self, owner: &B256, path: &Nibbles) -> Option<u32> {
        match path.is_empty() {
            true => self.new_slot(self.roots.entry(*owner)),
            false => self.new_slot(self.map.entry((*owner, *path))),
        }
    }

    /// The slot of a map entry, given one when it is vacant and the cache is not full.
    fn new_slot<K: Eq + std::hash::Hash>(&self, entry: dashmap::Entry<'_, K, u32>) -> Option<u32> {
        match entry {
            dashmap::Entry::Occupied(entry) => Some(*entry.get()),
            dashmap::Entry::Vacant(entry) => {
                if self.bytes.load(Ordering::Relaxed) + entry_bytes(0) > self.limit {
                    return None;
                }
                let slot = self.slots.allocate()?;
                self.bytes.fetch_add(entry_bytes(0), Ordering::Relaxed);
                entry.insert(slot);
                Some(slot)
            }
        }
    }

    /// The children of the branch at `path` of `owner`'s trie whose hash is `hash`, and its slot.
    pub(crate) fn get(&self, owner: &B256, path: &Nibbles, hash: &B256) -> Option<(Arc<[Child]>, u32)> {
        let slot = self.slot(owner, path)?;
        self.get_at(slot, hash).map(|children| (children, slot))
    }

    /// Starts loading the slot `slot` (see [`prefetch`]).
    pub(crate) fn prefetch_slot(&self, slot: u32) {
        if let Some(slot) = self.slots.get(slot) {
            prefetch(slot, std::mem::size_of::<Slot>() / 64);
        }
    }

    /// Starts loading the children of the branch kept at `slot` whose hash is `hash` (best after
    /// [`BottomBranches::prefetch_slot`]).
    pub(crate) fn prefetch_children(&self, slot: u32, hash: &B256) {
        let Some(slot) = self.slots.get(slot) else { return };
        let versions = read(slot);
        if let Some(version) = versions.iter().flatten().find(|v| v.hash == *hash) {
            // From the reference counts just before the children (a clone changes them).
            prefetch(version.children.as_ptr().cast::<u8>().wrapping_sub(16), (std::mem::size_of_val(&*version.children) + 16).div_ceil(64));
        }
    }

    /// The children of the branch kept at `slot` whose hash is `hash`.
    pub(crate) fn get_at(&self, slot: u32, hash: &B256) -> Option<Arc<[Child]>> {
        let versions = read(self.slots.get(slot)?);
        versions.iter().flatten().find(|v| v.hash == *hash).map(|v| Arc::clone(&v.children))
    }

    /// Adds to the lookup counts (kept by each root computation and added once at its end, so
    /// that threads do not share a counter on every lookup).
    /// `by_path`: lookups that searched the map (their parent did not know the slot).
    pub(crate) fn count(&self, hits: usize, misses: usize, by_path: usize) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
        self.by_path.fetch_add(by_path, Ordering::Relaxed);
    }

    /// Lookups that searched the map since the start (as [`BottomBranches::count`]ed).
    pub(crate) fn path_lookups(&self) -> usize {
        self.by_path.load(Ordering::Relaxed)
    }

    /// Lookups that found their branch, and lookups that did not, since the start (as
    /// [`BottomBranches::count`]ed).
    pub(crate) fn hits_and_misses(&self) -> (usize, usize) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Records the branch at `path` with hash `hash` and these children, keeping the version
    /// hashed `keep` (the one the computation started from) if there is one. Returns its slot
    /// (`None`: not kept, the cache is full).
    pub(crate) fn insert(&self, owner: &B256, path: &Nibbles, keep: Option<&B256>, hash: B256, children: Vec<Child>) -> Option<u32> {
        let slot = match self.slot(owner, path) {
            Some(slot) => slot,
            None if self.bytes.load(Ordering::Relaxed) + entry_bytes(children.len()) > self.limit => return None,
            None => self.path_slot(owner, path)?,
        };
        self.insert_at(slot, keep, hash, children);
        Some(slot)
    }

    /// [`BottomBranches::insert`] into the slot of the branch's path.
    pub(crate) fn insert_at(&self, slot: u32, keep: Option<&B256>, hash: B256, children: Vec<Child>) {
        let Some(slot) = self.slots.get(slot) else { return };
        let added = entry_bytes(children.len());
        let mut versions = write(slot);
        if versions.iter().flatten().any(|v| v.hash == hash) {
            return;
        }
        // Replace the version that is not the one to keep (an empty slot first).
        let victim = match &*versions {
            [None, _] => 0,
            [_, None] => 1,
            [Some(first), _] if Some(&first.hash) == keep => 1,
            _ => 0,
        };
        let old = versions[victim].replace(Version { hash, children: children.into() });
        drop(versions);
        if let Some(old) = old {
            self.bytes.fetch_sub(entry_bytes(old.children.len()), Ordering::Relaxed);
        } else {
            // An empty slot was counted as one of no children.
            self.bytes.fetch_sub(entry_bytes(0).min(added), Ordering::Relaxed);
        }
        self.bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// Approximate bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Number of branch paths held.
    pub(crate) fn len(&self) -> usize {
        self.map.len() + self.roots.len()
    }

    /// Forgets every entry, and the paths of the slots. (A computation running meanwhile may
    /// still hold a branch naming a slot that another path gets: a lookup there matches a hash,
    /// which commits to the path's keys, so it finds nothing of the other path's.)
    pub(crate) fn clear(&self) {
        self.map.clear();
        self.roots.clear();
        self.slots.reset();
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// Whether the byte limit is reached (new paths are no longer added).
    pub(crate) fn is_full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= self.limit
    }
}

/// The hash of the leaf node of `key` at depth `depth` (its path below the branch is
/// `key[depth..]`) with this value; `None` when the node is shorter than 32 bytes (inlined in
/// its parent instead of hashed, which bottom branches do not handle).
pub(crate) fn leaf_hash(key: &B256, depth: usize, value: &[u8], buf: &mut Vec<u8>) -> Option<B256> {
    let suffix = Nibbles::unpack(key).slice(depth..);
    buf.clear();
    LeafNodeRef::new(&suffix, value).rlp(buf).as_hash()
}

/// Whether `leaves` (sorted by key) under a branch at a path of `depth` nibbles make a bottom
/// branch: at least two of them, each behind its own nibble.
pub(crate) fn is_bottom_branch<T>(leaves: &[(B256, T)], depth: usize) -> bool {
    leaves.len() >= 2 && leaves.windows(2).all(|w| nibble(&w[0].0, depth) != nibble(&w[1].0, depth))
}

/// The hash of a branch node with these children (in nibble order, each with a hashed node);
/// `None` when its RLP is shorter than 32 bytes.
pub(crate) fn branch_hash(children: &[Child], buf: &mut Vec<u8>) -> Option<B256> {
    let mut mask = TrieMask::default();
    let mut stack: [RlpNode; 16] = Default::default();
    for (slot, child) in stack.iter_mut().zip(children) {
        mask.set_bit(child.nibble);
        *slot = RlpNode::word_rlp(&child.hash);
    }
    buf.clear();
    BranchNodeRef::new(&stack[..children.len().min(16)], mask).rlp(buf).as_hash()
}

/// A bottom branch at a path of `depth` nibbles built from all its leaves (key, leaf value):
/// its hash and children; `None` when they do not make one.
pub(crate) fn build_bottom(leaves: &[(B256, Vec<u8>)], depth: usize, buf: &mut Vec<u8>) -> Option<(B256, Vec<Child>)> {
    if !is_bottom_branch(leaves, depth) {
        return None;
    }
    let hashed: Vec<BottomLeaf> = leaves.iter().map(|(key, value)| leaf_hash(key, depth + 1, value, buf).map(|h| (*key, h))).collect::<Option<_>>()?;
    let children = leaf_children(&hashed, depth);
    branch_hash(&children, buf).map(|new| (new, children))
}

/// The child at `path` (a branch's child slot) holding `leaves` (sorted, at least one): a single
/// leaf, a bottom branch (with its cache entry: hash and children) or another unstored subtree;
/// `None` when its nodes are not all hashed or it holds a node alloy-trie would store.
#[allow(clippy::type_complexity)]
pub(crate) fn classify(path: &Nibbles, leaves: &[(B256, Vec<u8>)], buf: &mut Vec<u8>) -> Option<(Child, Option<(B256, Vec<Child>)>)> {
    let depth = path.len();
    let nibble = path.last()?;
    match leaves {
        [(key, value)] => leaf_hash(key, depth, value, buf).map(|hash| (Child::leaf(nibble, *key, hash), None)),
        _ => match build_bottom(leaves, depth, buf) {
            Some((new, entry)) => Some((Child::bottom(nibble, new), Some((new, entry)))),
            None => other_child(nibble, leaves, depth, buf).map(|child| (child, None)),
        },
    }
}

/// Nibble `index` of a 32-byte key.
pub(crate) fn nibble(key: &B256, index: usize) -> u8 {
    let byte = key[index / 2];
    if index.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 0x0f
    }
}

/// keccak256 of a leaf value, for tests comparing against a plain implementation.
#[cfg(test)]
pub(crate) fn plain_leaf_hash(key: &B256, depth: usize, value: &[u8]) -> B256 {
    let mut rlp = Vec::new();
    let suffix = Nibbles::unpack(key).slice(depth..);
    LeafNodeRef::new(&suffix, value).rlp(&mut rlp);
    alloy_primitives::keccak256(&rlp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_keep_the_base_and_the_newest() {
        let cache = BottomBranches::new(1 << 20);
        let owner = B256::repeat_byte(1);
        let path = Nibbles::from_nibbles([1, 2]);
        let (a, b, c) = (B256::repeat_byte(0xa), B256::repeat_byte(0xb), B256::repeat_byte(0xc));
        let child = |hash: B256| vec![Child::leaf(1, hash, hash)];
        cache.insert(&owner, &path, None, a, child(a));
        cache.insert(&owner, &path, Some(&a), b, child(b));
        cache.insert(&owner, &path, Some(&a), c, child(c));
        assert!(cache.get(&owner, &path, &a).is_some(), "the base version is kept");
        assert!(cache.get(&owner, &path, &b).is_none(), "the other one is replaced");
        assert_eq!(cache.get(&owner, &path, &c).unwrap().0[0], child(c)[0]);
        assert!(cache.get(&B256::repeat_byte(2), &path, &a).is_none(), "another trie's entry is not this one");
    }

    #[test]
    fn a_slot_names_one_path_until_the_cache_is_cleared() {
        let cache = BottomBranches::new(1 << 20);
        let owner = B256::repeat_byte(1);
        let (a, b) = (B256::repeat_byte(0xa), B256::repeat_byte(0xb));
        let child = |hash: B256| vec![Child::leaf(1, hash, hash)];
        let first = cache.insert(&owner, &Nibbles::from_nibbles([1]), None, a, child(a)).unwrap();
        let second = cache.insert(&owner, &Nibbles::from_nibbles([2]), None, b, child(b)).unwrap();
        assert_ne!(first, second);
        assert_eq!(cache.slot_or_new(&owner, &Nibbles::from_nibbles([1])), Some(first));
        assert_eq!(cache.get_at(first, &a).unwrap()[0], child(a)[0]);
        assert!(cache.get_at(first, &b).is_none(), "a slot holds its own path's versions only");
        assert_eq!(cache.get(&owner, &Nibbles::from_nibbles([2]), &b).unwrap().1, second);
        cache.clear();
        assert!(cache.get_at(first, &a).is_none(), "cleared");
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        let again = cache.insert(&owner, &Nibbles::from_nibbles([2]), None, b, child(b)).unwrap();
        assert_eq!(again, first, "slots are given out again after a clear");
        assert!(cache.get_at(again, &a).is_none(), "the slot now holds the other path's versions");
        assert!(cache.get_at(again, &b).is_some());
    }

    #[test]
    fn the_byte_limit_stops_new_paths() {
        let cache = BottomBranches::new(entry_bytes(2) + 10);
        let owner = B256::ZERO;
        let children = vec![Child::bottom(0, B256::ZERO); 2];
        cache.insert(&owner, &Nibbles::from_nibbles([1]), None, B256::repeat_byte(1), children.clone());
        cache.insert(&owner, &Nibbles::from_nibbles([2]), None, B256::repeat_byte(2), children);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.bytes(), entry_bytes(2));
    }

    #[test]
    fn leaf_hash_is_the_keccak_of_the_leaf_node() {
        let key = B256::repeat_byte(0x5a);
        let value = [0x42u8; 40];
        let mut buf = Vec::new();
        assert_eq!(leaf_hash(&key, 4, &value, &mut buf), Some(plain_leaf_hash(&key, 4, &value)));
        // Deep in the trie with a one-byte value the node is inlined, not hashed.
        assert_eq!(leaf_hash(&key, 63, &[0x01], &mut buf), None);
    }

    #[test]
    fn bottom_branch_needs_two_leaves_on_distinct_nibbles() {
        let key = |first: u8| B256::from([first; 32]);
        assert!(is_bottom_branch(&[(key(0x12), ()), (key(0x13), ())], 1));
        assert!(!is_bottom_branch(&[(key(0x12), ()), (key(0x12), ())], 1));
        assert!(!is_bottom_branch(&[(key(0x12), ())], 1));
    }
}
