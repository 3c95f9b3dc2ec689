//! Shared helpers of the storage tests: a deterministic generator of random blocks of state
//! changes, a genesis, commits of bare blocks, and read comparisons against a reference.

#![allow(dead_code)]

use alloy_consensus::{Block, BlockBody, Header, TxEnvelope};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use pseq_executor::{
    revm::{bytecode::Bytecode, database::DatabaseRef, primitives::KECCAK_EMPTY},
    AccountDiff, AccountState, InMemoryState, StateDiff,
};
use pseq_storage::{GenesisAccount, Storage};
use std::collections::BTreeMap;

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const ADDRESSES: u64 = 48;
pub const SLOTS: u64 = 24;

pub fn address(i: u64) -> Address {
    Address::with_last_byte(i as u8 + 1)
}

pub fn code(i: u64) -> Bytes {
    Bytes::from(vec![0x60, i as u8, 0x60, 0x00, 0x55, 0x00])
}

/// A random block's worth of changes on top of `state`.
pub fn random_diff(rng: &mut Rng, state: &impl DatabaseRef<Error = pseq_executor::StateError>) -> StateDiff {
    let mut diff = StateDiff::default();
    for _ in 0..1 + rng.below(12) {
        let a = rng.below(ADDRESSES);
        let address = address(a);
        let existing = state.basic_ref(address).unwrap();
        let change = match rng.below(10) {
            0 => AccountDiff { info: None, storage_cleared: true, storage: BTreeMap::new() },
            kind => {
                let (code_hash, code) = match (&existing, a % 3) {
                    (Some(info), _) => (info.code_hash, None),
                    (None, 0) => {
                        let code = code(a);
                        (keccak256(&code), Some(Bytecode::new_raw(code)))
                    }
                    (None, _) => (KECCAK_EMPTY, None),
                };
                let mut storage = BTreeMap::new();
                for _ in 0..rng.below(8) {
                    let value = if rng.below(4) == 0 { U256::ZERO } else { U256::from(rng.next()) };
                    storage.insert(U256::from(rng.below(SLOTS)) << (8 * rng.below(3)), value);
                }
                let info = AccountState {
                    balance: U256::from(rng.next() % 1_000_000),
                    nonce: existing.as_ref().map_or(0, |i| i.nonce) + rng.below(2),
                    code_hash,
                    code,
                };
                AccountDiff { info: Some(info), storage_cleared: kind == 1, storage }
            }
        };
        diff.accounts.insert(address, change);
    }
    diff
}

pub fn genesis(rng: &mut Rng) -> (Vec<(Address, GenesisAccount)>, InMemoryState, Header) {
    let mut alloc = Vec::new();
    let mut state = InMemoryState::new();
    for a in 0..ADDRESSES / 2 {
        let mut account = GenesisAccount { balance: U256::from(rng.next()), nonce: rng.below(3), ..Default::default() };
        if a % 4 == 0 {
            account.code = code(a);
            for s in 0..rng.below(SLOTS) {
                account.storage.insert(U256::from(s), U256::from(rng.next()));
            }
        }
        alloc.push((address(a), account));
    }
    let diff = StateDiff {
        accounts: alloc
            .iter()
            .map(|(address, account)| {
                let (code_hash, code) = if account.code.is_empty() {
                    (KECCAK_EMPTY, None)
                } else {
                    (keccak256(&account.code), Some(Bytecode::new_raw(account.code.clone())))
                };
                let info = AccountState { balance: account.balance, nonce: account.nonce, code_hash, code };
                (*address, AccountDiff { info: Some(info), storage_cleared: false, storage: account.storage.clone() })
            })
            .collect(),
    };
    state.apply_diff(&diff);
    let header = Header { state_root: state.state_root(), gas_limit: 30_000_000, ..Default::default() };
    (alloc, state, header)
}

/// Commits `diff` as the next block; returns the new hash.
pub fn commit(storage: &Storage, diff: &StateDiff, timestamp: u64) -> B256 {
    let (number, parent_hash) = storage.head();
    let update = storage.prepare_state(diff).unwrap();
    let header = Header { number: number + 1, parent_hash, state_root: update.state_root, timestamp, gas_limit: 30_000_000, ..Default::default() };
    let block = Block { header, body: BlockBody::<TxEnvelope>::default() };
    storage.commit_block(&block, &[], update).unwrap().hash
}

/// Every account and slot the test can touch reads the same from both.
pub fn assert_same_reads(view: &impl DatabaseRef<Error = pseq_executor::StateError>, reference: &impl DatabaseRef<Error = pseq_executor::StateError>, context: &str) {
    for a in 0..ADDRESSES {
        let address = address(a);
        let ours = view.basic_ref(address).unwrap();
        let theirs = reference.basic_ref(address).unwrap();
        assert_eq!(ours.as_ref().map(|i| (i.balance, i.nonce, i.code_hash)), theirs.as_ref().map(|i| (i.balance, i.nonce, i.code_hash)), "{context}: account {address}");
        if let Some(info) = &ours {
            if info.code_hash != KECCAK_EMPTY {
                assert_eq!(view.code_by_hash_ref(info.code_hash).unwrap().original_bytes(), reference.code_by_hash_ref(info.code_hash).unwrap().original_bytes());
            }
        }
        for s in 0..SLOTS {
            for shift in 0..3 {
                let slot = U256::from(s) << (8 * shift);
                assert_eq!(view.storage_ref(address, slot).unwrap(), reference.storage_ref(address, slot).unwrap(), "{context}: {address} slot {slot}");
            }
        }
    }
}

