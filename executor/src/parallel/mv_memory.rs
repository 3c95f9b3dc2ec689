//! The multi-version memory: for every location (an account's basic fields, a storage slot) the
//! values written by each transaction of the block, keyed by transaction index.
//!
//! A reader at transaction `t` sees the highest write below `t`. An ESTIMATE entry (left by an
//! aborted incarnation, or seeded where a write is known to come) makes the reader wait for that
//! transaction. Lazy entries (credits and debits) are commutative deltas: a reader walks past
//! them, down to the first absolute value (or the pre-block state), and applies them in order.
//! A storage wipe (an account destroyed by pre-Cancun SELFDESTRUCT) is one more location per
//! account: a slot read takes the higher of the slot's last write and the account's last wipe.
//!
//! Storage slots can hold deltas too: a lazy ERC-20 credit ([`Value::StorageAdd`]) adds to a
//! token balance without reading it. The crediting transaction only observed whether the balance
//! was zero (its gas depends on nothing else), which [`MvMemory::read_zeroness`] answers without
//! summing the deltas below it: the first non-zero credit below the reader settles it.

use super::{Incarnation, TxIdx};
use alloy_primitives::{Address, B256, U256};
use dashmap::DashMap;
use parking_lot::Mutex;
use revm::bytecode::Bytecode;
use rustc_hash::FxBuildHasher;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A location in the state that transactions read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// An account's balance, nonce and code hash (and its existence).
    Account(Address),
    /// One storage slot.
    Storage(Address, U256),
    /// The wipe of an account's whole storage by a transaction that destroyed the account
    /// (pre-Cancun SELFDESTRUCT of an account that existed before it). Its value is always
    /// `Value::Storage(0)`: a slot of the account reads zero when the wipe is the highest write
    /// below the reader, above any write to the slot itself.
    StorageWipe(Address),
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

impl From<&AccountValue> for crate::overlay::Fields {
    fn from(value: &AccountValue) -> Self {
        Self { balance: value.balance, nonce: value.nonce, code_hash: value.code_hash }
    }
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
    /// A balance read exactly and changed by a transaction that held it first ([`super::held`]):
    /// `before` is the balance it read, `after` the one it leaves; nonce and code stay. Applying
    /// it checks the balance is still `before`, which validation guarantees for the transaction's
    /// last incarnation. Readers that hold the balance walk past it as past any delta.
    Rebalance {
        /// The balance the transaction read.
        before: U256,
        /// The balance it leaves.
        after: U256,
    },
    /// Lazy: add `amount` to a storage slot (a recognised ERC-20 token's balance of a transfer's
    /// recipient). Sequential execution would have reverted on overflow and charged its gas by
    /// whether the slot was zero before: applying the delta checks both.
    StorageAdd {
        /// Added to the slot.
        amount: U256,
        /// Whether the slot was non-zero before, as the transaction saw it.
        was_nonzero: bool,
    },
}

impl Value {
    /// Whether the value replaces what was there (as opposed to a delta on top of it).
    pub fn is_absolute(&self) -> bool {
        matches!(self, Value::Account(_) | Value::Storage(_))
    }
}

/// What a zero-or-not read of a storage slot found below the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zeroness {
    /// No write below: the pre-block value decides.
    Base,
    /// An absolute value (or a wipe) below the reader decides.
    Value(U256),
    /// A non-zero credit lies above the nearest absolute value: the slot is not zero (an overflow
    /// that would make it zero fails the credit's own check in block order).
    NonZero,
}

impl Zeroness {
    /// The observation validation compares: where an absolute value decided, only whether it
    /// was zero matters.
    pub fn observed(self) -> Zeroness {
        match self {
            Zeroness::Value(value) if !value.is_zero() => Zeroness::NonZero,
            Zeroness::Value(_) => Zeroness::Value(U256::ZERO),
            other => other,
        }
    }
}

/// What one read of a transaction observed, checked again at validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The exact entries the read went through.
    Versions(Origins),
    /// Only whether a storage slot was zero (a lazy ERC-20 credit's recipient balance).
    Zeroness(Zeroness),
    /// Only the nearest absolute entry of an account read (its nonce and code), not the deltas
    /// above it: an account whose balance the transaction held (see [`super::held`]).
    Absolute(Origin),
}

