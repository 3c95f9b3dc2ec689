//! The multi-version memory: for every location (an account's basic fields, a storage slot) the
//! values written by each transaction of the block, keyed by transaction index.
//!
//! A reader at transaction `t` sees the highest write below `t`. An ESTIMATE entry (left by an
//! aborted incarnation, or seeded where a write is known to come) makes the reader wait for that
//! transaction. Lazy entries (credits and debits) are commutative deltas: a reader walks past
//! them, down to the first absolute value (or the pre-block state), and applies them in order.

use super::{Incarnation, TxIdx};
use alloy_primitives::{Address, B256, U256};
use dashmap::DashMap;
use parking_lot::Mutex;
use revm::bytecode::Bytecode;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// A location in the state that transactions read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// An account's balance, nonce and code hash (and its existence).
    Account(Address),
    /// One storage slot.
    Storage(Address, U256),
}

/// An account's basic fields as the multi-version memory holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountValue {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code hash; the code itself lives in [`MvMemory::codes`] or the pre-block state.
    pub code_hash: B256,
}

/// What a lazy sender owes, and the conditions sequential execution would have checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    /// Value plus the fee actually charged.
    pub amount: U256,
    /// Balance the sender needs before the transaction (gas limit x max fee + value + blob fee).
    pub required: U256,
    /// The transaction's nonce: the sender's nonce must equal it.
    pub nonce: u64,
}

/// A value written by a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The account's absolute fields; `None` when it does not exist afterwards.
    Account(Option<AccountValue>),
    /// A storage slot's absolute value.
    Storage(U256),
    /// Lazy: add `amount` to the balance and touch the account (EIP-161). `no_code` marks a plain
    /// transfer's recipient, which must have no code when the delta is applied.
    Credit {
        /// Wei added.
        amount: U256,
        /// The account must have no code at this point.
        no_code: bool,
    },
    /// Lazy: a plain transfer's sender pays and bumps its nonce.
    Debit(Debit),
}

impl Value {
    /// Whether the value replaces what was there (as opposed to a delta on top of it).
    pub fn is_absolute(&self) -> bool {
        matches!(self, Value::Account(_) | Value::Storage(_))
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Estimate,
    Data(Incarnation, Value),
}

/// Where one step of a read came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The pre-block state.
    Base,
    /// The write of this transaction's incarnation.
    Version(TxIdx, Incarnation),
}

/// The chain of entries a read went through, from the nearest down to the absolute one.
pub type Origins = SmallVec<[Origin; 1]>;

/// What a read found below the reader.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The entries passed, nearest first; ends with [`Origin::Base`] when no absolute write exists.
    pub origins: Origins,
    /// The absolute value found, or `None` for the pre-block state.
    pub absolute: Option<Value>,
    /// Deltas above the absolute value, in block order (lowest transaction first).
    pub deltas: SmallVec<[Value; 1]>,
}

/// A transaction's reads, checked again at validation.
pub type ReadSet = Vec<(Location, Origins)>;

/// The multi-version memory of one block.
pub struct MvMemory {
    data: DashMap<Location, BTreeMap<TxIdx, Entry>, FxBuildHasher>,
    last_writes: Vec<Mutex<Vec<Location>>>,
    last_reads: Vec<Mutex<ReadSet>>,
    /// Code deployed by transactions of this block, by hash.
    pub codes: DashMap<B256, Bytecode, FxBuildHasher>,
}

impl MvMemory {
    /// A memory for `block_size` transactions, with ESTIMATE markers seeded at `seeded` for every
    /// transaction (the beneficiary: every transaction pays it, so a reader of its balance must
    /// wait for all lower transactions instead of reading a partial sum).
    pub fn new(block_size: usize, seeded: &[Location]) -> Self {
        let data = DashMap::with_hasher(FxBuildHasher);
        for location in seeded {
            data.insert(*location, (0..block_size).map(|tx| (tx, Entry::Estimate)).collect());
        }
        Self {
            data,
            last_writes: (0..block_size).map(|_| Mutex::new(seeded.to_vec())).collect(),
            last_reads: (0..block_size).map(|_| Mutex::new(Vec::new())).collect(),
            codes: DashMap::with_hasher(FxBuildHasher),
        }
    }

