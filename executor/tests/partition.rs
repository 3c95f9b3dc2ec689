//! The partitioned path: blocks whose transactions split into independent groups run group by
//! group on their own threads; a plan that execution proves wrong (two groups meeting on state
//! their transactions' fields did not show) is thrown away. Either way the result is exactly the
//! sequential one.

mod common;

use alloy_primitives::{Address, Bytes, TxKind, U256};
use common::{addr, cancun_block_input};
use pseq_executor::{
    block::ExecutedPath,
    execute_block,
    revm::{bytecode::Bytecode, context::TxEnv},
    state::InMemoryAccount,
    BlockInput, BlockOutput, ExecutionOptions, InMemoryState,
};

const ETHER: u128 = 1_000_000_000_000_000_000;

/// `SSTORE(0, SLOAD(0) + 1)`.
const COUNTER: &[u8] = &[0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00];
/// `SSTORE(0, BALANCE(COINBASE))`.
const COINBASE_READER: &[u8] = &[0x41, 0x31, 0x60, 0, 0x55, 0x00];

/// Code that calls `target` with no value and all gas, then stops.
fn caller_of(target: Address) -> Bytes {
    let mut code = vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x73];
    code.extend_from_slice(target.as_slice());
    code.extend_from_slice(&[0x5a, 0xf1, 0x00]);
    Bytes::from(code)
}

/// Code that stores `token.balanceOf(holder)` in its slot 0.
fn balance_reader(token: Address, holder: Address) -> Bytes {
    // mem[0..4] = balanceOf's selector, mem[4..36] = the holder's word.
    let mut code = vec![0x63, 0x70, 0xa0, 0x82, 0x31, 0x60, 0xe0, 0x1b, 0x60, 0, 0x52, 0x73];
    code.extend_from_slice(holder.as_slice());
    code.extend_from_slice(&[0x60, 4, 0x52]);
    // STATICCALL(gas, token, 0, 36, 0, 32); SSTORE(0, mem[0..32]).
    code.extend_from_slice(&[0x60, 32, 0x60, 0, 0x60, 36, 0x60, 0, 0x73]);
    code.extend_from_slice(token.as_slice());
    code.extend_from_slice(&[0x5a, 0xfa, 0x50, 0x60, 0, 0x51, 0x60, 0, 0x55, 0x00]);
    Bytes::from(code)
}

fn contract(state: &mut InMemoryState, address: Address, code: Bytes) {
    state.insert_account(address, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(code)), ..Default::default() });
}

fn tx(sender: Address, to: Address, value: u128, nonce: u64) -> TxEnv {
    TxEnv { caller: sender, gas_limit: 100_000, gas_price: 2, kind: TxKind::Call(to), value: U256::from(value), nonce, chain_id: Some(1), ..Default::default() }
}

/// Runs the block sequentially and with `options`; asserts the same result; returns the second.
fn same_as_sequential(state: &InMemoryState, input: &BlockInput, txs: &[TxEnv], options: ExecutionOptions) -> BlockOutput {
    let sequential = execute_block(state, input, txs, &ExecutionOptions::sequential()).expect("sequential");
    let other = execute_block(state, input, txs, &options).expect("other path");
    assert!(other.same_result(&sequential), "{options:?} ({:?}) differs from sequential", other.path);
    other
}

/// `count` funded senders, each sending one transaction built by `make(i, sender)`.
fn senders(state: &mut InMemoryState, count: u64, mut make: impl FnMut(u64, Address) -> TxEnv) -> Vec<TxEnv> {
    (0..count)
        .map(|i| {
            let sender = addr(0x5e, i);
            state.insert_account(sender, InMemoryAccount { balance: U256::from(10 * ETHER), ..Default::default() });
            make(i, sender)
        })
        .collect()
}

#[test]
fn independent_transfers_and_a_hot_recipient_run_partitioned() {
    let mut state = InMemoryState::new();
    let hot = addr(0x70, 0);
    // One transfer in five pays one exchange-like account (credited lazily); the others pay
    // accounts of their own, a few of them new.
    let txs = senders(&mut state, 2_000, |i, sender| {
        let to = if i % 5 == 0 { hot } else { addr(0x7e, i) };
        tx(sender, to, ETHER / 100 + i as u128, 0)
    });
    for i in (0..2_000).step_by(3) {
        state.insert_account(addr(0x7e, i), InMemoryAccount { balance: U256::from(1), ..Default::default() });
    }
    let input = cancun_block_input();
    for threads in [2, 3, 4] {
        let output = same_as_sequential(&state, &input, &txs, ExecutionOptions::parallel(threads));
        assert_eq!(output.path, ExecutedPath::Partitioned, "{threads} threads");
    }
    // The hot account received exactly its transfers.
    let paid: u128 = (0..2_000u128).step_by(5).map(|i| ETHER / 100 + i).sum();
    let output = execute_block(&state, &input, &txs, &ExecutionOptions::parallel(2)).expect("runs");
    let hot_after = output.state.accounts[&hot].info.as_ref().expect("exists").balance;
    assert_eq!(hot_after, U256::from(paid));
}

