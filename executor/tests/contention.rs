//! The default parallel path gives up on Block-STM when conflicts waste too many executions
//! (a chain of dependent transactions) and runs the block sequentially, with the same result;
//! blocks of independent transactions keep running in parallel. `--force-parallel` never gives up.

mod common;

use alloy_primitives::{Bytes, TxKind, U256};
use common::{addr, cancun_block_input};
use pseq_executor::{
    block::ExecutedPath,
    execute_block,
    parallel::FallbackReason,
    revm::{bytecode::Bytecode, context::TxEnv},
    state::InMemoryAccount,
    BlockInput, BlockOutput, ExecutionOptions, InMemoryState,
};

/// `SSTORE(0, SLOAD(0) + 1)`.
const COUNTER: &[u8] = &[0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00];
const TXS: u64 = 1_000;

/// `TXS` calls from distinct senders; `counters` counter contracts, called in rotation. A chain
/// (one counter) carries a byte of calldata, which the counter ignores: calls without calldata
/// would look like plain transfers to the small-block rule.
fn block(counters: u64) -> (InMemoryState, BlockInput, Vec<TxEnv>) {
    let data = if counters == 1 { Bytes::from_static(&[1]) } else { Bytes::new() };
    let mut state = InMemoryState::new();
    for c in 0..counters {
        state.insert_account(addr(0xc0, c), InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(COUNTER))), ..Default::default() });
    }
    let mut txs = Vec::new();
    for i in 0..TXS {
        let sender = addr(0x5e, i);
        state.insert_account(sender, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
        txs.push(TxEnv {
            caller: sender,
            gas_limit: 100_000,
            gas_price: 1,
            kind: TxKind::Call(addr(0xc0, i % counters)),
            data: data.clone(),
            nonce: 0,
            chain_id: Some(1),
            ..Default::default()
        });
    }
    (state, cancun_block_input(), txs)
}

fn run(counters: u64, options: ExecutionOptions) -> (BlockOutput, BlockOutput) {
    let (state, input, txs) = block(counters);
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    let parallel = execute_block(&state, &input, &txs, &options).expect("parallel");
    assert!(parallel.same_result(&sequential), "parallel differs from sequential ({:?})", parallel.path);
    (sequential, parallel)
}

#[test]
fn a_dependent_chain_falls_back_to_sequential_execution() {
    // Block-STM's waste depends on how the threads interleave: where the other threads do not
    // get a core (a loaded machine), the chain runs one transaction after the other and wastes
    // nothing. On four threads most attempts waste more than nine executions in twenty; every
    // attempt must give the sequential result, and some must give up.
    let mut gave_up = 0;
    for _ in 0..20 {
        let (sequential, parallel) = run(1, ExecutionOptions::parallel(4));
        assert_eq!(sequential.state.accounts[&addr(0xc0, 0)].storage[&U256::ZERO], U256::from(TXS));
        if parallel.path == ExecutedPath::ParallelFallback(FallbackReason::Contention) {
            gave_up += 1;
        }
    }
    assert!(gave_up >= 1, "none of 20 chains fell back on contention");
}

#[test]
fn independent_calls_and_forced_runs_stay_parallel() {
    for _ in 0..5 {
        // The default path takes these independent calls to the partitioned path; Block-STM
        // must not give up on them either.
        let (_, parallel) = run(TXS, ExecutionOptions::parallel(4));
        assert_eq!(parallel.path, ExecutedPath::Partitioned, "independent calls were not partitioned");
        let (_, block_stm) = run(TXS, ExecutionOptions::force_parallel(4));
        assert_eq!(block_stm.path, ExecutedPath::Parallel, "independent calls left Block-STM");
        let (_, forced) = run(1, ExecutionOptions::force_parallel(4));
        assert_eq!(forced.path, ExecutedPath::Parallel, "a forced run gave up");
    }
}

