//! Lazy ERC-20 credits: which token contracts the parallel path may credit without reading the
//! recipient's balance, and how a transaction is recognised as such a transfer.
//!
//! A transaction calling `transfer(to, amount)` on a token reads `balances[to]`, adds `amount` and
//! writes it back. When many transactions pay one holder (an exchange's deposit address), that
//! slot chains the whole block. For the contracts listed here the recipient's balance `v` is used
//! by `transfer` in exactly two ways, checked by reading the bytecode (below) and by
//! `executor/tests/lazy_tokens.rs`, which runs each transfer with many values of `v`:
//!
//! - the addition `v + amount`, stored back into the slot;
//! - the overflow check of that addition (a revert when it overflows, or none at all).
//!
//! Nothing else (no branch, no log, no return value) depends on `v`. revm's gas for the two
//! storage accesses depends only on whether `v` is zero (SSTORE's set or reset cost, under every
//! fork's rules, with `amount` and the slot's warmth fixed by the transaction). So a transfer that
//! saw a `v` of the right kind (zero or not) and did not overflow behaves exactly as with the real
//! value, except for the value written, which is `v + amount`: the parallel path records the
//! credit as a delta ([`super::mv_memory::Value::StorageAdd`]), validates only the zero-or-not
//! observation, and applies the delta in block order, checking zero-or-not and overflow again
//! (a failed check sends the block to sequential execution).

use alloy_primitives::{b256, keccak256, Address, Bytes, B256, U256};

/// A token contract whose `transfer` may be credited lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownToken {
    /// keccak256 of the contract's runtime code.
    pub code_hash: B256,
    /// The storage slot of its `mapping(address => uint256)` of balances.
    pub balances_slot: u64,
    /// What the contract is.
    pub name: &'static str,
}

/// The contracts whose `transfer` is known to use the recipient's balance only as described in
/// the module documentation.
///
/// - `ERC20Token`: OpenZeppelin's ERC20 v3 (Solidity 0.6; `../shared/corpora/contracts/ERC20Token.hex`).
///   `_transfer` loads `_balances[recipient]` (mapping at slot 0) once, passes it to
///   `SafeMath.add` (`c = a + b; require(c >= a)`) and stores the sum; `_beforeTokenTransfer` is
///   empty; the `Transfer` event logs the amount.
/// - `WETH9` (mainnet's wrapped ether, Solidity 0.4; `../shared/corpora/contracts/WETH9.hex`):
///   `transfer` calls `transferFrom(msg.sender, dst, wad)`, which does `balanceOf[dst] += wad`
///   (mapping at slot 3) without an overflow check; the allowance branch is skipped for the
///   sender itself; the event logs `wad`. A wrapping addition differs from the delta's checked
///   one only on overflow, which fails the delta's check and falls back to sequential execution.
/// - `TetherToken` (mainnet USDT at 0xdAC17F958D2ee523a2206206994597C13D831ec7, Solidity 0.4.17,
///   verified source): `transfer` checks the pause flag and the sender's blacklisting, forwards to
///   an upgraded contract when deprecated (then it writes none of its own balances, and no credit
///   is recorded), computes a fee from `basisPointsRate` (zero on mainnet; a non-zero fee makes
///   the credit differ from the amount, and the transaction is executed again exactly), and does
///   `balances[_to] = balances[_to].add(sendAmount)` (mapping at slot 2; SafeMath's `assert(c >= a)`
///   on overflow). `tests/tests/lazy_tokens_mainnet.rs` runs it with its mainnet storage.
pub const KNOWN_TOKENS: &[KnownToken] = &[
    KnownToken { code_hash: b256!("9be9e97a69b60b40347190b2f8ee5d3036f42acb81e9798714fa5cfa485a356d"), balances_slot: 0, name: "ERC20Token (OpenZeppelin v3)" },
    KnownToken { code_hash: b256!("6f0aad4c50327929cc24668cc87bca1eedd4e9259da4781fc4eb57e998b75c66"), balances_slot: 3, name: "WETH9" },
    KnownToken { code_hash: b256!("b44fb4e949d0f78f87f79ee46428f23a2a5713ce6fc6e0beb3dda78c2ac1ea55"), balances_slot: 2, name: "TetherToken (mainnet USDT)" },
];

/// The selector of `transfer(address,uint256)`.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];

/// The known token with runtime code hash `code_hash`, if any.
pub fn known_token(code_hash: &B256) -> Option<&'static KnownToken> {
    KNOWN_TOKENS.iter().find(|token| token.code_hash == *code_hash)
}

/// The recipient and amount of a well-formed `transfer(address,uint256)` call (exactly 68 bytes,
/// the address word padded with zeros).
pub fn decode_transfer(data: &Bytes) -> Option<(Address, U256)> {
    if data.len() != 68 || data[..4] != TRANSFER_SELECTOR || data[4..16].iter().any(|b| *b != 0) {
        return None;
    }
    let recipient = Address::from_slice(&data[16..36]);
    let amount = U256::from_be_slice(&data[36..68]);
    Some((recipient, amount))
}

/// Calldata of `transfer(to, amount)`.
pub fn transfer_calldata(to: Address, amount: U256) -> Bytes {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&TRANSFER_SELECTOR);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(to.as_slice());
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    Bytes::from(data)
}

/// The slot of `mapping[holder]` for a Solidity `mapping(address => ...)` at `mapping_slot`.
pub fn balance_slot(holder: Address, mapping_slot: u64) -> U256 {
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(holder.as_slice());
    key[56..64].copy_from_slice(&mapping_slot.to_be_bytes());
    U256::from_be_bytes(keccak256(key).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_calldata_is_decoded_only_when_well_formed() {
        let to = Address::repeat_byte(7);
        let data = transfer_calldata(to, U256::from(5)).to_vec();
        assert_eq!(data.len(), 68);
        assert_eq!(decode_transfer(&Bytes::from(data.clone())), Some((to, U256::from(5))));
        let mut dirty = data.clone();
        dirty[4] = 1;
        assert_eq!(decode_transfer(&Bytes::from(dirty)), None);
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(decode_transfer(&Bytes::from(longer)), None);
        let mut other = data;
        other[0] = 0x23;
        assert_eq!(decode_transfer(&Bytes::from(other)), None);
    }

    #[test]
    fn balance_slots_follow_solidity_mapping_layout() {
        // keccak256(pad32(holder) ++ pad32(slot)), the slot as a big-endian word.
        let holder = Address::repeat_byte(0x11);
        let mut key = [0u8; 64];
        key[12..32].copy_from_slice(holder.as_slice());
        key[63] = 3;
        assert_eq!(balance_slot(holder, 3), U256::from_be_bytes(keccak256(key).0));
        assert_ne!(balance_slot(holder, 0), balance_slot(holder, 3));
    }
}
