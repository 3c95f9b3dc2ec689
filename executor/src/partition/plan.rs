//! The plan of a partitioned run: which transactions go to which group, from what each
//! transaction says about itself (its sender, its recipient, the holder a recognised ERC-20
//! `transfer` pays), before anything executes.
//!
//! The plan is only a guess: a transaction may touch anything once it runs. Execution records
//! what each group really touched, and the merge checks it ([`super::merge`]). A wrong guess
//! costs a wasted run, never a wrong result.

use crate::{
    error::StateError,
    parallel::{lazy::is_special_address, tokens},
    state::StateSource,
};
use alloy_primitives::{map::HashMap, Address, TxKind, U256};
use revm::{context::TxEnv, primitives::KECCAK_EMPTY};

/// A recipient of at least this many plain transfers is credited lazily (its balance is not
/// read, so the transfers to it do not tie their senders together).
const HOT_RECIPIENT_TRANSFERS: u32 = 8;

/// How the transactions split into groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Each group's transactions (indexes into the run), in block order.
    pub groups: Vec<Vec<u32>>,
    /// Accounts without code that receive plain transfers from several groups: their balances
    /// are credited as deltas, folded in block order at the merge.
    pub lazy_recipients: Vec<Address>,
    /// Balances of recognised tokens that receive `transfer`s from several groups: credited as
    /// deltas ([`LazySlot`]).
    pub lazy_slots: Vec<LazySlot>,
    /// The sum of the transactions' gas limits in the heaviest group, over the ideal share.
    pub imbalance: f64,
}

/// A recognised token's balance slot that `transfer`s credit as deltas: the token uses the
/// recipient's balance only to add to it (and check the sum), and revm's gas for it depends only
/// on whether it is zero ([`crate::parallel::tokens`]). A transaction is given a value of the
/// right kind (zero or not) and its write becomes a credit, folded in block order at the merge,
/// where every kind given is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazySlot {
    /// The token.
    pub token: Address,
    /// The recipient's balance slot.
    pub slot: U256,
    /// The recipient.
    pub holder: Address,
    /// The first transaction (index in the run) that credits it: where the slot is zero before
    /// the run, that one is given zero and the others a non-zero value.
    pub first: u32,
}

/// Union-find over the nodes the [`Interner`] gave the keys (an account, or a token holder's
/// balance).
struct Components {
    parent: Vec<u32>,
}

impl Components {
    /// `nodes` nodes, each its own component.
    fn new(nodes: u32) -> Self {
        Self { parent: (0..nodes).collect() }
    }

    fn find(&mut self, mut node: u32) -> u32 {
        while self.parent[node as usize] != node {
            let grand = self.parent[self.parent[node as usize] as usize];
            self.parent[node as usize] = grand;
            node = grand;
        }
        node
    }

    fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            let (low, high) = if a < b { (a, b) } else { (b, a) };
            self.parent[high as usize] = low;
        }
    }
}

/// Numbers 64-bit keys densely, in the order they are first seen: an open-addressing table at
/// most half full. Keys are hashes: two keys that hash alike (about one chance in 2^64 / n^2)
/// only join transactions that did not need joining. On a large block the table outgrows the
/// cache, and a lookup would wait for memory before the next could start; the caller prefetches
/// the slots of keys a few places ahead instead ([`Interner::prefetch`]).
struct Interner {
    /// `(key, node)`; key 0 marks a free slot (a key of 0 is taken as 1).
    slots: Vec<(u64, u32)>,
    mask: usize,
    count: u32,
}

impl Interner {
    /// A table for up to `keys` distinct keys, at most half full.
    fn with_capacity(keys: usize) -> Self {
        let size = (keys * 2).next_power_of_two().max(16);
        Self { slots: vec![(0, 0); size], mask: size - 1, count: 0 }
    }

    fn home(&self, key: u64) -> usize {
        // The keys are hashes already, mixed in every bit.
        key as usize & self.mask
    }