#[derive(Debug, Clone)]
enum Entry {
    /// An aborted incarnation's write, or one expected; `true` when the aborted write was a
    /// delta (a read of the absolute entry only walks past it: see [`MvMemory::read_absolute`]).
    Estimate(bool),
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

impl Resolved {
    /// Takes in the next entry below the reader (walking down). `Err` on an ESTIMATE; `Ok(true)`
    /// once an absolute value ends the walk.
    fn step(&mut self, writer: TxIdx, entry: &Entry) -> Result<bool, TxIdx> {
        let Entry::Data(incarnation, value) = entry else { return Err(writer) };
        self.origins.push(Origin::Version(writer, *incarnation));
        if value.is_absolute() {
            self.absolute = Some(value.clone());
            self.deltas.reverse();
            return Ok(true);
        }
        self.deltas.push(value.clone());
        Ok(false)
    }
}

/// A transaction's reads, checked again at validation.
pub type ReadSet = Vec<(Location, Observed)>;

/// The versions of one location, sorted by transaction index. Most locations have one or two
/// writers, so a small sorted vector beats a tree (no node allocation per location).
type Versions = SmallVec<[(TxIdx, Entry); 1]>;

fn upsert(versions: &mut Versions, tx: TxIdx, entry: Entry) {
    match versions.binary_search_by_key(&tx, |(t, _)| *t) {
        Ok(i) => versions[i].1 = entry,
        Err(i) => versions.insert(i, (tx, entry)),
    }
}

/// A transaction's writes: location and value, in the order it made them.
pub type WriteSet = Vec<(Location, Value)>;

/// The multi-version memory of one block.
///
/// The beneficiary's account, which every transaction writes (its fee), lives in a dense array
/// with one slot per transaction instead of the shared map: no lock is contended and no tree
/// grows with the block.
pub struct MvMemory {
    /// Every written location's versions, each behind its own lock. The map's reads take no
    /// lock and write no shared memory (a read-write lock per shard did, and the two workers'
    /// reads kept taking each other's lock words away: docs/benchmarks.md, "Lock-free location
    /// lookups"); only transactions touching the same location meet on its lock.
    data: papaya::HashMap<Location, Mutex<Versions>, FxBuildHasher>,
    /// Whether any transaction wrote a [`Location::StorageWipe`]; until one does, storage reads
    /// skip looking for wipes. A reader that skipped the lookup before a wipe was recorded below
    /// it fails validation afterwards, which always looks.
    any_wipes: AtomicBool,
    beneficiary: Location,
    beneficiary_slots: Vec<Mutex<Option<Entry>>>,
    last_writes: Vec<Mutex<WriteSet>>,
    last_reads: Vec<Mutex<ReadSet>>,
    /// Code deployed by transactions of this block, by hash.
    pub codes: DashMap<B256, Bytecode, FxBuildHasher>,
    /// Accounts whose code some incarnation of this block changed (created, or delegated under
    /// EIP-7702): a hint for choosing lazy transfers, never cleared.
    pub code_changed: DashMap<Address, (), FxBuildHasher>,
    /// A one-hash Bloom filter of the (token, recipient) pairs of the block's token transfers, so
    /// that only a repeated recipient pays for computing its balance slot (see
    /// [`MvMemory::seen_transfer_recipient`]).
    transfer_recipients: Vec<AtomicU64>,
    /// A one-hash Bloom filter of the locations any transaction wrote (the beneficiary's account
    /// aside): a read of a location none wrote skips the table. A location's bit is set before
    /// the location is published, so a reader that finds the bit clear would have found no entry
    /// either; validation after the writer's record sees the bit, as it would see the entry.
    written: Vec<AtomicU64>,
}

/// Bits of [`MvMemory::written`] per transaction of the block.
const WRITTEN_BITS_PER_TX: usize = 32;

impl MvMemory {
    /// A memory for `block_size` transactions. Every transaction is expected to write the
    /// `beneficiary` account (its fee), so its slots start as ESTIMATE markers: a reader of the
    /// beneficiary's balance waits for all lower transactions instead of reading a partial sum.
    pub fn new(block_size: usize, beneficiary: Address) -> Self {
        Self {
            data: papaya::HashMap::builder().capacity(2 * block_size).hasher(FxBuildHasher).resize_mode(papaya::ResizeMode::Blocking).build(),
            any_wipes: AtomicBool::new(false),
            beneficiary: Location::Account(beneficiary),
            // Expected fee credits: a read of the absolute entry walks past them.
            beneficiary_slots: (0..block_size).map(|_| Mutex::new(Some(Entry::Estimate(true)))).collect(),
            last_writes: (0..block_size).map(|_| Mutex::new(Vec::new())).collect(),
            last_reads: (0..block_size).map(|_| Mutex::new(Vec::new())).collect(),
            codes: DashMap::with_hasher(FxBuildHasher),
            code_changed: DashMap::with_hasher(FxBuildHasher),
            transfer_recipients: (0..(block_size * 4).div_ceil(64).next_power_of_two()).map(|_| AtomicU64::new(0)).collect(),
            written: (0..(block_size * WRITTEN_BITS_PER_TX).div_ceil(64).next_power_of_two()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The word and bit of `location` in [`MvMemory::written`].
    fn written_bit(&self, location: &Location) -> (usize, u64) {
        use std::hash::BuildHasher;
        let hash = FxBuildHasher.hash_one(location).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bit = (hash >> 32) as usize & (self.written.len() * 64 - 1);
        (bit / 64, 1u64 << (bit % 64))
    }

    /// Marks `location` as written, before it is published.
    fn mark_written(&self, location: &Location) {
        let (word, mask) = self.written_bit(location);
        self.written[word].fetch_or(mask, Ordering::Release);
    }

    /// Whether some transaction may have written `location` (false: none did).
    fn maybe_written(&self, location: &Location) -> bool {
        let (word, mask) = self.written_bit(location);
        self.written[word].load(Ordering::Acquire) & mask != 0
    }

    /// Marks `recipient` as paid by a transfer of `token` and returns whether it (or a pair that
    /// shares its bit: a false positive only costs a lookup) was marked before.
    pub fn seen_transfer_recipient(&self, token: &Address, recipient: &Address) -> bool {
        let word = |a: &Address, at: usize| u64::from_le_bytes(a.0[at..at + 8].try_into().unwrap_or_default());
        let key = (word(recipient, 12) ^ word(token, 12).rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bits = self.transfer_recipients.len() * 64;
        let bit = (key >> 32) as usize & (bits - 1);
        let mask = 1u64 << (bit % 64);
        self.transfer_recipients[bit / 64].fetch_or(mask, Ordering::Relaxed) & mask != 0
    }

    /// Keeps the calling thread inside the location table's reclamation epoch until the returned
    /// guard is dropped. A worker holds one for its whole run: every lookup then nests inside it,
    /// which costs a counter instead of entering and leaving the epoch (an atomic swap) each time.
    pub fn hold(&self) -> impl papaya::Guard + '_ {
        self.data.guard()
    }

    /// Whether any transaction wrote (or is expected to write) `location`.
    pub fn has_writes(&self, location: &Location) -> bool {
        *location == self.beneficiary || (self.maybe_written(location) && self.data.pin().contains_key(location))
    }

    /// Walks the entries of `location` below `tx`, nearest first, until `step` returns a value
    /// (or an error). Storage wipes are not looked at (see [`MvMemory::read_slot_with_wipes`]).
    fn walk_down<T>(&self, location: &Location, tx: TxIdx, mut step: impl FnMut(TxIdx, &Entry) -> Result<Option<T>, TxIdx>) -> Result<Option<T>, TxIdx> {
        if *location == self.beneficiary {
            for writer in (0..tx).rev() {
                if let Some(entry) = &*self.beneficiary_slots[writer].lock() {
                    if let Some(found) = step(writer, entry)? {
                        return Ok(Some(found));
                    }
                }
            }
        } else if self.maybe_written(location) {
            let guard = self.data.guard();
            if let Some(versions) = self.data.get(location, &guard) {
                let versions = versions.lock();
                let below = versions.partition_point(|(t, _)| *t < tx);
                for (writer, entry) in versions[..below].iter().rev() {
                    if let Some(found) = step(*writer, entry)? {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Reads `location` as transaction `tx` sees it. `Err(blocking)` when an ESTIMATE of
    /// transaction `blocking` is in the way.
    pub fn read(&self, location: &Location, tx: TxIdx) -> Result<Resolved, TxIdx> {
        if let Location::Storage(address, _) = location {
            if self.any_wipes.load(Ordering::Acquire) {
                return self.read_slot_with_wipes(location, *address, tx);
            }
        }
        let mut resolved = Resolved::default();
        if self.walk_down(location, tx, |writer, entry| Ok(resolved.step(writer, entry)?.then_some(())))?.is_none() {
            resolved.origins.push(Origin::Base);
            resolved.deltas.reverse();
        }
        Ok(resolved)
    }

    /// The nearest absolute entry of account `location` below `tx` (or the pre-block state), and
    /// its value, walking past deltas and past ESTIMATEs of aborted deltas: what a transaction
    /// holding the account's balance observes ([`super::held`]). `Err(blocking)` on an ESTIMATE
    /// that may become an absolute value. A delta that comes back absolute is a new write
    /// ([`MvMemory::record`]), so readers that walked past it are validated again.
    pub fn read_absolute(&self, location: &Location, tx: TxIdx) -> Result<(Origin, Option<Value>), TxIdx> {
        let found = self.walk_down(location, tx, |writer, entry| match entry {
            Entry::Estimate(true) => Ok(None),
            Entry::Estimate(false) => Err(writer),
            Entry::Data(incarnation, value) if value.is_absolute() => Ok(Some((Origin::Version(writer, *incarnation), Some(value.clone())))),
            Entry::Data(..) => Ok(None),
        })?;
        Ok(found.unwrap_or((Origin::Base, None)))
    }

    /// The highest entry below `tx` at `location`, with its writer.
    fn highest_below(&self, location: &Location, tx: TxIdx) -> Option<(TxIdx, Entry)> {
        if !self.maybe_written(location) {
            return None;
        }
        let guard = self.data.guard();
        let versions = self.data.get(location, &guard)?.lock();
        let below = versions.partition_point(|(t, _)| *t < tx);
        below.checked_sub(1).map(|i| versions[i].clone())
    }

    /// A storage slot read when some transaction wiped an account's storage: the slot's own
    /// entries above the account's last wipe below the reader, then the wipe (an absolute zero).
    fn read_slot_with_wipes(&self, location: &Location, address: Address, tx: TxIdx) -> Result<Resolved, TxIdx> {
        let wipe = self.highest_below(&Location::StorageWipe(address), tx);
        let floor = wipe.as_ref().map(|(writer, _)| *writer);
        let mut resolved = Resolved::default();
        let guard = self.data.guard();
        if let Some(versions) = self.maybe_written(location).then(|| self.data.get(location, &guard)).flatten() {
            let versions = versions.lock();
            let below = versions.partition_point(|(t, _)| *t < tx);
            // One transaction never both wipes an account and writes one of its slots.
            for (writer, entry) in versions[..below].iter().rev().take_while(|(writer, _)| floor.is_none_or(|floor| *writer > floor)) {
                if resolved.step(*writer, entry)? {
                    return Ok(resolved);
                }
            }
        }
        match wipe {
            Some((writer, entry)) => {
                resolved.step(writer, &entry)?;
            }
            None => {
                resolved.origins.push(Origin::Base);
                resolved.deltas.reverse();
            }
        }
        Ok(resolved)
    }

    /// Whether storage `location` is zero as transaction `tx` sees it, without summing the credits
    /// below it: the nearest absolute value, or the first non-zero [`Value::StorageAdd`] above it.
    /// `Err(blocking)` on an ESTIMATE in the way.
    pub fn read_zeroness(&self, location: &Location, tx: TxIdx) -> Result<Zeroness, TxIdx> {
        let Location::Storage(address, _) = location else { return Ok(Zeroness::Base) };
        let wipe = if self.any_wipes.load(Ordering::Acquire) { self.highest_below(&Location::StorageWipe(*address), tx) } else { None };
        let floor = wipe.as_ref().map(|(writer, _)| *writer);
        let guard = self.data.guard();
        if let Some(versions) = self.maybe_written(location).then(|| self.data.get(location, &guard)).flatten() {
            let versions = versions.lock();
            let below = versions.partition_point(|(t, _)| *t < tx);
            for (writer, entry) in versions[..below].iter().rev().take_while(|(writer, _)| floor.is_none_or(|floor| *writer > floor)) {
                match entry {
                    Entry::Estimate(_) => return Err(*writer),
                    Entry::Data(_, Value::Storage(value)) => return Ok(Zeroness::Value(*value)),
                    Entry::Data(_, Value::StorageAdd { amount, .. }) if !amount.is_zero() => return Ok(Zeroness::NonZero),
                    Entry::Data(..) => {}
                }
            }
        }
        match wipe {
            Some((writer, Entry::Estimate(_))) => Err(writer),
            Some(_) => Ok(Zeroness::Value(U256::ZERO)),
            None => Ok(Zeroness::Base),
        }
    }

    /// Records incarnation `incarnation` of `tx`: its reads and its writes. Entries of the
    /// previous incarnation at locations not written again are removed. Returns whether a
    /// location was written that the previous incarnation did not write, or written absolute
    /// where it wrote a delta (then higher transactions must be validated again).
    pub fn record(&self, tx: TxIdx, incarnation: Incarnation, reads: ReadSet, writes: WriteSet) -> bool {
        let mut wrote_beneficiary = false;
        // A beneficiary write is new when the previous incarnation left the slot empty (it was
        // invalid): readers above may have walked past it. A seeded or aborted slot holds an
        // ESTIMATE, which readers waited on instead.
        let mut beneficiary_new = false;
        for (location, value) in &writes {
            if *location == self.beneficiary {
                let old = self.beneficiary_slots[tx].lock().replace(Entry::Data(incarnation, value.clone()));
                beneficiary_new = old.is_none();
                wrote_beneficiary = true;
            } else {
                if matches!(location, Location::StorageWipe(_)) {
                    self.any_wipes.store(true, Ordering::Release);
                }
                let guard = self.data.guard();
                // A clear bit: a new location, published without looking it up first.
                let versions = match self.maybe_written(location).then(|| self.data.get(location, &guard)).flatten() {
                    Some(versions) => versions,
                    None => {
                        self.mark_written(location);
                        self.data.get_or_insert_with(*location, Mutex::default, &guard)
                    }
                };
                upsert(&mut versions.lock(), tx, Entry::Data(incarnation, value.clone()));
            }
        }
        if !wrote_beneficiary {
            *self.beneficiary_slots[tx].lock() = None;
        }
        let mut last = self.last_writes[tx].lock();
        let previous = std::mem::replace(&mut *last, writes);
        let contains = |set: &WriteSet, location: &Location| set.iter().any(|(l, _)| l == location);
        // A write is new at a location the previous incarnation did not write, and where it wrote
        // a delta and this one an absolute value: readers holding the account's balance walked
        // past the delta's ESTIMATE (`read_absolute`) and must be validated again.
        // The beneficiary's slot held an ESTIMATE of a credit before its first write: an absolute
        // first write is new too.
        let is_new = |location: &Location, value: &Value, before: Option<bool>| match before {
            None => *location != self.beneficiary || value.is_absolute(),
            Some(was_absolute) => value.is_absolute() && !was_absolute,
        };
        let wrote_new = if previous.len() <= 8 && last.len() <= 8 {
            for (location, _) in &previous {
                if *location != self.beneficiary && !contains(&last, location) {
                    self.remove_entry(location, tx);
                }
            }
            let before = |location: &Location| previous.iter().find(|(l, _)| l == location).map(|(_, v)| v.is_absolute());
            last.iter().any(|(l, v)| is_new(l, v, before(l)))
        } else {
            let new_set: rustc_hash::FxHashSet<&Location> = last.iter().map(|(l, _)| l).collect();
            let old_kinds: rustc_hash::FxHashMap<&Location, bool> = previous.iter().map(|(l, v)| (l, v.is_absolute())).collect();
            for (location, _) in &previous {
                if *location != self.beneficiary && !new_set.contains(location) {
                    self.remove_entry(location, tx);
                }
            }
            last.iter().any(|(l, v)| is_new(l, v, old_kinds.get(l).copied()))
        };
        drop(last);
        *self.last_reads[tx].lock() = reads;
        wrote_new || beneficiary_new
    }

    fn remove_entry(&self, location: &Location, tx: TxIdx) {
        let guard = self.data.guard();
        if let Some(versions) = self.data.get(location, &guard) {
            let mut versions = versions.lock();
            if let Ok(i) = versions.binary_search_by_key(&tx, |(t, _)| *t) {
                versions.remove(i);
            }
        }
    }

    /// Replaces the last writes of `tx` by ESTIMATE markers (its incarnation was aborted).
    pub fn convert_writes_to_estimates(&self, tx: TxIdx) {
        for (location, value) in self.last_writes[tx].lock().iter() {
            let estimate = Entry::Estimate(!value.is_absolute());
            if *location == self.beneficiary {
                *self.beneficiary_slots[tx].lock() = Some(estimate);
            } else if let Some(versions) = self.data.get(location, &self.data.guard()) {
                upsert(&mut versions.lock(), tx, estimate);
            }
        }
    }

    /// Whether every read of the last incarnation of `tx` would still return the same entries.
    pub fn validate_reads(&self, tx: TxIdx) -> bool {
        let reads = self.last_reads[tx].lock();
        reads.iter().all(|(location, observed)| match observed {
            Observed::Versions(origins) => self.read(location, tx).is_ok_and(|resolved| resolved.origins == *origins),
            Observed::Zeroness(seen) => self.read_zeroness(location, tx).is_ok_and(|now| now.observed() == *seen),
            Observed::Absolute(origin) => self.read_absolute(location, tx).is_ok_and(|(now, _)| now == *origin),
        })
    }

    /// Consumes the memory into each transaction's last write set, in block order, and the code
    /// deployed in the block.
    pub fn into_write_sets(self) -> (Vec<WriteSet>, DashMap<B256, Bytecode, FxBuildHasher>) {
        (self.last_writes.into_iter().map(Mutex::into_inner).collect(), self.codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u64) -> Location {
        Location::Storage(Address::repeat_byte(1), U256::from(n))
    }

    #[test]
    fn a_reader_sees_the_highest_write_below_it() {
        let mv = MvMemory::new(4, Address::repeat_byte(0xbe));
        mv.record(0, 0, Vec::new(), vec![(slot(1), Value::Storage(U256::from(10)))]);
        mv.record(2, 0, Vec::new(), vec![(slot(1), Value::Storage(U256::from(30)))]);
        let at = |tx| mv.read(&slot(1), tx).map(|r| (r.absolute, r.origins.to_vec()));
        assert_eq!(at(0), Ok((None, vec![Origin::Base])));
        assert_eq!(at(1), Ok((Some(Value::Storage(U256::from(10))), vec![Origin::Version(0, 0)])));
        assert_eq!(at(3), Ok((Some(Value::Storage(U256::from(30))), vec![Origin::Version(2, 0)])));
    }

    #[test]
    fn every_written_location_is_found_past_the_filter_and_unwritten_ones_read_the_base() {
        // Many more locations than the filter has bits for a two-transaction block: collisions
        // are certain, and must only cost a lookup.
        let mv = MvMemory::new(2, Address::repeat_byte(0xbe));
        let written: Vec<Location> = (0..500).map(slot).chain((0..500u64).map(|n| Location::Account(Address::left_padding_from(&n.to_be_bytes())))).collect();
        for location in &written {
            assert!(!mv.has_writes(location));
        }
        mv.record(0, 0, Vec::new(), written.iter().map(|location| (*location, Value::Storage(U256::from(7)))).collect());
        for location in &written {
            assert!(mv.has_writes(location), "{location:?}");
            assert_eq!(mv.read(location, 1).map(|r| r.origins.to_vec()), Ok(vec![Origin::Version(0, 0)]));
            assert_eq!(mv.read(location, 0).map(|r| r.origins.to_vec()), Ok(vec![Origin::Base]));
        }
        for n in 1_000..1_500 {
            assert!(!mv.has_writes(&slot(n)));
            assert_eq!(mv.read(&slot(n), 1).map(|r| r.origins.to_vec()), Ok(vec![Origin::Base]));
        }
    }

    #[test]
    fn an_aborted_write_blocks_readers_and_validation_notices_the_change() {
        let mv = MvMemory::new(3, Address::repeat_byte(0xbe));
        mv.record(0, 0, Vec::new(), vec![(slot(1), Value::Storage(U256::from(1)))]);
        let read = mv.read(&slot(1), 2).expect("readable");
        mv.record(2, 0, vec![(slot(1), Observed::Versions(read.origins))], Vec::new());
        assert!(mv.validate_reads(2));
        mv.convert_writes_to_estimates(0);
        assert_eq!(mv.read(&slot(1), 2).map(|_| ()), Err(0));
        assert!(!mv.validate_reads(2));
        // The next incarnation writes elsewhere: the estimate goes, the read's origin changed.
        let wrote_new = mv.record(0, 1, Vec::new(), vec![(slot(2), Value::Storage(U256::from(2)))]);
        assert!(wrote_new);
        assert!(!mv.validate_reads(2));
    }

    #[test]
    fn a_storage_wipe_hides_the_slot_writes_below_it_but_not_those_above() {
        let wipe = Location::StorageWipe(Address::repeat_byte(1));
        let mv = MvMemory::new(6, Address::repeat_byte(0xbe));
        mv.record(0, 0, Vec::new(), vec![(slot(1), Value::Storage(U256::from(10)))]);
        // Transaction 3 reads before any wipe exists: it sees transaction 0's value.
        let early = mv.read(&slot(1), 3).expect("readable");
        assert_eq!(early.absolute, Some(Value::Storage(U256::from(10))));
        mv.record(3, 0, vec![(slot(1), Observed::Versions(early.origins))], Vec::new());
        assert!(mv.validate_reads(3));
        // Transaction 1 destroys the account: a new location, so higher transactions revalidate.
        assert!(mv.record(1, 0, Vec::new(), vec![(wipe, Value::Storage(U256::ZERO))]));
        assert!(!mv.validate_reads(3), "the read below the wipe is stale");
        mv.record(4, 0, Vec::new(), vec![(slot(1), Value::Storage(U256::from(40)))]);
        let at = |tx| mv.read(&slot(1), tx).map(|r| (r.absolute, r.origins.to_vec()));
        assert_eq!(at(1), Ok((Some(Value::Storage(U256::from(10))), vec![Origin::Version(0, 0)])));
        assert_eq!(at(3), Ok((Some(Value::Storage(U256::ZERO)), vec![Origin::Version(1, 0)])));
        assert_eq!(at(5), Ok((Some(Value::Storage(U256::from(40))), vec![Origin::Version(4, 0)])));
        // Other slots of the account are wiped too; other accounts are not.
        let other_slot = Location::Storage(Address::repeat_byte(1), U256::from(99));
        assert_eq!(mv.read(&other_slot, 2).map(|r| r.origins.to_vec()), Ok(vec![Origin::Version(1, 0)]));
        let other_account = Location::Storage(Address::repeat_byte(2), U256::from(1));
        assert_eq!(mv.read(&other_account, 5).map(|r| r.origins.to_vec()), Ok(vec![Origin::Base]));
        // An aborted wipe blocks the readers above it, but not those above a later slot write.
        mv.convert_writes_to_estimates(1);
        assert_eq!(at(3).map(|_| ()), Err(1));
        assert!(at(5).is_ok());
    }

    #[test]
    fn zeroness_reads_stop_at_the_first_nonzero_credit_and_exact_reads_sum_the_credits() {
        let add = |amount: u64| Value::StorageAdd { amount: U256::from(amount), was_nonzero: true };
        let mv = MvMemory::new(8, Address::repeat_byte(0xbe));
        assert_eq!(mv.read_zeroness(&slot(1), 7), Ok(Zeroness::Base));
        mv.record(1, 0, Vec::new(), vec![(slot(1), Value::Storage(U256::ZERO))]);
        mv.record(3, 0, Vec::new(), vec![(slot(1), add(0))]);
        mv.record(5, 0, Vec::new(), vec![(slot(1), add(4))]);
        mv.record(6, 0, Vec::new(), vec![(slot(1), add(2))]);
        // Below transaction 1 the pre-block value decides; then its absolute zero, which a zero
        // credit does not change; above a non-zero credit the slot is non-zero.
        assert_eq!(mv.read_zeroness(&slot(1), 1), Ok(Zeroness::Base));
        assert_eq!(mv.read_zeroness(&slot(1), 3), Ok(Zeroness::Value(U256::ZERO)));
        assert_eq!(mv.read_zeroness(&slot(1), 5), Ok(Zeroness::Value(U256::ZERO)));
        assert_eq!(mv.read_zeroness(&slot(1), 6), Ok(Zeroness::NonZero));
        // An exact read walks down to the absolute value and returns the credits in block order.
        let exact = mv.read(&slot(1), 7).expect("readable");
        assert_eq!(exact.absolute, Some(Value::Storage(U256::ZERO)));
        assert_eq!(exact.deltas.to_vec(), vec![add(0), add(4), add(2)]);
        // A zero-or-not read validates while the answer stays the same, not the entries.
        mv.record(7, 0, vec![(slot(1), Observed::Zeroness(Zeroness::NonZero))], Vec::new());
        assert!(mv.validate_reads(7));
        mv.record(6, 1, Vec::new(), vec![(slot(1), add(9))]);
        assert!(mv.validate_reads(7), "another non-zero credit: the same answer");
        mv.convert_writes_to_estimates(6);
        assert_eq!(mv.read_zeroness(&slot(1), 7), Err(6));
        assert!(!mv.validate_reads(7));
        mv.record(6, 2, Vec::new(), Vec::new());
        mv.record(5, 1, Vec::new(), vec![(slot(1), Value::Storage(U256::ZERO))]);
        assert!(!mv.validate_reads(7), "the slot is zero below it now");
        // A wipe above the slot's writes decides too.
        mv.record(4, 0, Vec::new(), vec![(Location::StorageWipe(Address::repeat_byte(1)), Value::Storage(U256::ZERO))]);
        assert_eq!(mv.read_zeroness(&slot(1), 5), Ok(Zeroness::Value(U256::ZERO)));
        mv.record(2, 0, Vec::new(), vec![(slot(1), add(1))]);
        assert_eq!(mv.read_zeroness(&slot(1), 4), Ok(Zeroness::NonZero));
        assert_eq!(mv.read(&slot(1), 5).map(|r| (r.absolute, r.origins.to_vec())), Ok((Some(Value::Storage(U256::ZERO)), vec![Origin::Version(4, 0)])));
    }

    #[test]
    fn absolute_reads_walk_past_deltas_and_their_estimates_but_not_past_absolute_estimates() {
        let account = Location::Account(Address::repeat_byte(1));
        let credit = |amount: u64| Value::Credit { amount: U256::from(amount), no_code: false };
        let absolute = Value::Account(Some(AccountValue { balance: U256::from(7), nonce: 1, code_hash: B256::repeat_byte(2) }));
        let mv = MvMemory::new(8, Address::repeat_byte(0xbe));
        mv.record(1, 0, Vec::new(), vec![(account, absolute.clone())]);
        mv.record(3, 0, Vec::new(), vec![(account, credit(5))]);
        assert_eq!(mv.read_absolute(&account, 1), Ok((Origin::Base, None)));
        assert_eq!(mv.read_absolute(&account, 5), Ok((Origin::Version(1, 0), Some(absolute.clone()))));
        // A reader holding the balance validates while only the credits above change.
        mv.record(5, 0, vec![(account, Observed::Absolute(Origin::Version(1, 0)))], Vec::new());
        mv.convert_writes_to_estimates(3);
        assert_eq!(mv.read(&account, 5).map(|_| ()), Err(3), "an exact read waits for the aborted credit");
        assert!(mv.validate_reads(5), "a held read walks past it");
        // The credit comes back as an absolute value: a new write, and the held read is stale.
        assert!(mv.record(3, 1, Vec::new(), vec![(account, absolute.clone())]));
        assert!(!mv.validate_reads(5));
        // Back to a credit: nothing new for readers, and the held read is valid again.
        assert!(!mv.record(3, 2, Vec::new(), vec![(account, credit(6))]));
        assert!(mv.validate_reads(5));
        // An aborted absolute write stops a held read.
        mv.convert_writes_to_estimates(1);
        assert_eq!(mv.read_absolute(&account, 5), Err(1));
        assert!(!mv.validate_reads(5));
    }

    #[test]
    fn beneficiary_reads_wait_for_every_lower_transaction_then_sum_the_credits() {
        let beneficiary = Address::repeat_byte(0xbe);
        let location = Location::Account(beneficiary);
        let mv = MvMemory::new(3, beneficiary);
        assert_eq!(mv.read(&location, 2).map(|_| ()), Err(1));
        mv.record(1, 0, Vec::new(), vec![(location, Value::Credit { amount: U256::from(5), no_code: false })]);
        assert_eq!(mv.read(&location, 2).map(|_| ()), Err(0));
        // Transaction 0 was invalid: it writes nothing, and the reader goes down to the base.
        mv.record(0, 0, Vec::new(), Vec::new());
        let resolved = mv.read(&location, 2).expect("readable");
        assert_eq!(resolved.origins.to_vec(), vec![Origin::Version(1, 0), Origin::Base]);
        assert_eq!(resolved.deltas.to_vec(), vec![Value::Credit { amount: U256::from(5), no_code: false }]);
        // Transaction 0 becomes valid and pays: that is a new write readers may have missed.
        let wrote_new = mv.record(0, 1, Vec::new(), vec![(location, Value::Credit { amount: U256::from(1), no_code: false })]);
        assert!(wrote_new);
    }
}
