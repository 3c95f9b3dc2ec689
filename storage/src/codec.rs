//! Encodings of stored values: fixed layouts, checked on decode (a corrupt value is an error,
//! never a panic).

use crate::error::{Result, StorageError};
use alloy_primitives::{B256, U256};
use alloy_trie::{BranchNodeCompact, TrieAccount, TrieMask, EMPTY_ROOT_HASH};
use std::sync::Arc;

/// An account as stored: nonce, balance, code hash and (in the hashed table) its storage root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAccount {
    /// Nonce.
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// Hash of the code.
    pub code_hash: B256,
    /// Root of the account's storage trie.
    pub storage_root: B256,
}

const PLAIN_LEN: usize = 8 + 32 + 32;
const HASHED_LEN: usize = PLAIN_LEN + 32;

impl StoredAccount {
    /// Encodes nonce, balance and code hash (72 bytes).
    pub fn encode_plain(&self) -> [u8; PLAIN_LEN] {
        let mut out = [0u8; PLAIN_LEN];
        out[..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..40].copy_from_slice(&self.balance.to_be_bytes::<32>());
        out[40..72].copy_from_slice(self.code_hash.as_slice());
        out
    }

    /// Encodes every field, the storage root included (104 bytes).
    pub fn encode_full(&self) -> [u8; HASHED_LEN] {
        let mut out = [0u8; HASHED_LEN];
        out[..PLAIN_LEN].copy_from_slice(&self.encode_plain());
        out[PLAIN_LEN..].copy_from_slice(self.storage_root.as_slice());
        out
    }

    /// Decodes either layout; the plain one gets the empty storage root.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != PLAIN_LEN && bytes.len() != HASHED_LEN {
            return Err(StorageError::corrupt(format!("account value of {} bytes", bytes.len())));
        }
        let nonce = u64::from_be_bytes(bytes[..8].try_into().map_err(StorageError::corrupt)?);
        let balance = U256::from_be_slice(&bytes[8..40]);
        let code_hash = B256::from_slice(&bytes[40..72]);
        let storage_root = if bytes.len() == HASHED_LEN { B256::from_slice(&bytes[72..]) } else { EMPTY_ROOT_HASH };
        Ok(Self { nonce, balance, code_hash, storage_root })
    }

    /// The account as the state trie hashes it.
    pub fn trie_account(&self) -> TrieAccount {
        TrieAccount { nonce: self.nonce, balance: self.balance, storage_root: self.storage_root, code_hash: self.code_hash }
    }

    /// The RLP of the trie account: the leaf value of the state trie.
    pub fn leaf_rlp(&self) -> Vec<u8> {
        alloy_rlp::encode(self.trie_account())
    }
}

/// Encodes a storage value: big-endian, leading zeros dropped.
pub fn encode_value(value: &U256) -> Vec<u8> {
    let bytes = value.to_be_bytes::<32>();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Decodes a storage value.
pub fn decode_value(bytes: &[u8]) -> Result<U256> {
    if bytes.len() > 32 {
        return Err(StorageError::corrupt(format!("storage value of {} bytes", bytes.len())));
    }
    Ok(U256::from_be_slice(bytes))
}

/// The RLP of a storage value: the leaf value of a storage trie.
pub fn storage_leaf_rlp(value: &U256) -> Vec<u8> {
    alloy_rlp::encode(value)
}

/// Decodes a block number.
pub fn decode_number(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StorageError::corrupt(format!("block number of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// Encodes a block pointer (number ‖ hash).
pub fn encode_block_ref(number: u64, hash: &B256) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(&number.to_be_bytes());
    out[8..].copy_from_slice(hash.as_slice());
    out
}

/// Decodes a block pointer.
pub fn decode_block_ref(bytes: &[u8]) -> Result<(u64, B256)> {
    if bytes.len() != 40 {
        return Err(StorageError::corrupt(format!("block pointer of {} bytes", bytes.len())));
    }
    Ok((decode_number(&bytes[..8])?, B256::from_slice(&bytes[8..])))
}

/// Encodes a stored trie branch node: three masks, a root flag, the root and the child hashes.
pub fn encode_node(node: &BranchNodeCompact) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + 32 * (node.hashes.len() + 1));
    out.extend_from_slice(&node.state_mask.get().to_be_bytes());
    out.extend_from_slice(&node.tree_mask.get().to_be_bytes());
    out.extend_from_slice(&node.hash_mask.get().to_be_bytes());
    match &node.root_hash {
        Some(root) => {
            out.push(1);
            out.extend_from_slice(root.as_slice());
        }
        None => out.push(0),
    }
    for hash in node.hashes.iter() {
        out.extend_from_slice(hash.as_slice());
    }
    out
}

/// Decodes a stored trie branch node, checking that masks and hashes agree.
pub fn decode_node(bytes: &[u8]) -> Result<BranchNodeCompact> {
    let bad = || StorageError::corrupt(format!("trie node of {} bytes", bytes.len()));
    if bytes.len() < 7 {
        return Err(bad());
    }
    let mask = |i: usize| TrieMask::new(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
    let (state_mask, tree_mask, hash_mask) = (mask(0), mask(2), mask(4));
    let (root_hash, rest) = match bytes[6] {
        0 => (None, &bytes[7..]),
        1 if bytes.len() >= 39 => (Some(B256::from_slice(&bytes[7..39])), &bytes[39..]),
        _ => return Err(bad()),
    };
    if rest.len() % 32 != 0 || rest.len() / 32 != hash_mask.count_bits() as usize {
        return Err(bad());
    }
    if !tree_mask.is_subset_of(state_mask) || !hash_mask.is_subset_of(state_mask) {
        return Err(bad());
    }
    let hashes: Vec<B256> = rest.chunks_exact(32).map(B256::from_slice).collect();
    Ok(BranchNodeCompact { state_mask, tree_mask, hash_mask, hashes: Arc::new(hashes), root_hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_round_trips_and_rejects_bad_lengths() {
        let account = StoredAccount { nonce: 7, balance: U256::from(12345), code_hash: B256::repeat_byte(3), storage_root: B256::repeat_byte(9) };
        assert_eq!(StoredAccount::decode(&account.encode_full()).unwrap(), account);
        let plain = StoredAccount::decode(&account.encode_plain()).unwrap();
        assert_eq!(plain.storage_root, EMPTY_ROOT_HASH);
        assert_eq!(plain.balance, account.balance);
        assert!(StoredAccount::decode(&[0u8; 71]).is_err());
    }

    #[test]
    fn values_drop_leading_zeros() {
        assert_eq!(encode_value(&U256::from(0x1234)), vec![0x12, 0x34]);
        assert_eq!(decode_value(&[0x12, 0x34]).unwrap(), U256::from(0x1234));
        assert!(decode_value(&[1u8; 33]).is_err());
    }

    #[test]
    fn nodes_round_trip_and_reject_inconsistent_masks() {
        let node = BranchNodeCompact::new(
            TrieMask::new(0b1011),
            TrieMask::new(0b0001),
            TrieMask::new(0b1010),
            vec![B256::repeat_byte(1), B256::repeat_byte(2)],
            Some(B256::repeat_byte(4)),
        );
        let bytes = encode_node(&node);
        assert_eq!(decode_node(&bytes).unwrap(), node);
        assert!(decode_node(&bytes[..bytes.len() - 1]).is_err());
        let mut wrong = bytes.clone();
        wrong[5] = 0b1110; // hash mask claims three hashes
        assert!(decode_node(&wrong).is_err());
    }
}
