//! Heavy transactions late in a block, started ahead of the block order.
//!
//! Block-STM hands out executions in block order, so a transaction starts only once every
//! transaction below it has started. When one transaction does much of a block's work (a proof
//! verified with pairing precompiles, a large batch) and sits near the end, the other threads
//! have run out of work by the time it starts, and the block takes about as long as it does
//! sequentially. Started first instead, by a worker the block order does not need yet, it runs
//! while the others work through the block.
//!
//! Which transaction is heavy is not known before it runs, so the rule takes what the block
//! shows: in the upper half of the block, a gas limit of at least [`MIN_HOIST_GAS_LIMIT`] that is
//! also a tenth of all the block's gas limits together, or calldata of at least
//! [`MIN_HOIST_CALLDATA`] bytes (proofs and batches come as calldata). A light transaction picked
//! by mistake costs little: it runs early instead of later. A hoisted execution is an ordinary
//! incarnation: if a lower transaction writes something it read, its validation fails and it runs
//! again in block order, which costs its execution once more. So a transaction is not hoisted
//! when a lower one comes from the same sender (which always changes what it reads: the nonce)
//! or calls the same account (which often does: a pool, a token).

use super::TxIdx;
use revm::context::TxEnv;

/// The share of the block's summed gas limits, in percent, a gas limit must reach for the gas
/// limit alone to pick a transaction.
pub const MIN_HOIST_GAS_LIMIT_PERCENT: u128 = 10;

/// The smallest gas limit that picks a transaction. Below it the time a late start loses is
/// small, and a hoisted execution that must run again costs about as much as it could gain: on
/// the mainnet corpus, the two transactions of 1,000,000 gas limit that the share alone picked
/// (blocks 19933122 and 19934116) lost 0.05-0.25x on their blocks (docs/benchmarks.md, "Heavy
/// transactions late in a block").
pub const MIN_HOIST_GAS_LIMIT: u64 = 2_000_000;

/// The calldata length, in bytes, that picks a transaction whatever its gas limit.
pub const MIN_HOIST_CALLDATA: usize = 2048;

/// At most this many transactions are hoisted per worker that takes them.
pub const MAX_HOISTED_PER_WORKER: usize = 2;

