//! [`BlockOverlay`]: the writes of a block so far, layered over the pre-block [`StateSource`].
//!
//! Both execution paths use it: the sequential path commits every transaction into it, the
//! parallel path writes its merged result into it; system calls, withdrawals and rewards then run
//! on it, and [`BlockOverlay::into_diff`] turns it into the block's [`StateDiff`].

use crate::{
    diff::{AccountDiff, AccountState, StateDiff},
    error::StateError,
    state::StateSource,
};
use alloy_primitives::{
    map::{HashMap, IndexEntry, IndexMap},
    Address, B256, U256,
};
use revm::{
    bytecode::Bytecode,
    database::{Database, DatabaseCommit, DatabaseRef},
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
    state::{AccountInfo, EvmState},
};
use std::collections::BTreeMap;

/// One account as the block has left it.
#[derive(Debug, Clone, Default)]
pub struct OverlayAccount {
    /// `None`: the account does not exist (destroyed, or deleted as empty under EIP-161).
    pub info: Option<AccountInfo>,
    /// Slots written in this block (zero included).
    pub storage: HashMap<U256, U256>,
    /// The account's storage from before the block was wiped (self-destruct, deletion, creation).
    pub storage_cleared: bool,
    /// The account's fields before the block, where the writer already read them (`Some(None)`:
    /// it did not exist): the diff then skips looking them up again.
    pub known_before: Option<Option<Fields>>,
}

/// An account's fields without its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// Balance.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code hash.
    pub code_hash: B256,
}

impl Fields {
    /// The fields of `info`.
    pub fn of(info: &AccountInfo) -> Self {
        Self { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash }
    }
}

/// Number of shards an overlay's accounts are split into, by a hash of the address.
/// The parallel path merges and normalises the shards on several threads at once.
pub const OVERLAY_SHARDS: usize = 16;

/// Blocks that wrote fewer accounts than this are normalised on one thread: starting threads
/// costs more than it saves.
const MIN_PARALLEL_DIFF_ACCOUNTS: usize = 4096;

/// The shard holding `address`: a cheap mix of all its bytes, so that addresses that share a
/// prefix or a suffix (system contracts, numbered test accounts, vanity addresses) still spread.
pub fn shard_of(address: &Address) -> usize {
    let mut mixed = 0u64;
    for chunk in address.0 .0.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mixed = (mixed ^ u64::from_le_bytes(word)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    (mixed >> 60) as usize
}

/// The accounts of one shard.
pub type AccountShard = IndexMap<Address, OverlayAccount>;

/// Writes of a block layered over the pre-block state.
#[derive(Debug)]
pub struct BlockOverlay<'a, S> {
    base: &'a S,
    spec: SpecId,
    shards: Vec<AccountShard>,
    codes: HashMap<B256, Bytecode>,
}

/// The entry for `address` in `shard`, created from the pre-block state when absent.
fn entry_in<'s, S: StateSource>(shard: &'s mut AccountShard, base: &S, address: Address) -> Result<&'s mut OverlayAccount, StateError> {
    match shard.entry(address) {
        IndexEntry::Occupied(entry) => Ok(entry.into_mut()),
        IndexEntry::Vacant(entry) => {
            let info = base.basic_ref(address)?;
            Ok(entry.insert(OverlayAccount { info, ..Default::default() }))
        }
    }
}

/// A storage slot of `address` as `shard` has it: the block's write, zero where the block wiped
/// the account's storage or deleted it, otherwise the pre-block value.
fn storage_in<S: StateSource>(shard: &AccountShard, base: &S, address: Address, slot: U256) -> Result<U256, StateError> {
    match shard.get(&address) {
        Some(account) => match account.storage.get(&slot) {
            Some(value) => Ok(*value),
            None if account.storage_cleared || account.info.is_none() => Ok(U256::ZERO),
            None => base.storage_ref(address, slot),
        },
        None => base.storage_ref(address, slot),
    }
}

/// Wipes the storage an account had, in `shard`.
fn clear_storage_in<S: StateSource>(shard: &mut AccountShard, base: &S, address: Address) -> Result<(), StateError> {
    let entry = entry_in(shard, base, address)?;
    entry.storage.clear();
    entry.storage_cleared = true;
    Ok(())
}

/// Replaces an account's fields in `shard` (`None`: it no longer exists, nor does its storage).
fn set_info_in(shard: &mut AccountShard, address: Address, info: Option<AccountInfo>) {
    // The fields are replaced whole, so a new entry needs nothing from the pre-block state.
    let entry = shard.entry(address).or_default();
    if info.is_none() {
        entry.storage.clear();
        entry.storage_cleared = true;
    }
    entry.info = info;
}

