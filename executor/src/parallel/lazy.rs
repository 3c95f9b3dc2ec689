//! Lazy (deferred, commutative) balance updates.
//!
//! A transaction that pays the beneficiary, or a plain transfer between accounts without code,
//! writes a [`Value::Credit`] or [`Value::Debit`] instead of an absolute balance. Applying the
//! deltas in block order gives exactly the sequential result, provided the checks sequential
//! execution makes at each step still hold at that step: the sender's nonce and balance, and that
//! neither side has code. [`apply_delta`] makes those checks; a failure at the end of the block
//! sends the block to the sequential path, which reports or skips the offending transaction.

use super::mv_memory::{AccountValue, Value};
use alloy_primitives::U256;
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
    /// A lazily credited storage slot was zero where the transaction saw it non-zero, or the
    /// other way round (its gas would differ).
    #[error("slot zero-ness differs")]
    ZeronessMismatch,
    /// A rebalanced account's balance differs from the one the transaction read.
    #[error("balance differs from the one read")]
    BalanceMismatch,
}

/// Applies a lazy ERC-20 credit to the slot's value before it, in block order: the transaction
/// saw the slot non-zero or not (`was_nonzero`), and the sum must not overflow (the token would
/// have reverted).
pub fn apply_storage_add(current: U256, amount: U256, was_nonzero: bool) -> Result<U256, LazyError> {
    if current.is_zero() == was_nonzero {
        return Err(LazyError::ZeronessMismatch);
    }
    current.checked_add(amount).ok_or(LazyError::Overflow)
}

