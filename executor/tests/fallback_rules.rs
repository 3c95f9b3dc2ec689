//! The default parallel path's up-front rules: a block runs sequentially when it is too small or
//! its calls too few for Block-STM to pay off, or when one sender sent more than a quarter of its
//! transactions (their nonces chain them), with the same result; a forced run still uses
//! Block-STM, and a block where the largest sender has exactly a quarter stays parallel. Blocks of
//! cheaper calls (an average gas limit below `MIN_PARALLEL_AVG_GAS_LIMIT`) go to Block-STM only
//! when no one contract takes more than half of their transactions; a hot recipient without code
//! (an exchange's deposit address) does not hold a block back.

mod common;

use alloy_primitives::{Address, Bytes, TxKind, U256};
use common::{addr, cancun_block_input};
use pseq_executor::{
    block::{
        majority_recipient, one_sender_chain, parallel_pays_off, ExecutedPath, MIN_PARALLEL_AVG_GAS_LIMIT,
        MIN_CALL_GAS_LIMIT_PER_TRANSFER, MIN_PARALLEL_CALL_GAS_LIMIT, MIN_PARALLEL_TXS,
    },
    parallel::tokens::transfer_calldata,
    execute_block,
    revm::{bytecode::Bytecode, context::TxEnv},
    state::InMemoryAccount,
    BlockInput, BlockOutput, ExecutionOptions, InMemoryState,
};

/// `SSTORE(CALLER, SLOAD(CALLER) + 1)`: counts calls per caller.
const PER_CALLER_COUNTER: &[u8] = &[0x33, 0x54, 0x60, 1, 0x01, 0x33, 0x55, 0x00];
const TXS: u64 = 64;

fn counter() -> Address {
    addr(0xc0, 0)
}