/// Write access to some of an overlay's shards, for one thread of a parallel merge. Every write
/// to an account goes through the one writer that owns its shard, in block order.
pub struct ShardWriter<'o, S> {
    base: &'o S,
    shards: Vec<Option<&'o mut AccountShard>>,
}

impl<'o, S: StateSource> ShardWriter<'o, S> {
    /// The pre-block state.
    pub fn base(&self) -> &'o S {
        self.base
    }

    /// Whether this writer owns the shard of `address`.
    pub fn owns(&self, address: &Address) -> bool {
        self.shards[shard_of(address)].is_some()
    }

    fn shard(&mut self, address: &Address) -> Result<&mut AccountShard, StateError> {
        self.shards[shard_of(address)].as_deref_mut().ok_or_else(|| StateError(format!("merge thread does not own {address}")))
    }

    /// The account as the block has left it so far.
    pub fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        match self.shard(&address)?.get(&address) {
            Some(account) => Ok(account.info.clone()),
            None => self.base.basic_ref(address),
        }
    }

    /// [`BlockOverlay::set_info`], for an account whose code, if any, the overlay or the
    /// pre-block state already holds.
    pub fn set_info(&mut self, address: Address, info: Option<AccountInfo>) -> Result<(), StateError> {
        set_info_in(self.shard(&address)?, address, info);
        Ok(())
    }

    /// [`ShardWriter::set_info`] for an account whose fields before the block the caller read:
    /// kept where the overlay has no entry for it yet (the diff then need not read them again).
    pub fn set_info_known(&mut self, address: Address, info: Option<AccountInfo>, before: Option<Fields>) -> Result<(), StateError> {
        let shard = self.shard(&address)?;
        if !shard.contains_key(&address) {
            shard.insert(address, OverlayAccount { known_before: Some(before), ..Default::default() });
        }
        set_info_in(shard, address, info);
        Ok(())
    }

    /// [`BlockOverlay::clear_storage`].
    pub fn clear_storage(&mut self, address: Address) -> Result<(), StateError> {
        let base = self.base;
        clear_storage_in(self.shard(&address)?, base, address)
    }

    /// A storage slot as the block has left it so far.
    pub fn storage(&mut self, address: Address, slot: U256) -> Result<U256, StateError> {
        let base = self.base;
        storage_in(self.shard(&address)?, base, address, slot)
    }

    /// [`BlockOverlay::set_storage`].
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) -> Result<(), StateError> {
        let base = self.base;
        entry_in(self.shard(&address)?, base, address)?.storage.insert(slot, value);
        Ok(())
    }
}

impl<'a, S: StateSource> BlockOverlay<'a, S> {
    /// An overlay with no writes yet.
    pub fn new(base: &'a S, spec: SpecId) -> Self {
        Self { base, spec, shards: (0..OVERLAY_SHARDS).map(|_| IndexMap::default()).collect(), codes: HashMap::default() }
    }

