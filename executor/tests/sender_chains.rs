//! Transactions of one sender are a chain: each needs the nonce the one before it leaves. When
//! Block-STM runs a sender's next transaction next to the one before it, the nonce it reads is
//! too high; the worker then makes it wait for that transaction instead of recording it invalid
//! and aborting it at validation (`parallel::worker`). A nonce that is still too high once the
//! lower transaction has executed is the transaction's own fault: it is invalid, as sequentially.

mod common;

use alloy_primitives::{Address, Bytes, TxKind, U256};
use common::{addr, cancun_block_input};
use pseq_executor::{
    block::{ExecutedPath, InvalidTxPolicy},
    execute_block,
    revm::{bytecode::Bytecode, context::TxEnv},
    state::InMemoryAccount,
    ExecutionOptions, InMemoryState, Techniques,
};

/// `SSTORE(0, SLOAD(0) + 1)`.
const COUNTER: &[u8] = &[0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00];
const TXS: u64 = 120;

fn call(caller: Address, nonce: u64, to: Address) -> TxEnv {
    TxEnv { caller, nonce, gas_limit: 100_000, gas_price: 1, kind: TxKind::Call(to), data: Bytes::from_static(&[1]), chain_id: Some(1), ..Default::default() }
}

/// `TXS` calls to distinct counters; every third is sent by one account (nonces `nonces` in
/// order), the others by accounts of their own.
fn block(nonces: impl Fn(u64) -> u64) -> (InMemoryState, Vec<TxEnv>) {
    let mut state = InMemoryState::new();
    let funded = InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() };
    let chain_sender = addr(0x5c, 0);
    state.insert_account(chain_sender, funded.clone());
    let mut txs = Vec::new();
    for i in 0..TXS {
        let counter = addr(0xc0, i);
        state.insert_account(counter, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(COUNTER))), ..Default::default() });
        if i % 3 == 0 {
            txs.push(call(chain_sender, nonces(i / 3), counter));
        } else {
            let sender = addr(0x5e, i);
            state.insert_account(sender, funded.clone());
            txs.push(call(sender, 0, counter));
        }
    }
    (state, txs)
}

#[test]
fn a_senders_chain_of_calls_waits_for_its_nonces_and_aborts_nothing() {
    let input = cancun_block_input();
    let (state, txs) = block(|n| n);
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    assert_eq!(sequential.included.len(), TXS as usize);
    for threads in [2, 4, 8] {
        for _ in 0..10 {
            let parallel = execute_block(&state, &input, &txs, &ExecutionOptions::force_parallel(threads)).expect("parallel");
            assert_eq!(parallel.path, ExecutedPath::Parallel);
            assert!(parallel.same_result(&sequential), "{threads} threads: parallel differs from sequential");
            // The only conflicts of the block are the chain's nonces, and each link waits for
            // the one below it: no incarnation ever reads a value that changes later.
            let stats = parallel.stats.expect("Block-STM ran");
            assert_eq!(stats.aborts, 0, "{threads} threads: {stats:?}");
        }
    }
}

#[test]
fn a_nonce_gap_in_the_chain_is_invalid_as_sequentially_and_ends_the_wait() {
    let input = cancun_block_input();
    // The chain's eleventh transaction skips a nonce: it and every later link are invalid.
    let (state, txs) = block(|n| if n >= 10 { n + 1 } else { n });
    let skip = |mut options: ExecutionOptions| {
        options.invalid_tx = InvalidTxPolicy::Skip;
        options
    };
    let sequential = execute_block(&state, &input, &txs, &skip(ExecutionOptions::sequential())).expect("sequential");
    assert_eq!(sequential.skipped.len(), (TXS / 3 - 10) as usize, "{:?}", sequential.skipped);
    for threads in [2, 4] {
        for _ in 0..10 {
            let parallel = execute_block(&state, &input, &txs, &skip(ExecutionOptions::force_parallel(threads))).expect("parallel");
            assert!(parallel.same_result(&sequential), "{threads} threads: parallel differs from sequential");
            assert_eq!(parallel.skipped, sequential.skipped);
        }
    }
    // Rejecting invalid transactions, both paths name the same first one.
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).map(|_| ()).unwrap_err().to_string();
    let parallel = execute_block(&state, &input, &txs, &ExecutionOptions::force_parallel(2)).map(|_| ()).unwrap_err().to_string();
    assert_eq!(parallel, sequential);
}

#[test]
fn without_nonce_waits_the_chain_still_runs_exact() {
    let input = cancun_block_input();
    let (state, txs) = block(|n| n);
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    let options = ExecutionOptions::force_parallel(4).without(Techniques::NONCE_WAITS);
    for _ in 0..10 {
        let parallel = execute_block(&state, &input, &txs, &options).expect("parallel");
        assert!(parallel.same_result(&sequential), "parallel differs from sequential");
    }
}
