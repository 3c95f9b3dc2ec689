//! A heavy transaction late in the block is started ahead of the block order
//! (`parallel::hoist`). It then reads state that lower transactions have not written yet:
//! Block-STM's validation must catch every such read, and the block must equal its sequential
//! execution whether the hoisted execution conflicted or not.

mod common;

use alloy_primitives::{Address, Bytes, TxKind, U256};
use common::{addr, cancun_block_input};
use pseq_executor::{
    block::ExecutedPath,
    execute_block,
    parallel::hoist::heavy_late_transactions,
    revm::{bytecode::Bytecode, context::TxEnv},
    state::InMemoryAccount,
    ExecutionOptions, InMemoryState,
};

/// Counts down from 8,192 and stops: about 213,000 gas of work.
const BURNER: &[u8] = &[0x61, 0x20, 0x00, 0x5b, 0x60, 0x01, 0x90, 0x03, 0x80, 0x60, 0x03, 0x57, 0x00];
/// `SSTORE(0, SLOAD(0) + 1)`.
const COUNTER: &[u8] = &[0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00];
const TXS: u64 = 200;
const HEAVY: usize = 190;

fn call(caller: Address, to: Address, gas_limit: u64, value: u64) -> TxEnv {
    TxEnv {
        caller,
        gas_limit,
        gas_price: 1,
        kind: TxKind::Call(to),
        value: U256::from(value),
        data: Bytes::from_static(&[1]),
        nonce: 0,
        chain_id: Some(1),
        ..Default::default()
    }
}

/// `TXS` calls to distinct counters from distinct senders; transaction `HEAVY` instead calls the
/// burner with a gas limit the hoisting rule picks. With `conflict`, its sender is paid by
/// transaction 100 (a plain transfer), so an execution that starts before transaction 100's
/// reads a stale balance.
fn block(conflict: bool) -> (InMemoryState, Vec<TxEnv>) {
    let mut state = InMemoryState::new();
    let funded = InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() };
    state.insert_account(addr(0xb0, 0), InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(BURNER))), ..Default::default() });
    let heavy_sender = addr(0x4e, 0);
    state.insert_account(heavy_sender, funded.clone());
    let mut txs = Vec::new();
    for i in 0..TXS {
        let sender = addr(0x5e, i);
        state.insert_account(sender, funded.clone());
        let counter = addr(0xc0, i);
        state.insert_account(counter, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(COUNTER))), ..Default::default() });
        txs.push(call(sender, counter, 100_000, 0));
    }
    txs[HEAVY] = call(heavy_sender, addr(0xb0, 0), 5_000_000, 0);
    if conflict {
        let mut payment = call(addr(0x5e, 100), heavy_sender, 21_000, 1_000);
        payment.data = Bytes::new();
        txs[100] = payment;
    }
    (state, txs)
}

#[test]
fn the_rule_picks_the_heavy_transaction() {
    for conflict in [false, true] {
        let (_, txs) = block(conflict);
        assert_eq!(heavy_late_transactions(&txs, 1), vec![HEAVY]);
    }
}

#[test]
fn a_hoisted_transaction_gives_the_sequential_result_with_and_without_a_conflict() {
    let input = cancun_block_input();
    for conflict in [false, true] {
        let (state, txs) = block(conflict);
        let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
        assert_eq!(sequential.included.len(), TXS as usize);
        let heavy_gas = sequential.receipts[HEAVY].cumulative_gas_used - sequential.receipts[HEAVY - 1].cumulative_gas_used;
        assert!(heavy_gas > 200_000, "the burner did not run: {heavy_gas} gas");
        for threads in [2, 4] {
            for _ in 0..10 {
                let parallel = execute_block(&state, &input, &txs, &ExecutionOptions::force_parallel(threads)).expect("parallel");
                assert_eq!(parallel.path, ExecutedPath::Parallel);
                assert!(parallel.same_result(&sequential), "conflict {conflict}, {threads} threads: parallel differs from sequential");
            }
        }
    }
}