    /// The pre-block state under the overlay.
    pub fn base(&self) -> &'a S {
        self.base
    }

    /// The spec the overlay applies EIP-161 by.
    pub fn spec(&self) -> SpecId {
        self.spec
    }

    fn shard(&self, address: &Address) -> &AccountShard {
        &self.shards[shard_of(address)]
    }

    fn shard_mut(&mut self, address: &Address) -> &mut AccountShard {
        &mut self.shards[shard_of(address)]
    }

    /// Commits one transaction's (or system call's) finalized EVM state.
    pub fn apply_evm_state(&mut self, state: EvmState) {
        let clear_empty = self.spec.is_enabled_in(SpecId::SPURIOUS_DRAGON);
        for (address, account) in state {
            if !account.is_touched() {
                continue;
            }
            let entry = self.shards[shard_of(&address)].entry(address).or_default();
            if account.is_selfdestructed() || (clear_empty && account.is_empty()) {
                *entry = OverlayAccount { info: None, storage: HashMap::default(), storage_cleared: true, known_before: entry.known_before };
                continue;
            }
            if account.is_created() {
                entry.storage.clear();
                entry.storage_cleared = true;
            }
            for (slot, value) in account.changed_storage_slots() {
                entry.storage.insert(*slot, value.present_value);
            }
            let mut info = account.info;
            if let Some(code) = &info.code {
                if info.code_hash != KECCAK_EMPTY {
                    self.codes.entry(info.code_hash).or_insert_with(|| code.clone());
                }
            }
            info.account_id = None;
            entry.info = Some(info);
        }
    }

    /// Makes room for about `additional` more accounts.
    pub fn reserve(&mut self, additional: usize) {
        let per_shard = additional / OVERLAY_SHARDS + 1;
        for shard in &mut self.shards {
            shard.reserve(per_shard);
        }
    }

    /// Registers code deployed in the block, so accounts can be set without it.
    pub fn add_code(&mut self, code_hash: B256, code: Bytecode) {
        if code_hash != KECCAK_EMPTY {
            self.codes.entry(code_hash).or_insert(code);
        }
    }

    /// Splits the overlay into `writers` shard writers (shard `i` goes to writer `i % writers`)
    /// and the code the block deployed so far, for a merge on several threads.
    pub fn shard_writers(&mut self, writers: usize) -> (Vec<ShardWriter<'_, S>>, &HashMap<B256, Bytecode>) {
        let writers = writers.clamp(1, OVERLAY_SHARDS);
        let base: &S = self.base;
        let mut split: Vec<ShardWriter<'_, S>> = (0..writers).map(|_| ShardWriter { base, shards: (0..OVERLAY_SHARDS).map(|_| None).collect() }).collect();
        for (index, shard) in self.shards.iter_mut().enumerate() {
            split[index % writers].shards[index] = Some(shard);
        }
        (split, &self.codes)
    }

    /// Sets an account's fields (`None`: it no longer exists, and its storage is gone).
    pub fn set_info(&mut self, address: Address, info: Option<AccountInfo>) -> Result<(), StateError> {
        if let Some(info) = &info {
            if let Some(code) = &info.code {
                self.add_code(info.code_hash, code.clone());
            }
        }
        set_info_in(self.shard_mut(&address), address, info);
        Ok(())
    }

    /// Wipes the storage an account had (it was created, destroyed or deleted).
    pub fn clear_storage(&mut self, address: Address) -> Result<(), StateError> {
        let base = self.base;
        clear_storage_in(self.shard_mut(&address), base, address)
    }

    /// Writes one storage slot.
    pub fn set_storage(&mut self, address: Address, slot: U256, value: U256) -> Result<(), StateError> {
        let base = self.base;
        entry_in(self.shard_mut(&address), base, address)?.storage.insert(slot, value);
        Ok(())
    }

    /// The overlay's entry for `address`, if the block wrote the account.
    pub fn account(&self, address: &Address) -> Option<&OverlayAccount> {
        self.shard(address).get(address)
    }

    /// Adds `amount` wei to `address` (block rewards, withdrawals). A zero amount does nothing,
    /// as in geth's and reth's post-block balance increments.
    pub fn increment_balance(&mut self, address: Address, amount: U256) -> Result<(), StateError> {
        if amount.is_zero() {
            return Ok(());
        }
        let mut info = self.basic_ref(address)?.unwrap_or_default();
        info.balance = info.balance.saturating_add(amount);
        self.write_info(address, info);
        Ok(())
    }

    /// Empties the balance of `address` and returns what it held (the DAO fork's drain).
    pub fn drain_balance(&mut self, address: Address) -> Result<U256, StateError> {
        let Some(mut info) = self.basic_ref(address)? else { return Ok(U256::ZERO) };
        let drained = std::mem::take(&mut info.balance);
        self.write_info(address, info);
        Ok(drained)
    }

    fn write_info(&mut self, address: Address, info: AccountInfo) {
        let entry = self.shard_mut(&address).entry(address).or_default();
        entry.info = Some(info);
    }

    /// Normalises the overlay against the pre-block state into the block's [`StateDiff`]: only
    /// what really changed remains, so both execution paths yield equal diffs.
    pub fn into_diff(self) -> Result<StateDiff, StateError> {
        self.into_diff_on(1)
    }

    /// [`BlockOverlay::into_diff`] on up to `threads` threads (shards are normalised
    /// independently; the result is the same).
    pub fn into_diff_on(self, threads: usize) -> Result<StateDiff, StateError> {
        let Self { base, codes, shards, .. } = self;
        let normalizer = Normalizer { base, codes: &codes };
        let written: usize = shards.iter().map(IndexMap::len).sum();
        let threads = if written < MIN_PARALLEL_DIFF_ACCOUNTS { 1 } else { threads.clamp(1, OVERLAY_SHARDS) };
        // Shard i goes to thread i % threads; the order of the parts does not matter below.
        let mut owned: Vec<Vec<AccountShard>> = (0..threads).map(|_| Vec::new()).collect();
        for (index, shard) in shards.into_iter().enumerate() {
            owned[index % threads].push(shard);
        }
        let normalized = crate::threads::map_on_threads(
            owned,
            |list| list.into_iter().map(|shard| normalizer.shard(shard)).collect::<Result<Vec<_>, StateError>>(),
            || StateError("a normalising thread panicked".into()),
        )?;
        let parts: Vec<Vec<(Address, AccountDiff)>> = normalized.into_iter().flatten().collect();
        // Each part is sorted: merged in address order, the map is built in one pass without
        // sorting (its elements are large; moving them through a sort costs more than
        // normalising them).
        Ok(StateDiff { accounts: MergeSorted::new(parts).collect() })
    }

    /// What the block so far changed in one account, as [`BlockOverlay::into_diff`] would give
    /// it (`None`: nothing, or the block has not written the account).
    pub fn account_diff(&self, address: &Address) -> Result<Option<AccountDiff>, StateError> {
        match self.shard(address).get(address) {
            Some(account) => Normalizer { base: self.base, codes: &self.codes }.account(*address, account),
            None => Ok(None),
        }
    }
}