#[test]
fn a_plan_that_execution_proves_wrong_is_thrown_away() {
    // Senders call one of two front contracts; both fronts call one counter. The plan sees two
    // independent groups (by front); execution shows both writing the counter's slot.
    let mut state = InMemoryState::new();
    let counter = addr(0xc0, 0);
    contract(&mut state, counter, Bytes::from_static(COUNTER));
    let fronts = [addr(0xf0, 0), addr(0xf0, 1)];
    for front in fronts {
        contract(&mut state, front, caller_of(counter));
    }
    let txs = senders(&mut state, 200, |i, sender| tx(sender, fronts[i as usize % 2], 0, 0));
    let input = cancun_block_input();
    let output = same_as_sequential(&state, &input, &txs, ExecutionOptions::partitioned(2));
    assert_eq!(output.path, ExecutedPath::Parallel, "a conflicting plan was kept");
    assert_eq!(output.state.accounts[&counter].storage[&U256::ZERO], U256::from(200));

    // Fronts calling counters of their own are independent: the same shape of block is kept.
    let mut state = InMemoryState::new();
    for (i, front) in fronts.iter().enumerate() {
        let own = addr(0xc0, i as u64);
        contract(&mut state, own, Bytes::from_static(COUNTER));
        contract(&mut state, *front, caller_of(own));
    }
    let txs = senders(&mut state, 200, |i, sender| tx(sender, fronts[i as usize % 2], 0, 0));
    let output = same_as_sequential(&state, &input, &txs, ExecutionOptions::partitioned(2));
    assert_eq!(output.path, ExecutedPath::Partitioned);
}

#[test]
fn reading_the_beneficiary_is_not_partitioned() {
    // Every group's fees go to the beneficiary as deltas: a transaction that reads its balance
    // needs every fee before it, so such a plan is thrown away.
    let mut state = InMemoryState::new();
    let readers: Vec<Address> = (0..8).map(|i| addr(0xbd, i)).collect();
    for reader in &readers {
        contract(&mut state, *reader, Bytes::from_static(COINBASE_READER));
    }
    let mut txs = senders(&mut state, 400, |i, sender| tx(sender, addr(0x7e, i), ETHER / 10, 0));
    // Each reader is called once, by a sender of its own, late in the block.
    for (j, reader) in readers.iter().enumerate() {
        let sender = addr(0x5f, j as u64);
        state.insert_account(sender, InMemoryAccount { balance: U256::from(ETHER), ..Default::default() });
        txs.insert(300 + j * 10, tx(sender, *reader, 0, 0));
    }
    let input = cancun_block_input();
    for options in [ExecutionOptions::partitioned(2), ExecutionOptions::parallel(2)] {
        let output = same_as_sequential(&state, &input, &txs, options);
        assert_ne!(output.path, ExecutedPath::Partitioned, "{options:?}");
    }
}

#[test]
fn blocks_split_across_runs_of_a_session_stay_exact() {
    // A sequencer gives a block's transactions run by run: each run is planned on the block so
    // far, including the writes of the runs before it.
    let mut state = InMemoryState::new();
    let hot = addr(0x70, 0);
    let txs = senders(&mut state, 600, |i, sender| tx(sender, if i % 2 == 0 { hot } else { addr(0x7e, i % 50) }, ETHER / 1000, 0));
    let input = cancun_block_input();
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    // On Block-STM too: a later run reads accounts the runs before it wrote (the hot recipient,
    // the recipients paid again) from the block so far, which is not the pre-block state.
    for (options, path) in [(ExecutionOptions::partitioned(2), ExecutedPath::Partitioned), (ExecutionOptions::force_parallel(2), ExecutedPath::Parallel)] {
        let mut session = pseq_executor::BlockSession::new(&state, &input, options).expect("session");
        for run in txs.chunks(150) {
            session.append(run).expect("run");
        }
        let output = session.finish().expect("finish");
        assert!(output.same_result(&sequential), "{options:?}: run by run differs from sequential");
        assert_eq!(output.path, path, "{options:?}");
    }
}

