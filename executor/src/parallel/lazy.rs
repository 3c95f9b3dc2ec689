//! Lazy (deferred, commutative) balance updates.
//!
//! A transaction that pays the beneficiary, or a plain transfer between accounts without code,
//! writes a [`Value::Credit`] or [`Value::Debit`] instead of an absolute balance. Applying the
//! deltas in block order gives exactly the sequential result, provided the checks sequential
//! execution makes at each step still hold at that step: the sender's nonce and balance, and that
//! neither side has code. [`apply_delta`] makes those checks; a failure at the end of the block
//! sends the block to the sequential path, which reports or skips the offending transaction.

use super::mv_memory::{AccountValue, Value};
use revm::primitives::{hardfork::SpecId, KECCAK_EMPTY};

/// Why a lazy update cannot be applied as sequential execution would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LazyError {
    /// The sender's nonce differs from the transaction's.
    #[error("sender nonce mismatch")]
    NonceMismatch,
    /// The sender cannot afford gas limit x max fee + value.
    #[error("sender balance too low")]
    InsufficientBalance,
    /// The sender or recipient of a plain transfer has code by then.
    #[error("account has code")]
    HasCode,
    /// A balance or nonce would overflow.
    #[error("overflow")]
    Overflow,
}

fn empty_account() -> AccountValue {
    AccountValue { balance: Default::default(), nonce: 0, code_hash: KECCAK_EMPTY }
}

fn is_empty(account: &AccountValue) -> bool {
    account.balance.is_zero() && account.nonce == 0 && account.code_hash == KECCAK_EMPTY
}

/// Applies one delta to an account (`None`: it does not exist). Absolute values replace.
pub fn apply_delta(account: Option<AccountValue>, delta: &Value, spec: SpecId) -> Result<Option<AccountValue>, LazyError> {
    match delta {
        Value::Account(value) => Ok(value.clone()),
        Value::Storage(_) => Ok(account),
        Value::Credit { amount, no_code } => {
            let mut account = account.unwrap_or_else(empty_account);
            if *no_code && account.code_hash != KECCAK_EMPTY {
                return Err(LazyError::HasCode);
            }
            account.balance = account.balance.checked_add(*amount).ok_or(LazyError::Overflow)?;
            // The credit touched the account: under EIP-161 a touched empty account is deleted.
            if spec.is_enabled_in(SpecId::SPURIOUS_DRAGON) && is_empty(&account) {
                return Ok(None);
            }
            Ok(Some(account))
        }
        Value::Debit(debit) => {
            let mut account = account.unwrap_or_else(empty_account);
            if account.code_hash != KECCAK_EMPTY {
                return Err(LazyError::HasCode);
            }
            if account.nonce != debit.nonce {
                return Err(LazyError::NonceMismatch);
            }
            if account.balance < debit.required {
                return Err(LazyError::InsufficientBalance);
            }
            account.balance -= debit.amount;
            account.nonce = account.nonce.checked_add(1).ok_or(LazyError::Overflow)?;
            Ok(Some(account))
        }
    }
}

/// Folds all of an account's entries, in block order, over its pre-block value. Returns the final
/// value and whether the account stopped existing at some point (its old storage is then gone).
pub fn evaluate<'a>(
    base: Option<AccountValue>,
    entries: impl IntoIterator<Item = &'a Value>,
    spec: SpecId,
) -> Result<(Option<AccountValue>, bool), LazyError> {
    let mut account = base;
    let mut vanished = false;
    for entry in entries {
        let existed = account.is_some();
        account = apply_delta(account, entry, spec)?;
        vanished |= existed && account.is_none();
    }
    Ok((account, vanished))
}