/// Merges lists sorted by address into one sorted sequence (addresses are distinct across
/// lists: each account lives in one shard).
struct MergeSorted<T> {
    lists: Vec<std::iter::Peekable<std::vec::IntoIter<(Address, T)>>>,
}

impl<T> MergeSorted<T> {
    fn new(lists: Vec<Vec<(Address, T)>>) -> Self {
        Self { lists: lists.into_iter().filter(|l| !l.is_empty()).map(|l| l.into_iter().peekable()).collect() }
    }
}

impl<T> Iterator for MergeSorted<T> {
    type Item = (Address, T);

    fn next(&mut self) -> Option<(Address, T)> {
        let mut lowest: Option<(usize, Address)> = None;
        for (index, list) in self.lists.iter_mut().enumerate() {
            if let Some((address, _)) = list.peek() {
                if lowest.is_none_or(|(_, low)| *address < low) {
                    lowest = Some((index, *address));
                }
            }
        }
        let (index, _) = lowest?;
        self.lists[index].next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.lists.iter().map(|l| l.size_hint().0).sum();
        (left, Some(left))
    }
}

/// Turns overlay entries into what really changed against the pre-block state.
struct Normalizer<'n, S> {
    base: &'n S,
    codes: &'n HashMap<B256, Bytecode>,
}

impl<S: StateSource> Normalizer<'_, S> {
    /// The changes of one shard, sorted by address.
    fn shard(&self, shard: AccountShard) -> Result<Vec<(Address, AccountDiff)>, StateError> {
        // Sorting the addresses with their positions moves 24 bytes per account; sorting the
        // diffs themselves moved each large diff several times.
        let mut order: Vec<(Address, usize)> = shard.keys().enumerate().map(|(index, address)| (*address, index)).collect();
        order.sort_unstable();
        let mut changed = Vec::with_capacity(shard.len());
        for (address, index) in order {
            if let Some((_, account)) = shard.get_index(index) {
                if let Some(diff) = self.account(address, account)? {
                    changed.push((address, diff));
                }
            }
        }
        Ok(changed)
    }

    fn account(&self, address: Address, account: &OverlayAccount) -> Result<Option<AccountDiff>, StateError> {
        let before = match account.known_before {
            Some(known) => known,
            None => self.base.basic_ref(address)?.as_ref().map(Fields::of),
        };
        let storage_cleared = account.storage_cleared && before.is_some();
        let mut storage = BTreeMap::new();
        if account.info.is_some() {
            for (slot, value) in &account.storage {
                let unchanged = if storage_cleared || before.is_none() {
                    value.is_zero()
                } else {
                    *value == self.base.storage_ref(address, *slot)?
                };
                if !unchanged {
                    storage.insert(*slot, *value);
                }
            }
        }
        let info = account.info.as_ref().map(|info| {
            let code_changed = before.as_ref().map_or(info.code_hash != KECCAK_EMPTY, |b| b.code_hash != info.code_hash);
            let code = if code_changed && info.code_hash != KECCAK_EMPTY {
                info.code.clone().or_else(|| self.codes.get(&info.code_hash).cloned())
            } else {
                None
            };
            AccountState { balance: info.balance, nonce: info.nonce, code_hash: info.code_hash, code }
        });
        let same_info = match (&info, &before) {
            (None, None) => true,
            (Some(a), Some(b)) => a.balance == b.balance && a.nonce == b.nonce && a.code_hash == b.code_hash,
            _ => false,
        };
        if same_info && storage.is_empty() && !storage_cleared {
            return Ok(None);
        }
        Ok(Some(AccountDiff { info, storage_cleared, storage }))
    }
}

impl<S: StateSource> DatabaseRef for BlockOverlay<'_, S> {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        match self.shard(&address).get(&address) {
            Some(account) => Ok(account.info.clone()),
            None => self.base.basic_ref(address),
        }
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        match self.codes.get(&code_hash) {
            Some(code) => Ok(code.clone()),
            None => self.base.code_by_hash_ref(code_hash),
        }
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StateError> {
        storage_in(self.shard(&address), self.base, address, index)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash_ref(number)
    }
}

impl<S: StateSource> Database for BlockOverlay<'_, S> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        self.basic_ref(address)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.code_by_hash_ref(code_hash)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        self.storage_ref(address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.block_hash_ref(number)
    }
}

impl<S: StateSource> DatabaseCommit for BlockOverlay<'_, S> {
    fn commit(&mut self, changes: EvmState) {
        self.apply_evm_state(changes);
    }
}