/// `TXS` calls to the counter (with a byte of calldata it ignores, and enough gas limit in all for
/// the small-block rule to let Block-STM run them): the first `chained` from one sender (nonces 0,
/// 1, ...), placed every other transaction while they last, the rest from distinct senders.
fn block(chained: u64) -> (InMemoryState, BlockInput, Vec<TxEnv>) {
    let mut state = InMemoryState::new();
    state.insert_account(counter(), InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(PER_CALLER_COUNTER))), ..Default::default() });
    let whale = addr(0x5e, 0);
    state.insert_account(whale, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
    let mut chain = (0..chained).map(|nonce| (whale, nonce));
    let mut others = (1..=TXS - chained).map(|n| (addr(0x5e, n), 0));
    let mut txs = Vec::new();
    for i in 0..TXS {
        let (caller, nonce) = if i % 2 == 0 { chain.next().or_else(|| others.next()) } else { others.next().or_else(|| chain.next()) }.expect("TXS senders");
        if caller != whale {
            state.insert_account(caller, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
        }
        let data = Bytes::from_static(&[1]);
        txs.push(TxEnv { caller, gas_limit: 300_000, gas_price: 1, kind: TxKind::Call(counter()), data, nonce, chain_id: Some(1), ..Default::default() });
    }
    (state, cancun_block_input(), txs)
}

fn run(chained: u64, options: ExecutionOptions) -> BlockOutput {
    let (state, input, txs) = block(chained);
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    let parallel = execute_block(&state, &input, &txs, &options).expect("parallel");
    assert!(parallel.same_result(&sequential), "parallel differs from sequential ({:?})", parallel.path);
    assert_eq!(sequential.receipts.len(), TXS as usize);
    assert!(sequential.receipts.iter().all(|r| r.success), "a counter call failed");
    let whale_count = sequential.state.accounts[&counter()].storage.get(&U256::from_be_slice(addr(0x5e, 0).as_slice())).copied();
    assert_eq!(whale_count, (chained > 0).then(|| U256::from(chained)));
    parallel
}

#[test]
fn a_block_with_over_a_quarter_from_one_sender_runs_sequentially_with_the_same_result() {
    assert_eq!(run(TXS / 4 + 1, ExecutionOptions::parallel(2)).path, ExecutedPath::SenderChainFallback);
    assert_eq!(run(TXS / 2 + 1, ExecutionOptions::parallel(2)).path, ExecutedPath::SenderChainFallback);
    assert_eq!(run(TXS, ExecutionOptions::parallel(2)).path, ExecutedPath::SenderChainFallback);
}

#[test]
fn a_quarter_from_one_sender_or_a_forced_run_stays_on_block_stm() {
    // Block-STM runs it (the contention rule may still stop it, depending on how the threads
    // interleave the quarter that is one chain).
    let quarter = run(TXS / 4, ExecutionOptions::parallel(2)).path;
    assert!(matches!(quarter, ExecutedPath::Parallel | ExecutedPath::ParallelFallback(_)), "{quarter:?}");
    assert_eq!(run(TXS, ExecutionOptions::force_parallel(2)).path, ExecutedPath::Parallel);
}

#[test]
fn the_majority_vote_counts_exactly() {
    // The recipient vote: calls to `addr(0xc1, n)`.
    let to = |n: u64| TxEnv { kind: TxKind::Call(addr(0xc1, n)), ..Default::default() };
    let majority = |txs: &[TxEnv]| majority_recipient(txs).is_some();
    assert!(!majority(&[]));
    assert_eq!(majority_recipient(&[to(1)]), Some(addr(0xc1, 1)));
    assert!(!majority(&[to(1), to(2)]));
    assert!(majority(&[to(1), to(2), to(1)]));
    // The vote's candidate after one pass can be a recipient without a majority: the count decides.
    assert!(!majority(&[to(1), to(1), to(2), to(2), to(3)]));
    assert_eq!(majority_recipient(&[to(2), to(1), to(1), to(3), to(1)]), Some(addr(0xc1, 1)));
    assert!(!majority(&[to(1), to(2), to(1), to(2)]));
    let tx = |n: u64| TxEnv { caller: addr(0x5e, n), ..Default::default() };
    // More than a quarter: the three candidates of the first pass may include others.
    assert!(!one_sender_chain(&[]));
    assert!(one_sender_chain(&[tx(1)]));
    assert!(!one_sender_chain(&[tx(1), tx(2), tx(3), tx(4)]));
    assert!(one_sender_chain(&[tx(1), tx(2), tx(3), tx(4), tx(1)]));
    assert!(!one_sender_chain(&[tx(1), tx(2), tx(3), tx(4), tx(5), tx(6), tx(7), tx(1)]));
    assert!(one_sender_chain(&[tx(5), tx(6), tx(7), tx(8), tx(1), tx(2), tx(3), tx(1), tx(1)]));
    // Candidates pushed out by others still count if they come back often enough.
    let mut spread: Vec<TxEnv> = (10..40).map(tx).collect();
    spread.extend((0..11).map(|_| tx(1)));
    assert!(one_sender_chain(&spread), "11 of 41");
    spread.pop();
    assert!(!one_sender_chain(&spread), "10 of 40");
}

#[test]
fn the_small_block_rule_needs_enough_transactions_calls_and_threads() {
    let no_code = |_| false;
    let call = |gas_limit: u64| TxEnv { gas_limit, data: Bytes::from_static(&[1]), kind: TxKind::Call(Address::ZERO), ..Default::default() };
    let calls = |count: usize, gas_limit: u64| (0..count).map(|_| call(gas_limit)).collect::<Vec<_>>();
    let enough = MIN_PARALLEL_CALL_GAS_LIMIT.div_ceil(MIN_PARALLEL_TXS as u64).max(MIN_PARALLEL_AVG_GAS_LIMIT);
    assert!(parallel_pays_off(&calls(MIN_PARALLEL_TXS, enough), 2, no_code));
    assert!(!parallel_pays_off(&calls(MIN_PARALLEL_TXS, enough), 1, no_code), "one thread");
    assert!(!parallel_pays_off(&calls(MIN_PARALLEL_TXS - 1, enough * 2), 2, no_code), "too few transactions");
    // Enough transactions, each costly enough, but too little work in all.
    let small = MIN_PARALLEL_CALL_GAS_LIMIT / 100 - 1;
    assert!(!parallel_pays_off(&calls(100, small), 2, no_code));
    // Plain transfers, however many and whatever their gas limits, do not count as work...
    let transfer = TxEnv { gas_limit: 1_000_000, kind: TxKind::Call(Address::ZERO), ..Default::default() };
    let transfers = MIN_PARALLEL_CALL_GAS_LIMIT / MIN_CALL_GAS_LIMIT_PER_TRANSFER;
    let mut mixed = vec![transfer.clone(); transfers as usize];
    assert!(!parallel_pays_off(&mixed, 2, no_code));
    // ...but do not hold back a block whose calls (or creations) have enough...
    mixed.extend(calls(3, MIN_PARALLEL_CALL_GAS_LIMIT / 4));
    assert!(!parallel_pays_off(&mixed, 2, no_code));
    mixed.push(TxEnv { gas_limit: MIN_PARALLEL_CALL_GAS_LIMIT / 4, kind: TxKind::Create, ..Default::default() });
    assert!(parallel_pays_off(&mixed, 2, no_code));
    // ...as long as the calls carry enough per transfer.
    mixed.push(transfer);
    assert!(!parallel_pays_off(&mixed, 2, no_code), "one transfer too many");
    // Gas limits near u64::MAX do not overflow the sums.
    assert!(parallel_pays_off(&calls(MIN_PARALLEL_TXS, u64::MAX), 2, no_code));
}

/// `count` calls with a 60,000 gas limit to `counters` per-caller counters (call `n` to counter
/// `n % counters`), each from its own sender: with enough calls in all for Block-STM, an average
/// gas limit below `MIN_PARALLEL_AVG_GAS_LIMIT`. The calls carry a byte of calldata (the counter
/// ignores it), so the partitioned path, which takes only transfers and token `transfer`s here,
/// leaves them to Block-STM.
fn cheap_calls(count: u64, counters: u64) -> (InMemoryState, BlockInput, Vec<TxEnv>) {
    let mut state = InMemoryState::new();
    for c in 0..counters {
        state.insert_account(addr(0xc1, c), InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(PER_CALLER_COUNTER))), ..Default::default() });
    }
    let txs = (0..count)
        .map(|n| {
            let caller = addr(0x5f, n);
            state.insert_account(caller, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
            let data = Bytes::from_static(&[1]);
            TxEnv { caller, gas_limit: 60_000, gas_price: 1, kind: TxKind::Call(addr(0xc1, n % counters)), data, chain_id: Some(1), ..Default::default() }
        })
        .collect();
    (state, cancun_block_input(), txs)
}

