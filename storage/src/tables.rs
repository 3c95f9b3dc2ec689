//! Column families and the layout of their keys.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `accounts` | address | [`crate::codec::StoredAccount`] with storage root (schema 2) |
//! | `storage` | address ‖ slot | value, big-endian without leading zeros |
//! | `code` | code hash | bytecode |
//! | `hashed_accounts` | keccak(address) | [`crate::codec::StoredAccount`] with storage root |
//! | `hashed_storage` | keccak(address) ‖ keccak(slot) | value |
//! | `account_trie` | path, one byte per nibble | stored branch node |
//! | `storage_trie` | keccak(address) ‖ path | stored branch node |
//! | `headers` | block hash | header RLP |
//! | `bodies` | block hash | body RLP (transactions, ommers, withdrawals) |
//! | `receipts` | block hash | RLP list of EIP-2718 receipts |
//! | `tx_lookup` | transaction hash | block number ‖ index (u32) |
//! | `hash_to_number` | block hash | block number |
//! | `canonical` | block number | block hash |
//! | `changesets` | block number | addresses and slots the block changed |
//! | `account_history` | address ‖ block number | the account before that block |
//! | `storage_history` | address ‖ slot ‖ block number | the slot before that block |
//! | `meta` | name | schema version, chain, head, safe, finalized |
//!
//! Numbers are big-endian so that keys sort by number.

use alloy_primitives::{Address, B256, U256};

/// Every column family, in the order they are created.
pub const ALL: &[&str] = &[
    ACCOUNTS,
    STORAGE,
    CODE,
    HASHED_ACCOUNTS,
    HASHED_STORAGE,
    ACCOUNT_TRIE,
    STORAGE_TRIE,
    HEADERS,
    BODIES,
    RECEIPTS,
    TX_LOOKUP,
    HASH_TO_NUMBER,
    CANONICAL,
    CHANGESETS,
    ACCOUNT_HISTORY,
    STORAGE_HISTORY,
    META,
];

/// The column families of the head state and its trie, read on every block.
pub const STATE: &[&str] = &[ACCOUNTS, STORAGE, HASHED_ACCOUNTS, HASHED_STORAGE, ACCOUNT_TRIE, STORAGE_TRIE];

/// The tables the state-root walk reads in key ranges (leaves and trie nodes, by hashed key and
/// by path), as opposed to the plain tables the executor reads one key at a time.
pub const WALKED: &[&str] = &[HASHED_ACCOUNTS, HASHED_STORAGE, ACCOUNT_TRIE, STORAGE_TRIE];

/// Plain accounts by address.
pub const ACCOUNTS: &str = "accounts";
/// Plain storage slots by address and slot.
pub const STORAGE: &str = "storage";
/// Bytecode by hash.
pub const CODE: &str = "code";
/// Accounts by hashed address, with their storage root: the leaves of the state trie.
pub const HASHED_ACCOUNTS: &str = "hashed_accounts";
/// Storage slots by hashed address and hashed slot: the leaves of the storage tries.
pub const HASHED_STORAGE: &str = "hashed_storage";
/// Branch nodes of the account trie.
pub const ACCOUNT_TRIE: &str = "account_trie";
/// Branch nodes of the storage tries.
pub const STORAGE_TRIE: &str = "storage_trie";
/// Headers by hash.
pub const HEADERS: &str = "headers";
/// Bodies by block hash.
pub const BODIES: &str = "bodies";
/// Receipts by block hash.
pub const RECEIPTS: &str = "receipts";
/// Transaction hash to block number and index.
pub const TX_LOOKUP: &str = "tx_lookup";
/// Block hash to number.
pub const HASH_TO_NUMBER: &str = "hash_to_number";
/// Canonical block number to hash.
pub const CANONICAL: &str = "canonical";
/// Per block: the keys it changed.
pub const CHANGESETS: &str = "changesets";
/// Account values before each block that changed them.
pub const ACCOUNT_HISTORY: &str = "account_history";
/// Slot values before each block that changed them.
pub const STORAGE_HISTORY: &str = "storage_history";
/// Metadata.
pub const META: &str = "meta";

/// Metadata key: schema version (u32).
pub const META_SCHEMA: &[u8] = b"schema";
/// Metadata key: chain id (u64) ‖ genesis hash.
pub const META_CHAIN: &[u8] = b"chain";
/// Metadata key: head number ‖ hash.
pub const META_HEAD: &[u8] = b"head";
/// Metadata key: safe block number ‖ hash.
pub const META_SAFE: &[u8] = b"safe";
/// Metadata key: finalized block number ‖ hash.
pub const META_FINALIZED: &[u8] = b"finalized";

/// Metadata key prefix, followed by a block hash: the senders of that block's transactions that
/// do not come from their signatures (dev-mode impersonation), as (index u32 ‖ address) entries.
pub const META_SENDERS: &[u8] = b"senders:";

/// Metadata key of a block's sender overrides.
pub fn senders_key(block_hash: &B256) -> Vec<u8> {
    [META_SENDERS, block_hash.as_slice()].concat()
}

/// Key of a plain storage slot.
pub fn storage_key(address: &Address, slot: &U256) -> [u8; 52] {
    let mut key = [0u8; 52];
    key[..20].copy_from_slice(address.as_slice());
    key[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    key
}

/// Key of a hashed storage slot.
pub fn hashed_storage_key(hashed_address: &B256, hashed_slot: &B256) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(hashed_address.as_slice());
    key[32..].copy_from_slice(hashed_slot.as_slice());
    key
}

/// Key of an account's history entry.
pub fn account_history_key(address: &Address, block: u64) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(address.as_slice());
    key[20..].copy_from_slice(&block.to_be_bytes());
    key
}

/// Key of a slot's history entry.
pub fn storage_history_key(address: &Address, slot: &U256, block: u64) -> [u8; 60] {
    let mut key = [0u8; 60];
    key[..52].copy_from_slice(&storage_key(address, slot));
    key[52..].copy_from_slice(&block.to_be_bytes());
    key
}

/// Key of a transaction lookup value / block number key.
pub fn number_key(number: u64) -> [u8; 8] {
    number.to_be_bytes()
}

/// The smallest key greater than every key that starts with `prefix` (for range deletes and
/// bounded iteration): `prefix` followed by more `0xff` bytes than any of our keys has.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&[0xff; 72]);
    end
}