#[test]
fn token_transfers_to_one_holder_are_credited_in_block_order() {
    use common::corpus_code;
    use pseq_executor::parallel::tokens;
    let token = addr(0x70, 1);
    let hot = addr(0x70, 2);
    for (hot_balance, read_midway) in [(0u64, false), (7, false), (0, true)] {
        let mut state = InMemoryState::new();
        let mut storage = alloy_primitives::map::HashMap::default();
        for i in 0..400 {
            storage.insert(tokens::balance_slot(addr(0x5e, i), 0), U256::from(1_000 + i));
        }
        storage.insert(tokens::balance_slot(hot, 0), U256::from(hot_balance));
        state.insert_account(token, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(corpus_code("ERC20Token"))), storage, ..Default::default() });
        // Most transfers pay the hot holder (its balance starts at zero in some blocks: the first
        // credit pays for a new slot); the others pay holders of their own.
        let mut txs = senders(&mut state, 400, |i, sender| {
            let to = if i % 4 == 3 { addr(0x7e, i) } else { hot };
            TxEnv { data: tokens::transfer_calldata(to, U256::from(1 + i % 3)), ..tx(sender, token, 0, 0) }
        });
        if read_midway {
            // A contract reads the holder's balance: the plan does not see it (the call goes to
            // the contract), execution does.
            let reader = addr(0x5f, 0);
            let contract_address = addr(0xc1, 0);
            contract(&mut state, contract_address, balance_reader(token, hot));
            state.insert_account(reader, InMemoryAccount { balance: U256::from(ETHER), ..Default::default() });
            txs.insert(200, tx(reader, contract_address, 0, 0));
        }
        let input = cancun_block_input();
        for options in [ExecutionOptions::parallel(2), ExecutionOptions::partitioned(3)] {
            let output = same_as_sequential(&state, &input, &txs, options);
            if read_midway {
                assert_ne!(output.path, ExecutedPath::Partitioned, "a balance read between credits was kept");
            } else {
                assert_eq!(output.path, ExecutedPath::Partitioned, "{options:?}");
            }
        }
    }
}

#[test]
fn repeated_contract_calls_are_partitioned_by_default_and_one_off_calls_are_not() {
    // Senders call `fronts` front contracts in turn with calldata (the counters ignore it), each
    // front `calls_each` times; with `shared`, every front calls one counter.
    let input = cancun_block_input();
    let block = |fronts: u64, calls_each: u64, shared: bool, one_off: bool| {
        let mut state = InMemoryState::new();
        for i in 0..fronts {
            let counter = addr(0xc0, if shared { 0 } else { i });
            contract(&mut state, counter, Bytes::from_static(COUNTER));
            contract(&mut state, addr(0xf0, i), caller_of(counter));
        }
        let calldata = Bytes::from_static(&[0xd0, 0x9d, 0xe0, 0x8a]);
        let mut txs = senders(&mut state, fronts * calls_each, |i, sender| TxEnv { data: calldata.clone(), ..tx(sender, addr(0xf0, i % fronts), 0, 0) });
        if one_off {
            // One more contract, called once: its state could meet anything.
            let other = addr(0xf1, 0);
            contract(&mut state, other, caller_of(addr(0xc1, 0)));
            let sender = addr(0x5f, 0);
            state.insert_account(sender, InMemoryAccount { balance: U256::from(ETHER), ..Default::default() });
            txs.insert(10, TxEnv { data: calldata, ..tx(sender, other, 0, 0) });
        }
        // 16 M gas in all, above the parallel minimum whatever the count.
        let gas_limit = 16_000_000 / txs.len() as u64;
        (state, txs.into_iter().map(|tx| TxEnv { gas_limit, ..tx }).collect::<Vec<_>>())
    };
    let minimum = pseq_executor::partition::MIN_CALLS_PER_CONTRACT as u64;
    for (fronts, calls_each, shared, one_off, partitioned) in [
        (2, minimum + 68, false, false, true),
        // Every contract called often enough, but the fronts share their counter: the first
        // stage shows it and Block-STM runs the block.
        (2, minimum + 68, true, false, false),
        (2, minimum + 68, false, true, false),
        // Fewer calls per contract than the rule asks for.
        (4, minimum - 1, false, false, false),
    ] {
        let (state, txs) = block(fronts, calls_each, shared, one_off);
        assert!(txs.len() >= pseq_executor::partition::MIN_PARTITION_TXS);
        let output = same_as_sequential(&state, &input, &txs, ExecutionOptions::parallel(2));
        let case = format!("{fronts} fronts, {calls_each} calls each, shared {shared}, one-off {one_off}");
        assert_eq!(output.path == ExecutedPath::Partitioned, partitioned, "{case}: {:?}", output.path);
        if shared {
            assert_eq!(output.state.accounts[&addr(0xc0, 0)].storage[&U256::ZERO], U256::from(fronts * calls_each), "{case}");
        }
        // The same block under the test rule (every split tried) is partitioned wherever the
        // groups really are independent: the default rule's refusals above are its own.
        let always = same_as_sequential(&state, &input, &txs, ExecutionOptions::partitioned(2));
        assert_eq!(always.path == ExecutedPath::Partitioned, !shared, "{case}, every split tried: {:?}", always.path);
    }
}