/// The transactions to start ahead of the block order, by `spare_workers` workers (those beyond
/// the one that starts at the bottom of the block): in the upper half of the block, those whose
/// gas limit is at least [`MIN_HOIST_GAS_LIMIT`] and [`MIN_HOIST_GAS_LIMIT_PERCENT`] of the
/// block's summed gas limits, or whose calldata has at least [`MIN_HOIST_CALLDATA`] bytes; the
/// largest gas limit first, at most [`MAX_HOISTED_PER_WORKER`] per spare worker. A transaction
/// whose sender sends a lower transaction, or whose callee a lower transaction calls, is left in
/// block order.
pub fn heavy_late_transactions(txs: &[TxEnv], spare_workers: usize) -> Vec<TxIdx> {
    if spare_workers == 0 || txs.len() < 2 {
        return Vec::new();
    }
    let total: u128 = txs.iter().map(|tx| u128::from(tx.gas_limit)).sum();
    let mut heavy: Vec<TxIdx> = (txs.len() / 2..txs.len())
        .filter(|&index| {
            let tx = &txs[index];
            let large_gas_limit = tx.gas_limit >= MIN_HOIST_GAS_LIMIT && u128::from(tx.gas_limit) * 100 >= total * MIN_HOIST_GAS_LIMIT_PERCENT;
            large_gas_limit || tx.data.len() >= MIN_HOIST_CALLDATA
        })
        .collect();
    // Largest gas limit first; the lower index first among equals. Each candidate's scan of the
    // lower transactions stops once enough are found.
    heavy.sort_by_key(|&index| (std::cmp::Reverse(txs[index].gas_limit), index));
    let independent = |&index: &TxIdx| {
        let tx = &txs[index];
        !txs[..index].iter().any(|lower| lower.caller == tx.caller || (tx.kind.is_call() && lower.kind == tx.kind))
    };
    heavy.into_iter().filter(independent).take(spare_workers.saturating_mul(MAX_HOISTED_PER_WORKER)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, Bytes, TxKind};

    /// Transactions from distinct senders to distinct callees.
    fn block(gas_limits: &[u64]) -> Vec<TxEnv> {
        let account = |n: usize, tag: u8| {
            let mut bytes = [tag; 20];
            bytes[12..].copy_from_slice(&(n as u64).to_be_bytes());
            Address::from(bytes)
        };
        gas_limits
            .iter()
            .enumerate()
            .map(|(index, &gas_limit)| TxEnv { gas_limit, caller: account(index, 1), kind: TxKind::Call(account(index, 2)), ..Default::default() })
            .collect()
    }

    #[test]
    fn large_gas_limits_in_the_upper_half_are_hoisted_largest_first() {
        // Sum 20,000,000: a tenth is 2,000,000.
        let txs = block(&[5_000_000, 1_000_000, 1_000_000, 1_000_000, 1_000_000, 2_000_000, 1_999_999, 7_000_000]);
        assert_eq!(heavy_late_transactions(&txs, 1), vec![7, 5], "index 6 is below a tenth, index 0 in the lower half");
        assert_eq!(heavy_late_transactions(&txs, 0), Vec::<TxIdx>::new());
    }

    #[test]
    fn a_large_share_of_a_small_block_is_not_enough() {
        // Index 3 holds half the gas limits, but a transaction of 1,000,000 gas is not worth it.
        let txs = block(&[300_000, 100_000, 100_000, 1_000_000, 500_000]);
        assert!(heavy_late_transactions(&txs, 1).is_empty());
        let txs = block(&[300_000, 100_000, 100_000, MIN_HOIST_GAS_LIMIT, 500_000]);
        assert_eq!(heavy_late_transactions(&txs, 1), vec![3]);
    }

    #[test]
    fn long_calldata_in_the_upper_half_is_hoisted_whatever_the_gas_limit() {
        let mut txs = block(&[100_000; 10]);
        txs[2].data = Bytes::from(vec![1; MIN_HOIST_CALLDATA]);
        txs[6].data = Bytes::from(vec![1; MIN_HOIST_CALLDATA - 1]);
        txs[8].data = Bytes::from(vec![1; MIN_HOIST_CALLDATA]);
        assert_eq!(heavy_late_transactions(&txs, 1), vec![8]);
    }

    #[test]
    fn at_most_two_per_spare_worker() {
        let mut txs = block(&[100_000; 20]);
        for (offset, tx) in txs[10..].iter_mut().enumerate() {
            tx.data = Bytes::from(vec![1; MIN_HOIST_CALLDATA]);
            tx.gas_limit += offset as u64;
        }
        assert_eq!(heavy_late_transactions(&txs, 1), vec![19, 18]);
        assert_eq!(heavy_late_transactions(&txs, 2), vec![19, 18, 17, 16]);
    }

    #[test]
    fn a_sender_or_callee_shared_with_a_lower_transaction_keeps_it_in_block_order() {
        let mut txs = block(&[100_000; 10]);
        for index in [6, 7, 8] {
            txs[index].data = Bytes::from(vec![1; MIN_HOIST_CALLDATA]);
        }
        txs[6].caller = txs[1].caller;
        txs[7].kind = txs[2].kind;
        assert_eq!(heavy_late_transactions(&txs, 1), vec![8]);
        // Creations share no callee.
        for index in [2, 8] {
            txs[index].kind = TxKind::Create;
        }
        assert_eq!(heavy_late_transactions(&txs, 1), vec![7, 8]);
    }

    #[test]
    fn a_block_of_equal_transactions_hoists_nothing() {
        assert!(heavy_late_transactions(&block(&[21_000; 40]), 1).is_empty());
        assert!(heavy_late_transactions(&block(&[30_000_000]), 1).is_empty());
    }

    #[test]
    fn gas_limits_near_the_maximum_do_not_overflow() {
        let txs = block(&[u64::MAX, u64::MAX, u64::MAX, u64::MAX]);
        assert_eq!(heavy_late_transactions(&txs, 1), vec![2, 3]);
    }
}