#[test]
fn cheap_calls_into_one_contract_run_sequentially_and_spread_ones_through_block_stm() {
    let count = 250;
    assert!(60_000 < MIN_PARALLEL_AVG_GAS_LIMIT && count * 60_000 >= MIN_PARALLEL_CALL_GAS_LIMIT);
    for (counters, expected) in [(1, ExecutedPath::SmallBlockFallback), (count, ExecutedPath::Parallel)] {
        let (state, input, txs) = cheap_calls(count, counters);
        let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
        assert!(sequential.receipts.iter().all(|r| r.success), "a counter call failed");
        let parallel = execute_block(&state, &input, &txs, &ExecutionOptions::parallel(2)).expect("parallel");
        assert!(parallel.same_result(&sequential), "parallel differs from sequential ({:?})", parallel.path);
        assert_eq!(parallel.path, expected, "{counters} counters");
    }
}

#[test]
fn the_recipient_vote_leaves_out_token_transfers_and_creations() {
    let call = |to: u64, data: Bytes| TxEnv { gas_limit: 60_000, kind: TxKind::Call(addr(0xc1, to)), data, ..Default::default() };
    let transfer = |n: u64| transfer_calldata(addr(0x5f, n), U256::from(1));
    let count = 250;
    let one: Vec<TxEnv> = (0..count).map(|_| call(0, Bytes::from_static(&[1]))).collect();
    assert_eq!(majority_recipient(&one), Some(addr(0xc1, 0)));
    assert!(!parallel_pays_off(&one, 2, |_| true), "cheap calls into one contract");
    assert!(parallel_pays_off(&one, 2, |_| false), "the same recipient without code");
    // `transfer`s into one token move distinct balances: no majority.
    let token: Vec<TxEnv> = (0..count).map(|n| call(0, transfer(n))).collect();
    assert_eq!(majority_recipient(&token), None);
    assert!(parallel_pays_off(&token, 2, |_| true));
    // Exactly half into one contract is no majority; one more is.
    let mut half: Vec<TxEnv> = (0..count / 2 * 2).map(|n| call(if n % 2 == 0 { 0 } else { n }, Bytes::new())).collect();
    assert_eq!(majority_recipient(&half), None);
    half.push(call(0, Bytes::new()));
    assert_eq!(majority_recipient(&half), Some(addr(0xc1, 0)));
    // Creations count as no recipient.
    let creations: Vec<TxEnv> = (0..count).map(|_| TxEnv { gas_limit: 60_000, kind: TxKind::Create, ..Default::default() }).collect();
    assert_eq!(majority_recipient(&creations), None);
    assert!(parallel_pays_off(&creations, 2, |_| true));
    // Costlier calls into one contract go to Block-STM anyway (the contention rule is their
    // fallback).
    let costly: Vec<TxEnv> = (0..count).map(|_| TxEnv { gas_limit: MIN_PARALLEL_AVG_GAS_LIMIT, ..call(0, Bytes::from_static(&[1])) }).collect();
    assert!(parallel_pays_off(&costly, 2, |_| true));
}

