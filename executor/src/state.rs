//! The read-only state the executor runs on, and a plain in-memory implementation of it.

use crate::error::StateError;
use alloy_primitives::{keccak256, map::HashMap, Address, B256, U256};
use revm::{
    bytecode::Bytecode,
    database::DatabaseRef,
    primitives::KECCAK_EMPTY,
    state::AccountInfo,
};

/// A read-only view of the state a block executes on: accounts, code by hash, storage slots and
/// ancestor block hashes. Worker threads of the parallel executor share it, hence `Sync`.
///
/// Implementations return the account's code inside [`AccountInfo::code`] where they can: it
/// spares a second lookup through `code_by_hash_ref`.
pub trait StateSource: DatabaseRef<Error = StateError> + Send + Sync {}

impl<T: DatabaseRef<Error = StateError> + Send + Sync> StateSource for T {}

thread_local! {
    /// This thread's copy of the empty bytecode (a lone STOP, as revm's default).
    static EMPTY_CODE: Bytecode = {
        // SAFETY: one STOP opcode with an original length of zero and an empty jump table is
        // exactly revm's default bytecode (`Bytecode::new`): padded, nothing to jump to.
        unsafe { Bytecode::new_analyzed(revm::primitives::Bytes::from_static(&[0x00]), 0, Default::default()) }
    };
}

/// The code of an account without code, for [`AccountInfo::code`].
///
/// revm's `Bytecode::default()` clones one process-wide reference-counted value: every account
/// loaded, and every caller checked, increments and decrements the same counter, and two threads
/// executing transactions in parallel bounce its cache line between their cores. This copy is
/// per thread, equal in content (same bytes, same hash, same behaviour).
pub fn empty_code() -> Bytecode {
    EMPTY_CODE.with(Bytecode::clone)
}

/// An [`AccountInfo`] with its code (an account without code gets [`empty_code`], so that revm
/// never reaches for its shared default). Built field by field: `..Default::default()` would
/// build and drop a clone of revm's shared default code.
pub fn account_info(balance: U256, nonce: u64, code_hash: B256, code: Option<Bytecode>) -> AccountInfo {
    let code = match code {
        Some(code) => Some(code),
        None if code_hash == KECCAK_EMPTY => Some(empty_code()),
        None => None,
    };
    AccountInfo { balance, nonce, code_hash, account_id: None, code }
}

/// One account of an [`InMemoryState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InMemoryAccount {
    /// Balance in wei.
    pub balance: U256,
    /// Transaction count (or creation count for contracts).
    pub nonce: u64,
    /// Runtime code; empty for an account without code.
    pub code: Option<Bytecode>,
    /// Non-zero storage slots.
    pub storage: HashMap<U256, U256>,
}

/// A whole state held in hash maps: test fixtures, replayed blocks, benchmarks.
#[derive(Debug, Clone, Default)]
pub struct InMemoryState {
    accounts: HashMap<Address, (AccountInfo, HashMap<U256, U256>)>,
    codes: HashMap<B256, Bytecode>,
    block_hashes: HashMap<u64, B256>,
}

impl InMemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces) an account with its code and storage.
    pub fn insert_account(&mut self, address: Address, account: InMemoryAccount) {
        let (code_hash, code) = match account.code {
            Some(code) if !code.is_empty() => {
                let hash = code.hash_slow();
                self.codes.insert(hash, code.clone());
                (hash, Some(code))
            }
            _ => (KECCAK_EMPTY, None),
        };
        let info = AccountInfo { balance: account.balance, nonce: account.nonce, code_hash, account_id: None, code };
        let storage = account.storage.into_iter().filter(|(_, v)| !v.is_zero()).collect();
        self.accounts.insert(address, (info, storage));
    }

    /// Sets the hash returned for ancestor block `number` (the BLOCKHASH opcode).
    pub fn insert_block_hash(&mut self, number: u64, hash: B256) {
        self.block_hashes.insert(number, hash);
    }

    /// Number of accounts held.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether the state holds no account.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Iterates over every account: address, info (code attached) and storage.
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &AccountInfo, &HashMap<U256, U256>)> {
        self.accounts.iter().map(|(a, (i, s))| (a, i, s))
    }

    /// The Merkle-Patricia state root of the whole state, computed from scratch.
    pub fn state_root(&self) -> B256 {
        let accounts = self.accounts.iter().map(|(address, (info, storage))| {
            let storage_root =
                alloy_trie::root::storage_root_unhashed(storage.iter().map(|(slot, value)| (B256::from(*slot), *value)));
            let account = alloy_trie::TrieAccount {
                nonce: info.nonce,
                balance: info.balance,
                storage_root,
                code_hash: info.code_hash,
            };
            (*address, account)
        });
        alloy_trie::root::state_root_unhashed(accounts)
    }

    /// Applies a block's [`crate::StateDiff`], so the next block can run on top of it.
    pub fn apply_diff(&mut self, diff: &crate::StateDiff) {
        for (address, change) in &diff.accounts {
            let Some(state) = &change.info else {
                self.accounts.remove(address);
                continue;
            };
            let entry = self.accounts.entry(*address).or_default();
            if change.storage_cleared {
                entry.1.clear();
            }
            for (slot, value) in &change.storage {
                if value.is_zero() {
                    entry.1.remove(slot);
                } else {
                    entry.1.insert(*slot, *value);
                }
            }
            if let Some(code) = &state.code {
                self.codes.insert(state.code_hash, code.clone());
            }
            let code = if state.code_hash == KECCAK_EMPTY { None } else { self.codes.get(&state.code_hash).cloned() };
            entry.0 = AccountInfo { balance: state.balance, nonce: state.nonce, code_hash: state.code_hash, account_id: None, code };
        }
    }
}

impl DatabaseRef for InMemoryState {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        Ok(self.accounts.get(&address).map(|(info, _)| account_info(info.balance, info.nonce, info.code_hash, info.code.clone())))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        if code_hash == KECCAK_EMPTY {
            return Ok(empty_code());
        }
        self.codes.get(&code_hash).cloned().ok_or_else(|| StateError(format!("missing code {code_hash}")))
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StateError> {
        Ok(self.accounts.get(&address).and_then(|(_, s)| s.get(&index).copied()).unwrap_or_default())
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        // Unknown ancestors hash like revm's empty database does, so fixtures agree with revme.
        Ok(self.block_hashes.get(&number).copied().unwrap_or_else(|| keccak256(number.to_string().as_bytes())))
    }
}