    /// Whether any transaction wrote (or is expected to write) `location`.
    pub fn has_writes(&self, location: &Location) -> bool {
        self.data.contains_key(location)
    }

    /// Reads `location` as transaction `tx` sees it. `Err(blocking)` when an ESTIMATE of
    /// transaction `blocking` is in the way.
    pub fn read(&self, location: &Location, tx: TxIdx) -> Result<Resolved, TxIdx> {
        let mut resolved = Resolved::default();
        let Some(versions) = self.data.get(location) else {
            resolved.origins.push(Origin::Base);
            return Ok(resolved);
        };
        for (&writer, entry) in versions.range(..tx).rev() {
            match entry {
                Entry::Estimate => return Err(writer),
                Entry::Data(incarnation, value) => {
                    resolved.origins.push(Origin::Version(writer, *incarnation));
                    if value.is_absolute() {
                        resolved.absolute = Some(value.clone());
                        resolved.deltas.reverse();
                        return Ok(resolved);
                    }
                    resolved.deltas.push(value.clone());
                }
            }
        }
        resolved.origins.push(Origin::Base);
        resolved.deltas.reverse();
        Ok(resolved)
    }

    /// Records incarnation `incarnation` of `tx`: its reads and its writes. Entries of the
    /// previous incarnation at locations not written again are removed. Returns whether a
    /// location was written that the previous incarnation did not write (then higher
    /// transactions must be validated again).
    pub fn record(&self, tx: TxIdx, incarnation: Incarnation, reads: ReadSet, writes: Vec<(Location, Value)>) -> bool {
        let locations: Vec<Location> = writes.iter().map(|(location, _)| *location).collect();
        for (location, value) in writes {
            self.data.entry(location).or_default().insert(tx, Entry::Data(incarnation, value));
        }
        let previous = std::mem::replace(&mut *self.last_writes[tx].lock(), locations.clone());
        let wrote_new;
        if previous.len() <= 8 && locations.len() <= 8 {
            for location in &previous {
                if !locations.contains(location) {
                    self.remove_entry(location, tx);
                }
            }
            wrote_new = locations.iter().any(|l| !previous.contains(l));
        } else {
            let new_set: rustc_hash::FxHashSet<&Location> = locations.iter().collect();
            let old_set: rustc_hash::FxHashSet<&Location> = previous.iter().collect();
            for location in &previous {
                if !new_set.contains(location) {
                    self.remove_entry(location, tx);
                }
            }
            wrote_new = locations.iter().any(|l| !old_set.contains(l));
        }
        *self.last_reads[tx].lock() = reads;
        wrote_new
    }

    fn remove_entry(&self, location: &Location, tx: TxIdx) {
        if let Some(mut versions) = self.data.get_mut(location) {
            versions.remove(&tx);
        }
    }

    /// Replaces the last writes of `tx` by ESTIMATE markers (its incarnation was aborted).
    pub fn convert_writes_to_estimates(&self, tx: TxIdx) {
        for location in self.last_writes[tx].lock().iter() {
            if let Some(mut versions) = self.data.get_mut(location) {
                versions.insert(tx, Entry::Estimate);
            }
        }
    }

    /// Whether every read of the last incarnation of `tx` would still return the same entries.
    pub fn validate_reads(&self, tx: TxIdx) -> bool {
        let reads = self.last_reads[tx].lock();
        reads.iter().all(|(location, origins)| match self.read(location, tx) {
            Ok(resolved) => resolved.origins == *origins,
            Err(_) => false,
        })
    }

    /// Consumes the memory into, for each location, its entries below `cut` in block order, and
    /// the code deployed in the block.
    /// Every entry must be data by now (the scheduler has finished).
    pub fn into_parts(self, cut: TxIdx) -> (Vec<(Location, Vec<(TxIdx, Value)>)>, DashMap<B256, Bytecode, FxBuildHasher>) {
        let writes = self.data.into_iter().filter_map(move |(location, versions)| {
            let entries: Vec<(TxIdx, Value)> = versions
                .into_iter()
                .filter(|(tx, _)| *tx < cut)
                .filter_map(|(tx, entry)| match entry {
                    Entry::Data(_, value) => Some((tx, value)),
                    Entry::Estimate => None,
                })
                .collect();
            (!entries.is_empty()).then_some((location, entries))
        });
        (writes.collect(), self.codes)
    }
}