/// `hot` plain transfers to one recipient (`recipient_code`: with the per-caller counter as its
/// code) and `calls` calls with calldata to distinct counters, each from its own sender,
/// interleaved: the pattern of mainnet blocks whose transactions mostly pay one exchange.
fn hot_recipient_block(hot: u64, calls: u64, recipient_code: bool) -> (InMemoryState, BlockInput, Vec<TxEnv>) {
    let mut state = InMemoryState::new();
    let recipient = addr(0xee, 0);
    let code = recipient_code.then(|| Bytecode::new_raw(Bytes::from_static(PER_CALLER_COUNTER)));
    state.insert_account(recipient, InMemoryAccount { nonce: 1, code, ..Default::default() });
    let mut txs = Vec::new();
    for n in 0..hot + calls {
        let caller = addr(0x5f, n);
        state.insert_account(caller, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
        let tx = TxEnv { caller, gas_price: 1, chain_id: Some(1), ..Default::default() };
        txs.push(if n % (hot / calls + 1) == 0 && n / (hot / calls + 1) < calls {
            let counter = addr(0xc1, n);
            state.insert_account(counter, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(PER_CALLER_COUNTER))), ..Default::default() });
            TxEnv { gas_limit: 200_000, kind: TxKind::Call(counter), data: Bytes::from_static(&[1]), ..tx }
        } else {
            TxEnv { gas_limit: 60_000, kind: TxKind::Call(recipient), value: U256::from(n + 1), ..tx }
        });
    }
    (state, cancun_block_input(), txs)
}

#[test]
fn a_hot_recipient_without_code_does_not_hold_a_block_back_and_one_with_code_does() {
    for (recipient_code, expected) in [(false, ExecutedPath::Parallel), (true, ExecutedPath::SmallBlockFallback)] {
        let (state, input, txs) = hot_recipient_block(400, 40, recipient_code);
        assert_eq!(majority_recipient(&txs), Some(addr(0xee, 0)));
        let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
        assert!(sequential.receipts.iter().all(|r| r.success), "a transaction failed");
        let parallel = execute_block(&state, &input, &txs, &ExecutionOptions::parallel(2)).expect("parallel");
        assert!(parallel.same_result(&sequential), "parallel differs from sequential ({:?})", parallel.path);
        assert_eq!(parallel.path, expected, "recipient with code: {recipient_code}");
    }
}
