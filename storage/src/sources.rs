//! [`TrieSource`]s over RocksDB: stored nodes and leaves, with the leaves a pending update
//! changes laid over the stored ones.

use crate::{
    codec::{decode_node, decode_value, storage_leaf_rlp, StoredAccount},
    error::Result,
    tables,
    trie::TrieSource,
};
use alloy_primitives::{B256, U256};
use alloy_trie::{BranchNodeCompact, Nibbles};
use rocksdb::{DBRawIterator, DB};
use std::{borrow::Cow, collections::BTreeMap};

/// A RocksDB iterator that remembers the bound it was last positioned at, so that reads in
/// ascending key order (which is how a trie walk reads) step forward instead of seeking again:
/// after a range is read, the iterator already sits on the first key of the next one.
pub(crate) struct Cursor<'a> {
    iter: DBRawIterator<'a>,
    /// The iterator is at the first key >= this bound (or at the end).
    bound: Option<Vec<u8>>,
    /// Running average of the distance between consecutive keys stepped over (first 16 bytes
    /// of the key as a number): how far a few steps reach.
    spacing: u128,
}

/// The first 16 bytes of a key as a big-endian number (shorter keys padded with zeros).
fn key_prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

/// Forward steps tried before a real seek (a step is much cheaper than a seek).
const STEPS: usize = 4;

impl<'a> Cursor<'a> {
    pub(crate) fn new(iter: DBRawIterator<'a>) -> Self {
        Self { iter, bound: None, spacing: u128::MAX }
    }

    /// Whether `target` lies further ahead of the current key than [`STEPS`] steps reach, by
    /// the spacing of the keys stepped over so far: then stepping is wasted and a seek goes
    /// straight there. (Only a hint: a wrong guess costs time, never a wrong position.)
    fn far(&self, target: &[u8]) -> bool {
        match self.iter.key() {
            Some(key) => key_prefix(target).saturating_sub(key_prefix(key)) > self.spacing.saturating_mul(STEPS as u128),
            None => false,
        }
    }

    /// Positions at the first key >= `target`.
    pub(crate) fn seek(&mut self, target: &[u8]) {
        if self.bound.as_deref().is_some_and(|bound| bound <= target) && !self.far(target) {
            for _ in 0..=STEPS {
                match self.iter.key() {
                    // At or past the target: the first key >= bound is also the first >= target.
                    Some(key) if key >= target => return,
                    None if self.iter.status().is_ok() => return,
                    Some(_) => self.next(),
                    None => break,
                }
            }
        }
        self.iter.seek(target);
        let mut bound = self.bound.take().unwrap_or_default();
        bound.clear();
        bound.extend_from_slice(target);
        self.bound = Some(bound);
    }

    /// Moves to the next key (the position stays the first key >= the old bound's successor).
    pub(crate) fn next(&mut self) {
        if let Some(key) = self.iter.key() {
            let mut bound = self.bound.take().unwrap_or_default();
            bound.clear();
            bound.extend_from_slice(key);
            bound.push(0);
            self.iter.next();
            if let Some(next) = self.iter.key() {
                let gap = key_prefix(next).saturating_sub(key_prefix(&bound));
                // An average over the last few steps; the first step sets it.
                self.spacing = if self.spacing == u128::MAX { gap } else { self.spacing - self.spacing / 8 + gap / 8 };
            }
            self.bound = Some(bound);
        }
    }

    pub(crate) fn item(&self) -> Option<(&[u8], &[u8])> {
        self.iter.item()
    }

    pub(crate) fn status(&self) -> Result<(), rocksdb::Error> {
        self.iter.status()
    }
}

/// Stored nodes of one trie: the account trie (empty key prefix) or one account's storage trie
/// (prefix = hashed address).
pub(crate) struct NodeReader<'a> {
    iter: Cursor<'a>,
    prefix: Vec<u8>,
    key: Vec<u8>,
    /// A wiped storage trie: every stored node is gone.
    empty: bool,
}

impl<'a> NodeReader<'a> {
    pub(crate) fn new(db: &'a DB, table: &str, prefix: &[u8], empty: bool) -> Result<Self> {
        let cf = crate::db::cf(db, table)?;
        Ok(Self { iter: Cursor::new(db.raw_iterator_cf(cf)), prefix: prefix.to_vec(), key: Vec::with_capacity(prefix.len() + 64), empty })
    }

