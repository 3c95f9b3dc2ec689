//! [`BlockOverlay`]: the writes of a block so far, layered over the pre-block [`StateSource`].
//!
//! Both execution paths use it: the sequential path commits every transaction into it, the
//! parallel path writes its merged result into it; system calls, withdrawals and rewards then run
//! on it, and [`BlockOverlay::into_diff`] turns it into the block's [`StateDiff`].
//!
//! Accounts a partitioned run wrote can also arrive already normalised ("settled",
//! [`SettledAccount`]): the merge's threads compare them with the pre-block state while they
//! have them at hand, and the diff takes them as they are, instead of each one being inserted
//! into a map and compared again at the end. Reads see them like any other write; a later write
//! moves one back into the map first.
//!
//! The diff compares each written account with its fields before the block. Where a writer read
//! them already (the sequential path's commit, just after the EVM loaded the account; the
//! partitioned merge), they are kept with the account (`known_before`) and not looked up again.

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

/// Blocks that wrote fewer accounts and slots than this (together) are normalised on one
/// thread: starting threads costs more than it saves.
const MIN_PARALLEL_DIFF_ACCOUNTS: usize = 512;

/// An account with at least this many written slots has them normalised on every thread of a
/// parallel diff, rather than on its shard's thread alone.
const MIN_SPLIT_ACCOUNT_SLOTS: usize = 4096;

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

/// An account a partitioned run wrote and normalised during its merge, on the merge's threads
/// (see `ShardWriter::settle`): its diff against the pre-block state, kept out of the
/// shard's map until a later write needs it there again.
#[derive(Debug, Clone)]
pub struct SettledAccount {
    /// What the block changed in the account.
    pub diff: AccountDiff,
    /// Its fields before the block (`None`: it did not exist).
    pub before: Option<Fields>,
    /// Whether its storage from before the block is gone, as [`OverlayAccount::storage_cleared`]
    /// would say (the diff leaves the flag out where the account did not exist before).
    pub storage_cleared: bool,
}

/// What a settled account needs besides its diff, should a later write take it back into the
/// shard's map.
#[derive(Debug, Clone, Copy)]
struct SettledRest {
    before: Option<Fields>,
    storage_cleared: bool,
    /// A later write took it back into the map: its diff here is empty and stale.
    moved: bool,
}

/// The accounts of one shard.
#[derive(Debug, Default)]
pub struct AccountShard {
    /// Accounts the block wrote, to be normalised into the diff at the end.
    live: IndexMap<Address, OverlayAccount>,
    /// Accounts already normalised (by a partitioned run's merge), sorted by address: the
    /// diff takes this list as it is. Never an account `live` holds too.
    settled: Vec<(Address, AccountDiff)>,
    /// The rest of each settled account, in the same order.
    settled_rest: Vec<SettledRest>,
    /// How many settled accounts were moved back into `live`.
    moved: usize,
}

/// What a shard holds for one account.
enum Held<'s> {
    Live(&'s OverlayAccount),
    Settled(&'s AccountDiff, &'s SettledRest),
}

impl AccountShard {
    /// The position of a settled account not moved back into the map.
    fn settled_position(&self, address: &Address) -> Option<usize> {
        if self.settled.is_empty() {
            return None;
        }
        let position = self.settled.binary_search_by(|(held, _)| held.cmp(address)).ok()?;
        (!self.settled_rest[position].moved).then_some(position)
    }

    fn held(&self, address: &Address) -> Option<Held<'_>> {
        if let Some(account) = self.live.get(address) {
            return Some(Held::Live(account));
        }
        let position = self.settled_position(address)?;
        Some(Held::Settled(&self.settled[position].1, &self.settled_rest[position]))
    }

    /// The account's fields as the block has left them; `None` where the block has not
    /// written the account.
    fn info(&self, address: &Address) -> Option<Option<AccountInfo>> {
        Some(match self.held(address)? {
            Held::Live(account) => account.info.clone(),
            Held::Settled(diff, _) => diff.info.as_ref().map(|state| crate::state::account_info(state.balance, state.nonce, state.code_hash, state.code.clone())),
        })
    }

    /// The entry for `address` in the map, a settled account moved back into it first (as an
    /// entry whose diff is the settled one).
    fn live_entry(&mut self, address: Address) -> IndexEntry<'_, Address, OverlayAccount> {
        if let Some(position) = self.settled_position(&address) {
            let empty = AccountDiff { info: None, storage_cleared: false, storage: BTreeMap::new() };
            let diff = std::mem::replace(&mut self.settled[position].1, empty);
            let rest = &mut self.settled_rest[position];
            rest.moved = true;
            self.moved += 1;
            let info = diff.info.map(|state| crate::state::account_info(state.balance, state.nonce, state.code_hash, state.code));
            let account = OverlayAccount { info, storage: diff.storage.into_iter().collect(), storage_cleared: rest.storage_cleared, known_before: Some(rest.before) };
            self.live.insert(address, account);
        }
        self.live.entry(address)
    }

    /// Accounts held, settled ones included.
    fn len(&self) -> usize {
        self.live.len() + self.settled.len() - self.moved
    }

    /// The settled accounts' diffs, sorted by address.
    fn into_settled_diffs(self) -> Vec<(Address, AccountDiff)> {
        if self.moved == 0 {
            return self.settled;
        }
        self.settled.into_iter().zip(self.settled_rest).filter(|(_, rest)| !rest.moved).map(|(settled, _)| settled).collect()
    }
}

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
    match shard.live_entry(address) {
        IndexEntry::Occupied(entry) => Ok(entry.into_mut()),
        IndexEntry::Vacant(entry) => {
            // The block has not written the account: these are its fields before the block too,
            // which the diff then need not look up again.
            let info = base.basic_ref(address)?;
            let known_before = Some(info.as_ref().map(Fields::of));
            Ok(entry.insert(OverlayAccount { info, known_before, ..Default::default() }))
        }
    }
}

