//! EIP-1186 Merkle proofs (`eth_getProof`) of an account and some of its slots at the head,
//! built with alloy-trie's `HashBuilder` and a proof retainer over every stored leaf. The cost
//! grows with the size of the state (every hashed account, and every slot of the account, is
//! visited): right for dev chains and test networks; an incremental proof over the stored branch
//! nodes is future work.

use crate::{
    codec::{decode_value, storage_leaf_rlp, StoredAccount},
    db::{cf, Storage},
    error::{Result, StorageError},
    tables,
};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_trie::{proof::ProofRetainer, HashBuilder, Nibbles, EMPTY_ROOT_HASH, KECCAK_EMPTY};

/// An account, its slots, and the proofs of both against the head's state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProof {
    /// Balance (zero for an account that does not exist).
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code hash (`KECCAK_EMPTY` for none).
    pub code_hash: B256,
    /// Storage root (the empty root for none).
    pub storage_root: B256,
    /// Nodes from the state root down to the account's leaf (or to where it would be).
    pub account_proof: Vec<Bytes>,
    /// Per requested slot: its value and the nodes from the storage root down to it.
    pub storage_proofs: Vec<(U256, Vec<Bytes>)>,
}

fn path_nodes(nodes: &alloy_trie::proof::ProofNodes, target: &Nibbles) -> Vec<Bytes> {
    nodes.matching_nodes_sorted(target).into_iter().map(|(_, node)| node).collect()
}

impl Storage {
    /// The proof of `address` and `slots` at the head.
    pub fn proof(&self, address: Address, slots: &[U256]) -> Result<AccountProof> {
        let db = self.db();
        let hashed = keccak256(address);
        let target = Nibbles::unpack(hashed);

        // Account trie: every hashed account, the target's path retained.
        let mut hb = HashBuilder::default().with_proof_retainer(ProofRetainer::from_iter([target]));
        let mut accounts = db.raw_iterator_cf(cf(db, tables::HASHED_ACCOUNTS)?);
        accounts.seek_to_first();
        let mut found: Option<StoredAccount> = None;
        while let Some((key, value)) = accounts.item() {
            if key.len() != 32 {
                return Err(StorageError::corrupt("hashed account key length"));
            }
            let account = StoredAccount::decode(value)?;
            if key == hashed.as_slice() {
                found = Some(account);
            }
            hb.add_leaf(Nibbles::unpack(key), &account.leaf_rlp());
            accounts.next();
        }
        accounts.status()?;
        let _ = hb.root();
        let account_proof = path_nodes(&hb.take_proof_nodes(), &target);

        // Storage trie of the account: its slots, the requested ones retained.
        let slot_paths: Vec<Nibbles> = slots.iter().map(|s| Nibbles::unpack(keccak256(B256::from(*s)))).collect();
        let mut values = vec![U256::ZERO; slots.len()];
        let mut storage_hb = HashBuilder::default().with_proof_retainer(ProofRetainer::from_iter(slot_paths.iter().copied()));
        let mut storage = db.raw_iterator_cf(cf(db, tables::HASHED_STORAGE)?);
        storage.seek(hashed.as_slice());
        while let Some((key, value)) = storage.item() {
            if key.len() != 64 || &key[..32] != hashed.as_slice() {
                break;
            }
            let value = decode_value(value)?;
            let path = Nibbles::unpack(&key[32..]);
            for (i, wanted) in slot_paths.iter().enumerate() {
                if *wanted == path {
                    values[i] = value;
                }
            }
            storage_hb.add_leaf(path, &storage_leaf_rlp(&value));
            storage.next();
        }
        storage.status()?;
        let _ = storage_hb.root();
        let storage_nodes = storage_hb.take_proof_nodes();
        let storage_proofs = slot_paths.iter().zip(values).map(|(path, value)| (value, path_nodes(&storage_nodes, path))).collect();

        let account = found.unwrap_or(StoredAccount { nonce: 0, balance: U256::ZERO, code_hash: KECCAK_EMPTY, storage_root: EMPTY_ROOT_HASH });
        Ok(AccountProof {
            balance: account.balance,
            nonce: account.nonce,
            code_hash: account.code_hash,
            storage_root: account.storage_root,
            account_proof,
            storage_proofs,
        })
    }
}