    fn seek(&mut self, path: &Nibbles) -> Result<Option<(Vec<u8>, BranchNodeCompact)>> {
        if self.empty {
            return Ok(None);
        }
        self.key.clear();
        self.key.extend_from_slice(&self.prefix);
        self.key.extend(path.to_vec());
        let key = std::mem::take(&mut self.key);
        self.iter.seek(&key);
        self.key = key;
        match self.iter.item() {
            Some((key, value)) if key.starts_with(&self.key) => Ok(Some((key[self.prefix.len()..].to_vec(), decode_node(value)?))),
            _ => {
                self.iter.status()?;
                Ok(None)
            }
        }
    }

    fn node(&mut self, path: &Nibbles) -> Result<Option<BranchNodeCompact>> {
        let wanted = path.len();
        Ok(self.seek(path)?.filter(|(key, _)| key.len() == wanted).map(|(_, node)| node))
    }

    fn first_under(&mut self, prefix: &Nibbles) -> Result<Option<(Nibbles, BranchNodeCompact)>> {
        match self.seek(prefix)? {
            Some((key, node)) => {
                if key.len() > 64 || key.iter().any(|n| *n > 0x0f) {
                    return Err(crate::StorageError::corrupt("trie node key is not a nibble path"));
                }
                Ok(Some((Nibbles::from_nibbles_unchecked(&key), node)))
            }
            None => Ok(None),
        }
    }
}

/// The account trie: stored nodes, stored accounts, and the accounts an update changes
/// (`None` = deleted) as leaf RLP.
pub(crate) struct AccountTrieSource<'a> {
    pub nodes: NodeReader<'a>,
    pub leaves: Cursor<'a>,
    pub overlay: &'a BTreeMap<B256, Option<Vec<u8>>>,
}

impl TrieSource for AccountTrieSource<'_> {
    fn node(&mut self, path: &Nibbles) -> Result<Option<BranchNodeCompact>> {
        self.nodes.node(path)
    }

    fn first_node_under(&mut self, prefix: &Nibbles) -> Result<Option<(Nibbles, BranchNodeCompact)>> {
        self.nodes.first_under(prefix)
    }

    fn leaves(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, &[u8])) -> Result<()> {
        self.leaves.seek(lo.as_slice());
        let stored_key = |key: &[u8]| match key.len() {
            32 => Ok((key <= hi.as_slice()).then(|| B256::from_slice(key))),
            _ => Err(crate::StorageError::corrupt("hashed account key length")),
        };
        let leaf = |value: &[u8]| Ok(StoredAccount::decode(value)?.leaf_rlp());
        let pending = self.overlay.range(*lo..=*hi).map(|(key, value)| (*key, value.as_deref().map(Cow::Borrowed)));
        merge_leaves(&mut self.leaves, &stored_key, &leaf, pending, f)
    }

    fn pending(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, Option<&[u8]>)) {
        for (key, value) in self.overlay.range(*lo..=*hi) {
            f(key, value.as_deref());
        }
    }
}

/// One account's storage trie: stored nodes and slots (none when `wiped`), and the slots an
/// update changes (zero = deleted).
pub(crate) struct StorageTrieSource<'a, 'b> {
    pub nodes: &'b mut NodeReader<'a>,
    pub leaves: &'b mut Cursor<'a>,
    pub hashed_address: B256,
    pub wiped: bool,
    pub overlay: &'b BTreeMap<B256, U256>,
}

impl TrieSource for StorageTrieSource<'_, '_> {
    fn node(&mut self, path: &Nibbles) -> Result<Option<BranchNodeCompact>> {
        self.nodes.node(path)
    }

    fn first_node_under(&mut self, prefix: &Nibbles) -> Result<Option<(Nibbles, BranchNodeCompact)>> {
        self.nodes.first_under(prefix)
    }