/// A storage slot of `address` as `shard` has it: the block's write, zero where the block wiped
/// the account's storage or deleted it, otherwise the pre-block value.
fn storage_in<S: StateSource>(shard: &AccountShard, base: &S, address: Address, slot: U256) -> Result<U256, StateError> {
    match shard.held(&address) {
        Some(Held::Live(account)) => match account.storage.get(&slot) {
            Some(value) => Ok(*value),
            None if account.storage_cleared || account.info.is_none() => Ok(U256::ZERO),
            None => base.storage_ref(address, slot),
        },
        // The diff left out the slots the block wrote back to their value before it.
        Some(Held::Settled(diff, rest)) => match diff.storage.get(&slot) {
            Some(value) => Ok(*value),
            None if rest.storage_cleared || diff.info.is_none() => Ok(U256::ZERO),
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
    set_info_on(shard.live_entry(address).or_default(), info);
}

/// Replaces the fields of an account the overlay holds (`None`: it no longer exists, nor does
/// its storage).
fn set_info_on(entry: &mut OverlayAccount, info: Option<AccountInfo>) {
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
    codes: &'o HashMap<B256, Bytecode>,
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

    /// The account as the block has left it so far, and its fields before the block where they
    /// are what it returns (the block has not written the account): for
    /// [`ShardWriter::set_info_known`].
    pub fn basic_known(&mut self, address: Address) -> Result<(Option<AccountInfo>, Option<Option<Fields>>), StateError> {
        match self.shard(&address)?.info(&address) {
            Some(info) => Ok((info, None)),
            None => {
                let info = self.base.basic_ref(address)?;
                let before = info.as_ref().map(Fields::of);
                Ok((info, Some(before)))
            }
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
        match self.shard(&address)?.live_entry(address) {
            // One lookup: the account's first write in the block is a new entry, whole.
            IndexEntry::Vacant(entry) => {
                let storage_cleared = info.is_none();
                entry.insert(OverlayAccount { info, storage: HashMap::default(), storage_cleared, known_before: Some(before) });
            }
            IndexEntry::Occupied(entry) => set_info_on(entry.into_mut(), info),
        }
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

    /// Whether accounts of shard `index` may be settled ([`ShardWriter::settle`]): this writer
    /// owns the shard and nothing was settled in it yet (so that a settled account's fields
    /// before the run are its fields before the block).
    pub(crate) fn can_settle(&self, index: usize) -> bool {
        self.shards.get(index).and_then(|shard| shard.as_deref()).is_some_and(|shard| shard.settled.is_empty())
    }

    /// Whether the block so far wrote `address` (on a shard this writer owns).
    pub(crate) fn holds(&self, address: &Address) -> bool {
        self.shards[shard_of(address)].as_deref().is_some_and(|shard| shard.held(address).is_some())
    }

    /// Normalises an account that one group of a partitioned run wrote and nothing else in
    /// the block touched: `after` its fields, `cleared` whether its storage from before is
    /// gone, `slots` the slots it wrote, `before` its fields before the block. `None`: it did
    /// not change. The merge keeps it out of the overlay's map (see [`ShardWriter::settle`]).
    pub(crate) fn normalize(
        &self,
        address: Address,
        after: Option<&AccountInfo>,
        cleared: bool,
        before: Option<Fields>,
        slots: impl Iterator<Item = (U256, U256)>,
    ) -> Result<Option<SettledAccount>, StateError> {
        let normalizer = Normalizer { base: self.base, codes: self.codes };
        let diff = normalizer.diff(after, cleared, before, |against_zero| normalizer.changed_slots(address, slots, against_zero))?;
        Ok(diff.map(|diff| SettledAccount { diff, before, storage_cleared: cleared }))
    }

    /// One group's part of an account several groups wrote slots of and none changed the
    /// fields of (`fields` as the block found them, `before` the same): the slots among `slots`
    /// whose value differs from the one before the block, sorted by slot (see
    /// [`BlockOverlay::settle_one`]).
    pub(crate) fn changed_slots(&self, address: Address, fields: Option<&AccountInfo>, before: Option<Fields>, slots: impl Iterator<Item = (U256, U256)>) -> Result<Vec<(U256, U256)>, StateError> {
        if fields.is_none() {
            return Ok(Vec::new());
        }
        let (_, against_zero) = storage_rule(false, &before);
        let mut changed = Normalizer { base: self.base, codes: self.codes }.changed_slots(address, slots, against_zero)?;
        changed.sort_unstable_by_key(|(slot, _)| *slot);
        Ok(changed)
    }

    /// Hands shard `index` its settled accounts (from [`ShardWriter::normalize`], none of them
    /// written in the block before): the diff takes them as they are, and a later write moves
    /// one back into the map. Sorts `accounts` by address.
    pub(crate) fn settle(&mut self, index: usize, accounts: Vec<(Address, SettledAccount)>) -> Result<(), StateError> {
        let Some(shard) = self.shards.get_mut(index).and_then(|shard| shard.as_deref_mut()) else {
            return Err(StateError(format!("merge thread does not own shard {index}")));
        };
        if !shard.settled.is_empty() {
            return Err(StateError(format!("shard {index} already has settled accounts")));
        }
        // Sorting the addresses with their positions moves 24 bytes per account, not a diff.
        let mut order: Vec<(Address, usize)> = accounts.iter().enumerate().map(|(position, (address, _))| (*address, position)).collect();
        order.sort_unstable();
        let mut taken: Vec<Option<SettledAccount>> = accounts.into_iter().map(|(_, settled)| Some(settled)).collect();
        shard.settled.reserve(order.len());
        shard.settled_rest.reserve(order.len());
        for (address, position) in order {
            if let Some(settled) = taken[position].take() {
                shard.settled.push((address, settled.diff));
                shard.settled_rest.push(SettledRest { before: settled.before, storage_cleared: settled.storage_cleared, moved: false });
            }
        }
        Ok(())
    }

    /// Writes `count` slots of one account (an ERC-20 token's balances after a block of
    /// transfers): the account is looked up once and its map grown once.
    pub fn set_storage_many(&mut self, address: Address, count: usize, slots: impl Iterator<Item = (U256, U256)>) -> Result<(), StateError> {
        let base = self.base;
        let storage = &mut entry_in(self.shard(&address)?, base, address)?.storage;
        storage.reserve(count);
        storage.extend(slots);
        Ok(())
    }
}

impl<'a, S: StateSource> BlockOverlay<'a, S> {
    /// An overlay with no writes yet.
    pub fn new(base: &'a S, spec: SpecId) -> Self {
        Self { base, spec, shards: (0..OVERLAY_SHARDS).map(|_| AccountShard::default()).collect(), codes: HashMap::default() }
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
        let base = self.base;
        for (address, account) in state {
            if !account.is_touched() {
                continue;
            }
            let entry = match self.shards[shard_of(&address)].live_entry(address) {
                IndexEntry::Occupied(entry) => entry.into_mut(),
                // The block's first write of the account: the EVM has just read it from the
                // pre-block state, so its fields are read again now, while in the cache, for the
                // diff (which would otherwise look each account up once more at the end). A
                // failed read is left to the diff, which reports it.
                IndexEntry::Vacant(entry) => {
                    let known_before = base.basic_ref(address).ok().map(|before| before.as_ref().map(Fields::of));
                    entry.insert(OverlayAccount { known_before, ..Default::default() })
                }
            };
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
            shard.live.reserve(per_shard);
        }
    }

    /// Whether an account could be settled ([`ShardWriter::settle`], [`BlockOverlay::settle_one`]):
    /// the block has not written it, and nothing was settled in its shard yet.
    pub(crate) fn can_settle(&self, address: &Address) -> bool {
        let shard = self.shard(address);
        shard.settled.is_empty() && shard.held(address).is_none()
    }

    /// Settles one account whose fields the block did not change (`fields` as the block
    /// found them, `before` the same as [`Fields`]) and whose changed slots are `storage`
    /// (already compared with the values before the block): an account many groups of a
    /// partitioned run wrote slots of, normalised in parts on the merge's threads. It must not
    /// be held yet, and every other account settled in its shard must come from the same run.
    pub(crate) fn settle_one(&mut self, address: Address, fields: Option<&AccountInfo>, before: Option<Fields>, storage: BTreeMap<U256, U256>) -> Result<(), StateError> {
        let normalizer = Normalizer { base: self.base, codes: &self.codes };
        let Some(diff) = normalizer.finish(fields, before, false, storage) else { return Ok(()) };
        let shard = self.shard_mut(&address);
        if shard.live.contains_key(&address) {
            return Err(StateError(format!("{address} is already written in the block")));
        }
        match shard.settled.binary_search_by(|(held, _)| held.cmp(&address)) {
            Ok(_) => Err(StateError(format!("{address} is already settled"))),
            Err(position) => {
                shard.settled.insert(position, (address, diff));
                shard.settled_rest.insert(position, SettledRest { before, storage_cleared: false, moved: false });
                Ok(())
            }
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
        let codes = &self.codes;
        let mut split: Vec<ShardWriter<'_, S>> = (0..writers).map(|_| ShardWriter { base, codes, shards: (0..OVERLAY_SHARDS).map(|_| None).collect() }).collect();
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
        let entry = self.shard_mut(&address).live_entry(address).or_default();
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
        let started = std::time::Instant::now();
        let Self { base, codes, mut shards, .. } = self;
        let normalizer = Normalizer { base, codes: &codes };
        let written: usize = shards.iter().map(AccountShard::len).sum();
        // One pass over the accounts: their written slots, and those with many (a token after a
        // block of transfers), which would keep the thread of their shard busy alone. Settled
        // accounts are already normalised: only their count matters here.
        let mut slots = 0;
        let mut large_accounts: Vec<(usize, Address)> = Vec::new();
        for (index, shard) in shards.iter().enumerate() {
            for (address, account) in &shard.live {
                slots += account.storage.len();
                if account.storage.len() >= MIN_SPLIT_ACCOUNT_SLOTS {
                    large_accounts.push((index, *address));
                }
            }
        }
        let threads = if written + slots < MIN_PARALLEL_DIFF_ACCOUNTS { 1 } else { threads.clamp(1, OVERLAY_SHARDS) };
        // Those have their slots split over the threads first.
        let mut large = Vec::new();
        if threads > 1 {
            for (index, address) in large_accounts {
                if let Some(account) = shards[index].live.swap_remove(&address) {
                    if let Some(diff) = normalizer.account(address, &account, threads)? {
                        large.push((address, diff));
                    }
                }
            }
        }
        large.sort_unstable_by_key(|(address, _)| *address);
        // Shard i goes to thread i % threads; the order of the parts does not matter below.
        let mut owned: Vec<Vec<AccountShard>> = (0..threads).map(|_| Vec::new()).collect();
        for (index, shard) in shards.into_iter().enumerate() {
            owned[index % threads].push(shard);
        }
        // Each thread merges its shards' sorted parts into one sorted list; the lists of the
        // threads are merged here, and the map is built from the result in one pass.
        let normalized = crate::threads::map_on_threads(
            owned,
            |list| {
                let mut parts = Vec::with_capacity(list.len() * 2);
                for mut shard in list {
                    let AccountShard { live, .. } = &mut shard;
                    parts.push(normalizer.shard(std::mem::take(live))?);
                    parts.push(shard.into_settled_diffs());
                }
                Ok(merge_sorted(parts))
            },
            || StateError("a normalising thread panicked".into()),
        )?;
        let normalized_at = started.elapsed();
        let mut lists = normalized;
        lists.push(large);
        let diff = StateDiff { accounts: BTreeMap::from_iter(merge_sorted(lists)) };
        tracing::trace!(normalize_us = normalized_at.as_micros() as u64, collect_us = (started.elapsed() - normalized_at).as_micros() as u64, "diff");
        Ok(diff)
    }

    /// What the block so far changed in one account, as [`BlockOverlay::into_diff`] would give
    /// it (`None`: nothing, or the block has not written the account).
    pub fn account_diff(&self, address: &Address) -> Result<Option<AccountDiff>, StateError> {
        match self.shard(address).held(address) {
            Some(Held::Live(account)) => Normalizer { base: self.base, codes: &self.codes }.account(*address, account, 1),
            Some(Held::Settled(diff, _)) => Ok(Some(diff.clone())),
            None => Ok(None),
        }
    }
}

/// Merges lists sorted by address into one sorted list (addresses are distinct across lists:
/// each account lives in one shard).
fn merge_sorted<T>(mut lists: Vec<Vec<(Address, T)>>) -> Vec<(Address, T)> {
    lists.retain(|list| !list.is_empty());
    if lists.len() <= 1 {
        return lists.pop().unwrap_or_default();
    }
    let total = lists.iter().map(Vec::len).sum();
    let mut merged = Vec::with_capacity(total);
    merged.extend(MergeSorted::new(lists));
    merged
}

/// The first eight bytes of an address as a number: comparing these orders most pairs of
/// addresses without comparing all twenty bytes.
fn address_prefix(address: &Address) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&address.0 .0[..8]);
    u64::from_be_bytes(word)
}

/// One list of [`MergeSorted`]: the prefix of its next address, the next entry, the rest.
type SortedList<T> = (u64, (Address, T), std::vec::IntoIter<(Address, T)>);

/// Merges lists sorted by address, each list's next entry kept out with its address's prefix.
struct MergeSorted<T> {
    /// The lists not yet exhausted.
    lists: Vec<SortedList<T>>,
}

impl<T> MergeSorted<T> {
    fn new(lists: Vec<Vec<(Address, T)>>) -> Self {
        let lists = lists
            .into_iter()
            .filter_map(|list| {
                let mut rest = list.into_iter();
                let next = rest.next()?;
                Some((address_prefix(&next.0), next, rest))
            })
            .collect();
        Self { lists }
    }
}

impl<T> Iterator for MergeSorted<T> {
    type Item = (Address, T);

    fn next(&mut self) -> Option<(Address, T)> {
        let mut lowest = 0;
        for index in 1..self.lists.len() {
            let (candidate, low) = (&self.lists[index], &self.lists[lowest]);
            if candidate.0 < low.0 || (candidate.0 == low.0 && candidate.1 .0 < low.1 .0) {
                lowest = index;
            }
        }
        let (prefix, next, rest) = self.lists.get_mut(lowest)?;
        match rest.next() {
            Some(following) => {
                *prefix = address_prefix(&following.0);
                Some(std::mem::replace(next, following))
            }
            None => Some(self.lists.swap_remove(lowest).1),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.lists.iter().map(|(_, _, rest)| rest.len() + 1).sum();
        (left, Some(left))
    }
}

/// Whether the diff says an account's storage from before the block is gone (`cleared`: the
/// block wiped it; an account that did not exist had none), and whether its written slots are
/// compared with zero rather than with their values before the block.
fn storage_rule(cleared: bool, before: &Option<Fields>) -> (bool, bool) {
    let storage_cleared = cleared && before.is_some();
    (storage_cleared, storage_cleared || before.is_none())
}

/// Turns overlay entries into what really changed against the pre-block state.
struct Normalizer<'n, S> {
    base: &'n S,
    codes: &'n HashMap<B256, Bytecode>,
}

impl<S: StateSource> Normalizer<'_, S> {
    /// The changes of one shard, sorted by address.
    fn shard(&self, shard: IndexMap<Address, OverlayAccount>) -> Result<Vec<(Address, AccountDiff)>, StateError> {
        // Sorting the addresses with their positions moves 24 bytes per account; sorting the
        // diffs themselves moved each large diff several times.
        let mut order: Vec<(Address, usize)> = shard.keys().enumerate().map(|(index, address)| (*address, index)).collect();
        order.sort_unstable();
        let mut changed = Vec::with_capacity(shard.len());
        for (address, index) in order {
            if let Some((_, account)) = shard.get_index(index) {
                if let Some(diff) = self.account(address, account, 1)? {
                    changed.push((address, diff));
                }
            }
        }
        Ok(changed)
    }

    /// The account's fields before the block.
    fn before(&self, address: Address, account: &OverlayAccount) -> Result<Option<Fields>, StateError> {
        Ok(match account.known_before {
            Some(known) => known,
            None => self.base.basic_ref(address)?.as_ref().map(Fields::of),
        })
    }

    /// The slots among `slots` whose value differs from the one before the block (zero, where
    /// `against_zero`: the storage from before is gone, or there was no account), in any order.
    fn changed_slots(&self, address: Address, slots: impl Iterator<Item = (U256, U256)>, against_zero: bool) -> Result<Vec<(U256, U256)>, StateError> {
        let mut changed = Vec::with_capacity(slots.size_hint().0);
        for (slot, value) in slots {
            let unchanged = if against_zero { value.is_zero() } else { value == self.base.storage_ref(address, slot)? };
            if !unchanged {
                changed.push((slot, value));
            }
        }
        Ok(changed)
    }

    /// What the block changed in one account; its slots are compared on `threads` threads
    /// (thread `t` takes the slots at positions `t`, `t + threads`, ... of the map), which pays
    /// only for an account with many written slots.
    fn account(&self, address: Address, account: &OverlayAccount, threads: usize) -> Result<Option<AccountDiff>, StateError> {
        let before = self.before(address, account)?;
        self.diff(account.info.as_ref(), account.storage_cleared, before, |against_zero| {
            let part = |t: usize| self.changed_slots(address, account.storage.iter().skip(t).step_by(threads.max(1)).map(|(slot, value)| (*slot, *value)), against_zero);
            if threads <= 1 {
                return part(0);
            }
            let parts = crate::threads::map_on_threads(
                (0..threads).collect(),
                |t| {
                    let mut changed = part(t)?;
                    changed.sort_unstable_by_key(|(slot, _)| *slot);
                    Ok(changed)
                },
                || StateError("a normalising thread panicked".into()),
            )?;
            Ok(parts.into_iter().flatten().collect())
        })
    }

    /// The diff of an account from `after` (its fields after the block), `cleared` (the block
    /// wiped its storage from before) and `before` (its fields before the block). `changed`
    /// gives its written slots whose values changed, compared with zero where it is told so (the
    /// storage from before is gone, or there was no account); it is asked only when the account
    /// exists after the block.
    fn diff(
        &self,
        after: Option<&AccountInfo>,
        cleared: bool,
        before: Option<Fields>,
        changed: impl FnOnce(bool) -> Result<Vec<(U256, U256)>, StateError>,
    ) -> Result<Option<AccountDiff>, StateError> {
        let (storage_cleared, against_zero) = storage_rule(cleared, &before);
        // Built from a list in one pass (the map sorts it first; sorted parts it only merges):
        // inserting the slots one by one costs a search each, which on a token's tens of
        // thousands of balances was most of the diff.
        let storage = if after.is_some() { BTreeMap::from_iter(changed(against_zero)?) } else { BTreeMap::new() };
        Ok(self.finish(after, before, storage_cleared, storage))
    }

    /// The account's diff from its fields after the block and its normalised storage: `None`
    /// where nothing changed.
    fn finish(&self, after: Option<&AccountInfo>, before: Option<Fields>, storage_cleared: bool, storage: BTreeMap<U256, U256>) -> Option<AccountDiff> {
        let info = after.map(|info| {
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
            return None;
        }
        Some(AccountDiff { info, storage_cleared, storage })
    }
}

impl<S: StateSource> DatabaseRef for BlockOverlay<'_, S> {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        match self.shard(&address).info(&address) {
            Some(info) => Ok(info),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An address from a fixed first eight bytes and a distinguishing tail.
    fn address(prefix: u64, tail: u64) -> Address {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&prefix.to_be_bytes());
        bytes[12..].copy_from_slice(&tail.to_be_bytes());
        Address::from(bytes)
    }

    #[test]
    fn merged_lists_come_out_in_address_order() {
        // Addresses that share their first eight bytes are ordered by the rest; lists of
        // different lengths, one empty, interleaved.
        let mut all: Vec<Address> = Vec::new();
        for prefix in [0u64, 1, 1 << 63, u64::MAX] {
            for tail in [0u64, 5, 9, u64::MAX] {
                all.push(address(prefix, tail));
            }
        }
        let mut lists: Vec<Vec<(Address, usize)>> = vec![Vec::new(); 5];
        for (position, address) in all.iter().enumerate() {
            lists[(position * 7 + position / 3) % 4].push((*address, position));
        }
        for list in &mut lists {
            list.sort();
        }
        let merged = merge_sorted(lists);
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(merged.iter().map(|(address, _)| *address).collect::<Vec<_>>(), expected);
        // Each entry keeps its value.
        assert!(merged.iter().all(|(address, position)| all[*position] == *address));
        assert!(merge_sorted::<u8>(vec![Vec::new(), Vec::new()]).is_empty());
    }

    /// Writes into an overlay over `state`: a token-like account with `slots` slots written
    /// (a third set back to their pre-block values, a third to zero, a third changed), an
    /// account whose storage is wiped and rewritten, and many plain accounts.
    fn block_writes(state: &crate::InMemoryState, slots: u64) -> BlockOverlay<'_, crate::InMemoryState> {
        let mut overlay = BlockOverlay::new(state, SpecId::CANCUN);
        let token = address(7, 7);
        for slot in 0..slots {
            let value = match slot % 3 {
                0 => U256::from(slot + 1),
                1 => U256::ZERO,
                _ => U256::from(slot * 1_000),
            };
            overlay.set_storage(token, U256::from(slot), value).expect("in memory");
        }
        let wiped = address(8, 8);
        overlay.clear_storage(wiped).expect("in memory");
        for slot in 0..slots {
            overlay.set_storage(wiped, U256::from(slot), U256::from(slot % 2)).expect("in memory");
        }
        for n in 0..5_000u64 {
            let info = crate::state::account_info(U256::from(n + 1), 1, KECCAK_EMPTY, None);
            overlay.set_info(address(1_000 + n, n), Some(info)).expect("in memory");
        }
        overlay
    }

    #[test]
    fn a_large_account_split_over_threads_gives_the_same_diff() {
        let mut state = crate::InMemoryState::new();
        for (account, slots) in [(address(7, 7), 9_000u64), (address(8, 8), 9_000)] {
            let storage = (0..slots).map(|slot| (U256::from(slot), U256::from(slot + 1))).collect();
            state.insert_account(account, crate::state::InMemoryAccount { balance: U256::from(1), storage, ..Default::default() });
        }
        let one = block_writes(&state, 9_000).into_diff_on(1).expect("in memory");
        let two = block_writes(&state, 9_000).into_diff_on(2).expect("in memory");
        let three = block_writes(&state, 9_000).into_diff_on(3).expect("in memory");
        assert_eq!(one, two);
        assert_eq!(one, three);
        // What the diff holds, counted independently of the normaliser: slots set back to their
        // value are gone; of the wiped account, the non-zero ones remain.
        let token = &one.accounts[&address(7, 7)];
        assert_eq!(token.storage.len(), 6_000);
        assert_eq!(token.storage.get(&U256::from(1)), Some(&U256::ZERO));
        assert!(!token.storage.contains_key(&U256::from(3)));
        let wiped = &one.accounts[&address(8, 8)];
        assert!(wiped.storage_cleared);
        assert_eq!(wiped.storage.len(), 4_500);
        assert_eq!(one.accounts.len(), 5_002);
    }

    #[test]
    fn fields_known_before_count_only_for_an_account_the_block_has_not_written() {
        // A writer that read an account from the block so far (an earlier run of the block wrote
        // it) passes what it read; the diff must still compare with the pre-block state.
        let (earlier, fresh) = (address(1, 1), address(2, 2));
        let mut state = crate::InMemoryState::new();
        for account in [earlier, fresh] {
            state.insert_account(account, crate::state::InMemoryAccount { balance: U256::from(5), ..Default::default() });
        }
        let info = |balance: u64, nonce: u64| crate::state::account_info(U256::from(balance), nonce, KECCAK_EMPTY, None);
        let mut overlay = BlockOverlay::new(&state, SpecId::CANCUN);
        overlay.set_info(earlier, Some(info(7, 1))).expect("in memory");
        {
            let (mut writers, _) = overlay.shard_writers(1);
            let writer = &mut writers[0];
            // The earlier write is what the writer saw; it writes the same fields again.
            assert_eq!(writer.basic_known(earlier).expect("in memory"), (Some(info(7, 1)), None));
            writer.set_info_known(earlier, Some(info(7, 1)), Some(Fields::of(&info(7, 1)))).expect("in memory");
            // Not written before: the pre-block fields come back, and are taken as known.
            let (found, known) = writer.basic_known(fresh).expect("in memory");
            assert_eq!((found, known), (Some(info(5, 0)), Some(Some(Fields::of(&info(5, 0))))));
            writer.set_info_known(fresh, Some(info(9, 0)), Some(Fields::of(&info(5, 0)))).expect("in memory");
        }
        let diff = overlay.into_diff().expect("in memory");
        let balance = |account: &Address| diff.accounts.get(account).and_then(|d| d.info.as_ref()).map(|i| (i.balance, i.nonce));
        assert_eq!(balance(&earlier), Some((U256::from(7), 1)), "changed against the pre-block state");
        assert_eq!(balance(&fresh), Some((U256::from(9), 0)));
        assert_eq!(diff.accounts.len(), 2);
    }

    #[test]
    fn settled_accounts_read_write_and_diff_like_written_ones() {
        let (a, b, c, d) = (address(1, 1), address(2, 2), address(3, 3), address(4, 4));
        let mut state = crate::InMemoryState::new();
        let storage = |pairs: &[(u64, u64)]| pairs.iter().map(|(k, v)| (U256::from(*k), U256::from(*v))).collect();
        state.insert_account(a, crate::state::InMemoryAccount { balance: U256::from(5), storage: storage(&[(1, 10), (2, 20)]), ..Default::default() });
        state.insert_account(c, crate::state::InMemoryAccount { balance: U256::from(3), storage: storage(&[(1, 4)]), ..Default::default() });
        state.insert_account(d, crate::state::InMemoryAccount { balance: U256::from(8), storage: storage(&[(1, 1)]), ..Default::default() });
        let info = |balance: u64| Some(crate::state::account_info(U256::from(balance), 0, KECCAK_EMPTY, None));
        let before = |address: Address| state.basic_ref(address).expect("in memory").as_ref().map(Fields::of);
        // What the run wrote: `a` a new balance, one slot changed and one set back to its
        // value; `b` created with a slot; `c` wiped and given a new slot; `d` deleted.
        type Written = (Address, Option<AccountInfo>, bool, Vec<(u64, u64)>);
        let writes: Vec<Written> =
            vec![(a, info(6), false, vec![(1, 11), (2, 20)]), (b, info(1), false, vec![(0, 7)]), (c, info(3), true, vec![(5, 9)]), (d, None, true, vec![])];

        let mut written = BlockOverlay::new(&state, SpecId::CANCUN);
        for (address, after, cleared, slots) in &writes {
            if *cleared {
                written.clear_storage(*address).expect("in memory");
            }
            written.set_info(*address, after.clone()).expect("in memory");
            for (slot, value) in slots {
                written.set_storage(*address, U256::from(*slot), U256::from(*value)).expect("in memory");
            }
        }
        let mut settled = BlockOverlay::new(&state, SpecId::CANCUN);
        {
            let (mut writers, _) = settled.shard_writers(1);
            let writer = &mut writers[0];
            let mut per_shard: Vec<Vec<(Address, SettledAccount)>> = (0..OVERLAY_SHARDS).map(|_| Vec::new()).collect();
            for (address, after, cleared, slots) in &writes {
                let slots = slots.iter().map(|(slot, value)| (U256::from(*slot), U256::from(*value)));
                let normalized = writer.normalize(*address, after.as_ref(), *cleared, before(*address), slots).expect("in memory");
                per_shard[shard_of(address)].push((*address, normalized.expect("every account changed")));
            }
            for (index, accounts) in per_shard.into_iter().enumerate() {
                assert!(writer.can_settle(index));
                let any = !accounts.is_empty();
                writer.settle(index, accounts).expect("owned");
                // A shard settles once: a second run's accounts go into the map.
                assert_eq!(writer.can_settle(index), !any);
            }
            assert!(writer.holds(&a) && writer.holds(&d) && !writer.holds(&address(9, 9)));
        }
        let same_reads = |one: &BlockOverlay<'_, crate::InMemoryState>, two: &BlockOverlay<'_, crate::InMemoryState>| {
            for address in [a, b, c, d, address(9, 9)] {
                let fields = |overlay: &BlockOverlay<'_, crate::InMemoryState>| overlay.basic_ref(address).expect("in memory").as_ref().map(Fields::of);
                assert_eq!(fields(one), fields(two), "{address}");
                for slot in 0..7u64 {
                    assert_eq!(one.storage_ref(address, U256::from(slot)).expect("in memory"), two.storage_ref(address, U256::from(slot)).expect("in memory"), "{address} slot {slot}");
                }
                assert_eq!(one.account_diff(&address).expect("in memory"), two.account_diff(&address).expect("in memory"), "{address}");
            }
        };
        same_reads(&written, &settled);
        // Read back from the settled `c`: the wiped slot is zero, the new one is there.
        assert_eq!(settled.storage_ref(c, U256::from(1)).expect("in memory"), U256::ZERO);
        assert_eq!(settled.storage_ref(c, U256::from(5)).expect("in memory"), U256::from(9));
        assert_eq!(settled.storage_ref(a, U256::from(2)).expect("in memory"), U256::from(20));
        // Later writes move settled accounts back into the map.
        for overlay in [&mut written, &mut settled] {
            overlay.increment_balance(a, U256::from(1)).expect("in memory");
            overlay.set_storage(a, U256::from(2), U256::ZERO).expect("in memory");
            overlay.set_storage(c, U256::from(6), U256::from(1)).expect("in memory");
            overlay.set_storage(b, U256::from(0), U256::ZERO).expect("in memory");
        }
        same_reads(&written, &settled);
        let written = written.into_diff_on(2).expect("in memory");
        assert_eq!(written, settled.into_diff_on(2).expect("in memory"));
        // Checked against values worked out by hand.
        assert_eq!(written.accounts[&a].info.as_ref().map(|state| state.balance), Some(U256::from(7)));
        let sorted = |pairs: &[(u64, u64)]| pairs.iter().map(|(k, v)| (U256::from(*k), U256::from(*v))).collect::<BTreeMap<_, _>>();
        assert_eq!(written.accounts[&a].storage, sorted(&[(1, 11), (2, 0)]));
        assert!(written.accounts[&b].storage.is_empty());
        assert!(written.accounts[&c].storage_cleared);
        assert_eq!(written.accounts[&c].storage, sorted(&[(5, 9), (6, 1)]));
        assert!(written.accounts[&d].info.is_none());
    }
}