/// Whether `address` is a precompile or a system address: it has no code but runs something
/// when called, so a payment to it is not a plain transfer.
pub fn is_special_address(address: &alloy_primitives::Address) -> bool {
    address.0[..18].iter().all(|b| *b == 0)
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
        Value::Storage(_) | Value::StorageAdd { .. } => Ok(account),
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
        Value::Rebalance { before, after } => match account {
            // The account cannot be empty (it was held: it has code or a nonce), so setting its
            // balance deletes nothing.
            Some(mut account) if account.balance == *before => {
                account.balance = *after;
                Ok(Some(account))
            }
            _ => Err(LazyError::BalanceMismatch),
        },
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
pub fn evaluate(
    base: Option<AccountValue>,
    entries: impl IntoIterator<Item = impl std::borrow::Borrow<Value>>,
    spec: SpecId,
) -> Result<(Option<AccountValue>, bool), LazyError> {
    let mut account = base;
    let mut vanished = false;
    for entry in entries {
        let entry = entry.borrow();
        let existed = account.is_some();
        account = apply_delta(account, entry, spec)?;
        vanished |= existed && account.is_none();
    }
    Ok((account, vanished))
}

/// [`evaluate`] for credits only, all of the same kind (`no_code`), in block order. Where every
/// amount is non-zero they are applied as their sum, which gives the same result: the balance
/// only grows, so it overflows exactly when some prefix of the credits does, and an account just
/// credited a non-zero amount is not empty, so none is deleted on the way. A zero amount (a fee
/// without tip) can delete an empty account: then each is applied in turn.
pub fn evaluate_credits(
    base: Option<AccountValue>,
    amounts: impl Iterator<Item = U256> + Clone,
    no_code: bool,
    spec: SpecId,
) -> Result<(Option<AccountValue>, bool), LazyError> {
    let mut total = U256::ZERO;
    let mut any = false;
    for amount in amounts.clone() {
        if amount.is_zero() {
            return evaluate(base, amounts.map(|amount| Value::Credit { amount, no_code }), spec);
        }
        total = total.checked_add(amount).ok_or(LazyError::Overflow)?;
        any = true;
    }
    if !any {
        return Ok((base, false));
    }
    Ok((apply_delta(base, &Value::Credit { amount: total, no_code }, spec)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::mv_memory::Debit;
    use alloy_primitives::B256;

    fn account(balance: u64, nonce: u64) -> Option<AccountValue> {
        Some(AccountValue { balance: U256::from(balance), nonce, code_hash: KECCAK_EMPTY })
    }

    fn debit(amount: u64, required: u64, nonce: u64) -> Value {
        Value::Debit(Debit { amount: U256::from(amount), required: U256::from(required), nonce })
    }

    #[test]
    fn debit_checks_nonce_and_balance_before_paying() {
        let spec = SpecId::CANCUN;
        assert_eq!(apply_delta(account(100, 3), &debit(60, 100, 3), spec), Ok(account(40, 4)));
        assert_eq!(apply_delta(account(99, 3), &debit(60, 100, 3), spec), Err(LazyError::InsufficientBalance));
        assert_eq!(apply_delta(account(100, 2), &debit(60, 100, 3), spec), Err(LazyError::NonceMismatch));
        // A sender that does not exist has nonce 0 and no balance.
        assert_eq!(apply_delta(None, &debit(0, 0, 0), spec), Ok(account(0, 1)));
        assert_eq!(apply_delta(None, &debit(1, 1, 0), spec), Err(LazyError::InsufficientBalance));
    }

    #[test]
    fn storage_credits_check_zeroness_and_overflow() {
        assert_eq!(apply_storage_add(U256::from(5), U256::from(3), true), Ok(U256::from(8)));
        assert_eq!(apply_storage_add(U256::ZERO, U256::from(3), false), Ok(U256::from(3)));
        assert_eq!(apply_storage_add(U256::ZERO, U256::from(3), true), Err(LazyError::ZeronessMismatch));
        assert_eq!(apply_storage_add(U256::from(1), U256::from(3), false), Err(LazyError::ZeronessMismatch));
        assert_eq!(apply_storage_add(U256::MAX, U256::from(1), true), Err(LazyError::Overflow));
    }

    #[test]
    fn credit_touch_deletes_empty_accounts_from_spurious_dragon_on() {
        let zero = Value::Credit { amount: U256::ZERO, no_code: false };
        assert_eq!(apply_delta(account(0, 0), &zero, SpecId::CANCUN), Ok(None));
        assert_eq!(apply_delta(None, &zero, SpecId::CANCUN), Ok(None));
        assert_eq!(apply_delta(None, &zero, SpecId::HOMESTEAD), Ok(account(0, 0)));
        let five = Value::Credit { amount: U256::from(5), no_code: true };
        assert_eq!(apply_delta(None, &five, SpecId::CANCUN), Ok(account(5, 0)));
    }

    #[test]
    fn a_rebalance_applies_only_over_the_balance_it_read() {
        let contract = |balance: u64| Some(AccountValue { balance: U256::from(balance), nonce: 1, code_hash: B256::repeat_byte(1) });
        let rebalance = Value::Rebalance { before: U256::from(10), after: U256::from(4) };
        assert_eq!(apply_delta(contract(10), &rebalance, SpecId::CANCUN), Ok(contract(4)));
        assert_eq!(apply_delta(contract(11), &rebalance, SpecId::CANCUN), Err(LazyError::BalanceMismatch));
        assert_eq!(apply_delta(None, &rebalance, SpecId::CANCUN), Err(LazyError::BalanceMismatch));
        // In block order after a credit, as a reader walking the deltas applies them.
        let entries = [Value::Credit { amount: U256::from(6), no_code: false }, rebalance];
        assert_eq!(evaluate(contract(4), entries.iter(), SpecId::CANCUN), Ok((contract(4), false)));
    }

    #[test]
    fn plain_transfers_require_no_code_on_both_sides() {
        let contract = Some(AccountValue { balance: U256::from(10), nonce: 1, code_hash: B256::repeat_byte(1) });
        let to_recipient = Value::Credit { amount: U256::from(1), no_code: true };
        assert_eq!(apply_delta(contract.clone(), &to_recipient, SpecId::CANCUN), Err(LazyError::HasCode));
        // The beneficiary may be a contract: its fee credit has no such condition.
        let fee = Value::Credit { amount: U256::from(1), no_code: false };
        assert!(apply_delta(contract.clone(), &fee, SpecId::CANCUN).is_ok());
        assert_eq!(apply_delta(contract, &debit(1, 1, 1), SpecId::CANCUN), Err(LazyError::HasCode));
    }

    #[test]
    fn evaluation_follows_block_order_and_reports_deletion() {
        let entries = [
            Value::Credit { amount: U256::from(50), no_code: true },
            debit(30, 40, 0),
            Value::Account(account(7, 9)),
            Value::Credit { amount: U256::from(3), no_code: false },
        ];
        assert_eq!(evaluate(None, entries.iter(), SpecId::CANCUN), Ok((account(10, 9), false)));
        // The same debit before the credit that funds it fails, as it would sequentially.
        let reordered = [debit(30, 40, 0), Value::Credit { amount: U256::from(50), no_code: true }];
        assert_eq!(evaluate(None, reordered.iter(), SpecId::CANCUN), Err(LazyError::InsufficientBalance));
        let deleted = [Value::Account(None)];
        assert_eq!(evaluate(account(1, 1), deleted.iter(), SpecId::CANCUN), Ok((None, true)));
    }

    #[test]
    fn credits_summed_fold_like_credits_applied_one_by_one() {
        let code = B256::repeat_byte(7);
        let bases = [
            None,
            account(0, 0),
            account(5, 0),
            account(0, 3),
            Some(AccountValue { balance: U256::from(1), nonce: 0, code_hash: code }),
            Some(AccountValue { balance: U256::MAX - U256::from(10), nonce: 1, code_hash: KECCAK_EMPTY }),
        ];
        let lists: [Vec<U256>; 6] = [
            vec![],
            vec![U256::from(3)],
            vec![U256::from(3), U256::from(4), U256::from(5)],
            vec![U256::ZERO, U256::from(2)],
            vec![U256::from(2), U256::ZERO, U256::ZERO],
            vec![U256::from(6), U256::from(6)],
        ];
        for spec in [SpecId::HOMESTEAD, SpecId::CANCUN] {
            for base in &bases {
                for amounts in &lists {
                    for no_code in [false, true] {
                        let one_by_one = evaluate(base.clone(), amounts.iter().map(|amount| Value::Credit { amount: *amount, no_code }), spec);
                        let summed = evaluate_credits(base.clone(), amounts.iter().copied(), no_code, spec);
                        // Both fail, or both give the same account and deletion.
                        assert_eq!(one_by_one.is_err(), summed.is_err(), "{base:?} {amounts:?} {no_code} {spec:?}");
                        if let (Ok(a), Ok(b)) = (one_by_one, summed) {
                            assert_eq!(a, b, "{base:?} {amounts:?} {no_code} {spec:?}");
                        }
                    }
                }
            }
        }
    }
}