    fn leaves(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, &[u8])) -> Result<()> {
        let start = tables::hashed_storage_key(&self.hashed_address, lo);
        let end = tables::hashed_storage_key(&self.hashed_address, hi);
        let wiped = self.wiped;
        if !wiped {
            self.leaves.seek(&start);
        }
        // A wiped trie has no stored slots: the cursor (shared between accounts) is ignored.
        let stored_key = |key: &[u8]| {
            Ok((!wiped && key.len() == 64 && key >= start.as_slice() && key <= end.as_slice()).then(|| B256::from_slice(&key[32..])))
        };
        let leaf = |value: &[u8]| Ok(storage_leaf_rlp(&decode_value(value)?));
        let pending = self.overlay.range(*lo..=*hi).map(|(key, value)| (*key, (!value.is_zero()).then(|| Cow::Owned(storage_leaf_rlp(value)))));
        merge_leaves(self.leaves, &stored_key, &leaf, pending, f)
    }

    fn pending(&mut self, lo: &B256, hi: &B256, f: &mut dyn FnMut(&B256, Option<&[u8]>)) {
        for (key, value) in self.overlay.range(*lo..=*hi) {
            match value.is_zero() {
                true => f(key, None),
                false => f(key, Some(&storage_leaf_rlp(value))),
            }
        }
    }
}

/// Calls `f` with every leaf in key order: the stored ones under the cursor (while `stored_key`
/// maps the cursor's key into the range) merged with the pending ones, which win on equal keys
/// (`None`: deleted). `leaf` turns a stored value into the leaf's RLP.
fn merge_leaves<'p>(
    cursor: &mut Cursor<'_>,
    stored_key: &dyn Fn(&[u8]) -> Result<Option<B256>>,
    leaf: &dyn Fn(&[u8]) -> Result<Vec<u8>>,
    pending: impl Iterator<Item = (B256, Option<Cow<'p, [u8]>>)>,
    f: &mut dyn FnMut(&B256, &[u8]),
) -> Result<()> {
    let mut pending = pending.peekable();
    loop {
        let stored = match cursor.item() {
            Some((key, _)) => stored_key(key)?,
            None => None,
        };
        let take_pending = match (stored, pending.peek()) {
            (None, None) => break,
            (Some(key), Some((next, _))) => *next <= key,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if take_pending {
            let (key, value) = pending.next().expect("peeked");
            if let Some(value) = value {
                f(&key, &value);
            }
            if stored == Some(key) {
                cursor.next();
            }
        } else if let (Some(key), Some((_, value))) = (stored, cursor.item()) {
            f(&key, &leaf(value)?);
            cursor.next();
        }
    }
    cursor.status()?;
    Ok(())
}

/// Reader of the account trie.
pub(crate) fn account_source<'a>(db: &'a DB, overlay: &'a BTreeMap<B256, Option<Vec<u8>>>) -> Result<AccountTrieSource<'a>> {
    Ok(AccountTrieSource {
        nodes: NodeReader::new(db, tables::ACCOUNT_TRIE, &[], false)?,
        leaves: Cursor::new(db.raw_iterator_cf(crate::db::cf(db, tables::HASHED_ACCOUNTS)?)),
        overlay,
    })
}

/// Iterators over the storage tries and slots, reused from one account to the next (creating
/// a RocksDB iterator costs more than the few reads a small storage trie needs).
pub(crate) struct StorageReaders<'a> {
    nodes: NodeReader<'a>,
    leaves: Cursor<'a>,
}

impl<'a> StorageReaders<'a> {
    pub(crate) fn new(db: &'a DB) -> Result<Self> {
        Ok(Self { nodes: NodeReader::new(db, tables::STORAGE_TRIE, &[], false)?, leaves: Cursor::new(db.raw_iterator_cf(crate::db::cf(db, tables::HASHED_STORAGE)?)) })
    }

    /// The storage trie of one account (`wiped`: as if it had no storage).
    pub(crate) fn source<'b>(&'b mut self, hashed_address: B256, wiped: bool, overlay: &'b BTreeMap<B256, U256>) -> StorageTrieSource<'a, 'b> {
        self.nodes.prefix.clear();
        self.nodes.prefix.extend_from_slice(hashed_address.as_slice());
        self.nodes.empty = wiped;
        StorageTrieSource { nodes: &mut self.nodes, leaves: &mut self.leaves, hashed_address, wiped, overlay }
    }
}