    /// Asks the processor to bring `key`'s slot into the cache.
    fn prefetch(&self, key: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot = self.slots.as_ptr().wrapping_add(self.home(key));
            // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(slot.cast::<i8>()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    /// The node of `key`, a new one where it is the first time.
    fn intern(&mut self, key: u64) -> u32 {
        let key = key.max(1);
        let mut at = self.home(key);
        loop {
            let (held, node) = self.slots[at];
            if held == key {
                return node;
            }
            if held == 0 {
                self.slots[at] = (key, self.count);
                self.count += 1;
                return self.count - 1;
            }
            at = (at + 1) & self.mask;
        }
    }
}

/// A 64-bit hash of an address, seeded (keys of another kind get another seed).
fn hash_address(address: &Address, seed: u64) -> u64 {
    let bytes = &address.0 .0;
    let mut words = [0u64; 3];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut padded = [0u8; 8];
        padded[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(padded);
    }
    let mut h = seed ^ 0x243F_6A88_85A3_08D3;
    for word in words {
        // MurmurHash3's finaliser after each word: every input bit reaches every output bit.
        h ^= word;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
    }
    h
}

/// Whether `tx` could pay `to` as a plain transfer (whether `to` has code is checked later).
fn plain_transfer_to(tx: &TxEnv, to: &Address) -> bool {
    tx.value > U256::ZERO && *to != tx.caller && tx.authorization_list.is_empty() && !is_special_address(to)
}

/// No recipient node.
const NONE: u32 = u32::MAX;

/// The keys of one transaction, in the order they are interned: its sender, its recipient, and
/// for a recognised token's `transfer` the sender's and the recipient's balances.
struct Keys {
    sender: u64,
    recipient: Option<u64>,
    balances: Option<(u64, u64)>,
    /// The recipient is a token called otherwise than by a plain `transfer` between two holders.
    impure: bool,
}

impl Keys {
    /// The keys, in the order they are interned.
    fn each(&self) -> impl Iterator<Item = u64> {
        let balances = self.balances.map(|(from, to)| [from, to]);
        std::iter::once(self.sender).chain(self.recipient).chain(balances.into_iter().flatten())
    }
}

/// Places ahead whose keys are prefetched while interning.
const PREFETCH_AHEAD: usize = 8;

/// What the plan needs of one transaction.
struct Record {
    sender: u32,
    /// `NONE` for a creation.
    recipient: u32,
    /// A recognised token's `transfer`: the sender's and the recipient's balances.
    balances: Option<(u32, u32)>,
    /// Whether it could be a plain transfer to its recipient.
    plain: bool,
    gas: u64,
}

/// Splits `txs` into up to `groups` groups of transactions that, by their fields, touch
/// nothing in common, balanced by gas limit. `None` when the transactions do not split well
/// enough: the heaviest group would carry more than `max_imbalance` times its ideal share, or a
/// transaction's sender or recipient is the block's beneficiary (its balance takes every fee).
pub fn plan<S: StateSource>(base: &S, txs: &[TxEnv], beneficiary: Address, groups: usize, max_imbalance: f64) -> Result<Option<Plan>, StateError> {
    if groups < 2 || txs.len() < 2 {
        return Ok(None);
    }
    // A pass over the transactions: the keys of each one's sender, recipient and (for a
    // recognised token's `transfer`) the two balances. Then the keys become nodes, in the same
    // order, with the slots of later keys prefetched; then plain transfers per recipient, and
    // which nodes send. The passes after that read only the records.
    let mut keys: Vec<Keys> = Vec::with_capacity(txs.len());
    let mut records: Vec<Record> = Vec::with_capacity(txs.len());
    let mut token_kinds: HashMap<Address, Option<u64>> = HashMap::default();
    for tx in txs {
        if tx.caller == beneficiary {
            tracing::trace!(sender = %tx.caller, "the beneficiary sends");
            return Ok(None);
        }
        let mut key = Keys { sender: hash_address(&tx.caller, 0), recipient: None, balances: None, impure: false };
        let mut record = Record { sender: 0, recipient: NONE, balances: None, plain: false, gas: tx.gas_limit.max(1) };
        if let TxKind::Call(to) = tx.kind {
            if to == beneficiary {
                tracing::trace!(sender = %tx.caller, "a transaction pays the beneficiary");
                return Ok(None);
            }
            key.recipient = Some(hash_address(&to, 0));
            record.plain = plain_transfer_to(tx, &to);
            let transfer = tokens::decode_transfer(&tx.data);
            // Any other call to a token (a deposit, an approval) may write more than two
            // balances: its transfers are joined by the token's own account after all.
            key.impure = transfer.is_none();
            if let Some((holder, _)) = transfer {
                let known = match token_kinds.get(&to) {
                    Some(known) => *known,
                    None => {
                        let code_hash = base.basic_ref(to)?.map(|info| info.code_hash);
                        let known = code_hash.and_then(|hash| tokens::known_token(&hash)).map(|token| token.balances_slot);
                        token_kinds.insert(to, known);
                        known
                    }
                };
                if known.is_some() && holder != tx.caller {
                    let token = hash_address(&to, 1);
                    key.balances = Some((hash_address(&tx.caller, token), hash_address(&holder, token)));
                } else if known.is_some() {
                    key.impure = true;
                }
            }
        }
        keys.push(key);
        records.push(record);
    }
    let mut interner = Interner::with_capacity(keys.iter().map(|key| key.each().count()).sum());
    let mut impure_tokens: Vec<u32> = Vec::new();
    for index in 0..keys.len() {
        if let Some(ahead) = keys.get(index + PREFETCH_AHEAD) {
            ahead.each().for_each(|key| interner.prefetch(key));
        }
        let key = &keys[index];
        let record = &mut records[index];
        record.sender = interner.intern(key.sender);
        if let Some(recipient) = key.recipient {
            record.recipient = interner.intern(recipient);
            if key.impure {
                impure_tokens.push(record.recipient);
            }
        }
        record.balances = key.balances.map(|(from, to)| (interner.intern(from), interner.intern(to)));
    }
    drop(keys);
    let mut components = Components::new(interner.count);
    let nodes = components.parent.len();
    drop(interner);
    let mut transfers: Vec<u32> = vec![0; nodes];
    let mut sends: Vec<bool> = vec![false; nodes];
    let mut token_paid: Vec<u32> = vec![0; nodes];
    let mut token_sends: Vec<bool> = vec![false; nodes];
    for record in &records {
        if let Some((from, to)) = record.balances {
            token_sends[from as usize] = true;
            token_paid[to as usize] = token_paid[to as usize].saturating_add(1);
        }
        sends[record.sender as usize] = true;
        if record.plain {
            transfers[record.recipient as usize] = transfers[record.recipient as usize].saturating_add(1);
        }
    }
    // Join each transaction's keys, except a hot recipient's (many plain transfers, not a
    // sender, no code before the block) and a recognised token's own account.
    const UNKNOWN: u8 = 0;
    const LAZY: u8 = 1;
    const NOT_LAZY: u8 = 2;
    let mut hot = vec![UNKNOWN; components.parent.len()];
    let mut impure = vec![false; components.parent.len()];
    let mut lazy_balance = vec![false; components.parent.len()];
    let mut lazy_slots = Vec::new();
    for node in impure_tokens {
        impure[node as usize] = true;
    }
    let mut lazy_recipients = Vec::new();
    for (index, record) in records.iter().enumerate() {
        if record.recipient == NONE {
            continue;
        }
        let recipient = record.recipient as usize;
        if record.plain && transfers[recipient] >= HOT_RECIPIENT_TRANSFERS && !sends[recipient] {
            if hot[recipient] == UNKNOWN {
                let TxKind::Call(to) = txs[index].kind else { continue };
                let lazy = base.basic_ref(to)?.is_none_or(|info| info.code_hash == KECCAK_EMPTY);
                hot[recipient] = if lazy { LAZY } else { NOT_LAZY };
                if lazy {
                    lazy_recipients.push(to);
                }
            }
            if hot[recipient] == LAZY {
                continue;
            }
        }
        match record.balances {
            Some((from, to)) => {
                components.union(record.sender, from);
                let hot_balance = token_paid[to as usize] >= HOT_RECIPIENT_TRANSFERS && !token_sends[to as usize] && !impure[recipient];
                if hot_balance {
                    if !lazy_balance[to as usize] {
                        lazy_balance[to as usize] = true;
                        let tx = &txs[index];
                        if let (TxKind::Call(token), Some((holder, _))) = (tx.kind, tokens::decode_transfer(&tx.data)) {
                            if let Some(Some(balances_slot)) = token_kinds.get(&token) {
                                lazy_slots.push(LazySlot { token, slot: tokens::balance_slot(holder, *balances_slot), holder, first: index as u32 });
                            }
                        }
                    }
                } else {
                    components.union(record.sender, to);
                }
                if impure[recipient] {
                    components.union(record.sender, record.recipient);
                }
            }
            None => components.union(record.sender, record.recipient),
        }
    }
    // Component weights (gas limits), then groups: the heaviest components first onto the
    // lightest group, then the rest in any order onto the lightest group.
    let mut weight = vec![0u64; components.parent.len()];
    let mut roots = Vec::with_capacity(txs.len());
    for record in &records {
        let root = components.find(record.sender);
        weight[root as usize] = weight[root as usize].saturating_add(record.gas);
        roots.push(root);
    }
    let total: u64 = weight.iter().sum();
    let ideal = (total / groups as u64).max(1);
    let mut heavy: Vec<u32> = Vec::new();
    let mut light: Vec<u32> = Vec::new();
    for (root, w) in weight.iter().enumerate() {
        if *w > ideal / 8 {
            heavy.push(root as u32);
        } else if *w > 0 {
            light.push(root as u32);
        }
    }
    heavy.sort_by_key(|root| std::cmp::Reverse(weight[*root as usize]));
    let mut load = vec![0u64; groups];
    let mut group_of = vec![u8::MAX; components.parent.len()];
    for root in heavy.into_iter().chain(light) {
        let (lightest, _) = load.iter().enumerate().min_by_key(|(_, l)| **l).unwrap_or((0, &0));
        load[lightest] += weight[root as usize];
        group_of[root as usize] = lightest as u8;
    }
    let heaviest = load.iter().copied().max().unwrap_or(0);
    let imbalance = heaviest as f64 / (total as f64 / groups as f64);
    if imbalance > max_imbalance || load.iter().filter(|l| **l > 0).count() < 2 {
        tracing::trace!(imbalance, heaviest_component = weight.iter().max().copied().unwrap_or(0), total, "transactions do not split evenly");
        return Ok(None);
    }
    let mut planned: Vec<Vec<u32>> = load.iter().map(|l| Vec::with_capacity((txs.len() as u64 * l / total.max(1)) as usize + 1)).collect();
    for (index, root) in roots.iter().enumerate() {
        planned[group_of[*root as usize] as usize].push(index as u32);
    }
    Ok(Some(Plan { groups: planned, lazy_recipients, lazy_slots, imbalance }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InMemoryState;

    fn address(n: u64) -> Address {
        let mut bytes = [0u8; 20];
        bytes[0] = 0xaa;
        bytes[12..20].copy_from_slice(&n.to_be_bytes());
        Address::from(bytes)
    }

    fn call(from: u64, to: u64, value: u64) -> TxEnv {
        TxEnv { caller: address(from), kind: TxKind::Call(address(to)), value: U256::from(value), gas_limit: 100_000, ..Default::default() }
    }

    #[test]
    fn keys_are_numbered_densely_in_the_order_first_seen() {
        // Keys that share their home slot (the same low bits) probe onwards; 0 is taken as 1.
        let keys: Vec<u64> = vec![5, 5 + 64, 0, 1, 5, 7 + 128, 5 + 64, 9];
        let mut interner = Interner::with_capacity(keys.len());
        for key in &keys {
            interner.prefetch(*key);
        }
        let nodes: Vec<u32> = keys.iter().map(|key| interner.intern(*key)).collect();
        assert_eq!(nodes, vec![0, 1, 2, 2, 0, 3, 1, 4]);
        assert_eq!(interner.count, 5);
        // As many distinct keys as the table was made for, all colliding: each still gets its own node.
        let colliding: Vec<u64> = (1..=40u64).map(|i| i << 20).collect();
        let mut interner = Interner::with_capacity(colliding.len());
        let nodes: Vec<u32> = colliding.iter().map(|key| interner.intern(*key)).collect();
        assert_eq!(nodes, (0..40).collect::<Vec<u32>>());
        assert_eq!(colliding.iter().map(|key| interner.intern(*key)).collect::<Vec<u32>>(), nodes);
    }

    #[test]
    fn calls_to_separate_contracts_split_by_contract() {
        let state = InMemoryState::new();
        // 640 distinct senders calling 64 contracts in rotation: 64 components.
        let txs: Vec<TxEnv> = (0..640).map(|i| call(1_000 + i, i % 64, 0)).collect();
        let plan = plan(&state, &txs, address(999_999), 2, 1.5).unwrap().expect("splits");
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(plan.groups.iter().map(Vec::len).sum::<usize>(), 640);
        for group in &plan.groups {
            // A contract's callers all land in one group.
            let contracts: std::collections::HashSet<u64> = group.iter().map(|i| *i as u64 % 64).collect();
            assert_eq!(contracts.len() * 10, group.len());
        }
        assert!(plan.imbalance < 1.1, "{}", plan.imbalance);
    }

    #[test]
    fn a_chain_of_senders_is_one_component_and_a_hot_recipient_is_lazy() {
        let state = InMemoryState::new();
        // Each transaction pays the next sender: one chain, nothing to split.
        let chain: Vec<TxEnv> = (0..100).map(|i| call(i, i + 1, 1)).collect();
        assert_eq!(plan(&state, &chain, address(999_999), 2, 2.0).unwrap(), None);
        // Distinct senders all paying one account without code: it is credited lazily.
        let hot: Vec<TxEnv> = (0..100).map(|i| call(1_000 + i, 7, 1)).collect();
        let plan = plan(&state, &hot, address(999_999), 2, 1.5).unwrap().expect("splits");
        assert_eq!(plan.lazy_recipients, vec![address(7)]);
        // Paying the beneficiary ties every fee to the transfer: no plan.
        let to_beneficiary: Vec<TxEnv> = (0..100).map(|i| call(1_000 + i, 7, 1)).collect();
        assert_eq!(super::plan(&state, &to_beneficiary, address(7), 2, 1.5).unwrap(), None);
    }
}
