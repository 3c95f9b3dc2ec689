//! Held balances (`parallel::held`): a transaction that calls a contract without looking at its
//! ether balance does not read that balance, and one that only adds to it writes a credit. A
//! vault that many senders pay into (WETH's deposits) then conflicts only through its storage;
//! payments out of it, `SELFBALANCE` and `BALANCE` read it exactly, in block order.

mod common;

use alloy_primitives::{Address, Bytes, TxKind, U256};
use common::{addr, cancun_block_input};
use pseq_executor::{
    block::ExecutedPath,
    execute_block,
    revm::{bytecode::Bytecode, context::TxEnv},
    state::InMemoryAccount,
    BlockOutput, ExecutionOptions, InMemoryState, Techniques,
};

/// A vault, dispatching on its calldata: none deposits (`SSTORE(CALLER, SLOAD(CALLER) +
/// CALLVALUE)`), first byte 1 pays one wei back to the caller (`CALL(GAS, CALLER, 1, 0, 0, 0,
/// 0)`, which fails once the vault is empty), any other stores `SELFBALANCE` in slot 1.
const VAULT: &[u8] = &[
    0x36, 0x15, 0x60, 0x26, 0x57, // no calldata: jump to the deposit
    0x60, 0x00, 0x35, 0x60, 0xf8, 0x1c, 0x60, 0x01, 0x14, 0x60, 0x16, 0x57, // first byte 1: jump to the payment
    0x47, 0x60, 0x01, 0x55, 0x00, // SSTORE(1, SELFBALANCE)
    0x5b, 0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x60, 0x01, 0x33, 0x5a, 0xf1, 0x50, 0x00, // pay one wei
    0x5b, 0x33, 0x54, 0x34, 0x01, 0x33, 0x55, 0x00, // deposit
];

/// The tests of this file run one at a time: two of them check that, without held balances,
/// transactions running side by side conflict, which needs the machine's cores free for the
/// workers of one block.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vault() -> Address {
    addr(0xa0, 1)
}

/// `CALL(GAS, vault, CALLVALUE, 0, 0, 0, 0)`: deposits into the vault from inside a call.
fn router_code() -> Vec<u8> {
    let mut code = vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x34, 0x73];
    code.extend_from_slice(vault().as_slice());
    code.extend_from_slice(&[0x5a, 0xf1, 0x50, 0x00]);
    code
}

/// `SSTORE(0, BALANCE(vault))`.
fn reader_code() -> Vec<u8> {
    let mut code = vec![0x73];
    code.extend_from_slice(vault().as_slice());
    code.extend_from_slice(&[0x31, 0x60, 0, 0x55, 0x00]);
    code
}

/// Router `n`: routers deposit under their own address, so each sender uses one of its own.
fn router(n: u64) -> Address {
    addr(0xb0, n)
}

fn reader() -> Address {
    addr(0xa0, 3)
}

/// The vault (holding `vault_wei`), the reader, and `senders` funded senders with a router each.
fn world(senders: u64, vault_wei: u64) -> InMemoryState {
    let mut state = InMemoryState::new();
    let contract = |code: Vec<u8>, balance: u64| InMemoryAccount { balance: U256::from(balance), nonce: 1, code: Some(Bytecode::new_raw(Bytes::from(code))), ..Default::default() };
    state.insert_account(vault(), contract(VAULT.to_vec(), vault_wei));
    state.insert_account(reader(), contract(reader_code(), 0));
    for n in 0..senders {
        state.insert_account(addr(0x5e, n), InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
        state.insert_account(router(n), contract(router_code(), 0));
    }
    state
}

fn call(sender: u64, to: Address, value: u64, data: &'static [u8]) -> TxEnv {
    TxEnv {
        caller: addr(0x5e, sender),
        gas_limit: 100_000,
        gas_price: 1,
        kind: TxKind::Call(to),
        value: U256::from(value),
        data: Bytes::from_static(data),
        chain_id: Some(1),
        ..Default::default()
    }
}

fn parallel(state: &InMemoryState, txs: &[TxEnv], options: ExecutionOptions, sequential: &BlockOutput) -> pseq_executor::parallel::ParallelStats {
    let output = execute_block(state, &cancun_block_input(), txs, &options).expect("parallel");
    assert_eq!(output.path, ExecutedPath::Parallel, "{options:?}");
    assert!(output.same_result(sequential), "{options:?}: parallel differs from sequential");
    output.stats.expect("Block-STM ran")
}

#[test]
fn deposits_into_one_contract_conflict_with_nothing() {
    let _serial = one_at_a_time();
    const TXS: u64 = 200;
    let state = world(TXS, 0);
    // Distinct senders, each depositing directly or through its router.
    let txs: Vec<TxEnv> = (0..TXS).map(|n| call(n, if n % 3 == 0 { router(n) } else { vault() }, n + 1, &[])).collect();
    let sequential = execute_block(&state, &cancun_block_input(), &txs, &ExecutionOptions::sequential()).expect("sequential");
    assert_eq!(sequential.included.len(), TXS as usize);
    for threads in [2, 4, 8] {
        for _ in 0..5 {
            let stats = parallel(&state, &txs, ExecutionOptions::force_parallel(threads), &sequential);
            // Every transaction writes its own slot and a credit to the vault: no read of any
            // transaction depends on another one.
            assert_eq!((stats.aborts, stats.dependencies), (0, 0), "{threads} threads: {stats:?}");
            assert_eq!(stats.held_credits, TXS as usize, "{threads} threads: {stats:?}");
        }
    }
    // Without held balances every deposit reads the balance the one below it wrote: deposits
    // running side by side conflict (a run where one thread did all the work has nothing to
    // show; the test machine may be busy, so up to 500 runs are allowed).
    let mut conflicts = 0;
    for _ in 0..500 {
        let stats = parallel(&state, &txs, ExecutionOptions::force_parallel(2).without(Techniques::HELD_BALANCES), &sequential);
        assert_eq!(stats.held_credits, 0);
        conflicts += stats.aborts + stats.dependencies;
        if conflicts > 0 {
            break;
        }
    }
    assert!(conflicts > 0, "deposits without held balances never conflicted");
}

#[test]
fn payments_out_and_balance_reads_between_deposits_are_exact() {
    let _serial = one_at_a_time();
    const TXS: u64 = 160;
    // The vault starts with two wei: payments out of it fail once deposits no longer cover them.
    let state = world(TXS, 2);
    let txs: Vec<TxEnv> = (0..TXS)
        .map(|n| match n % 8 {
            0 | 1 => call(n, vault(), n % 3, &[]),
            2 => call(n, router(n), 1, &[]),
            3 | 4 => call(n, vault(), 0, &[1]),
            5 => call(n, vault(), n % 2, &[2]),
            6 => call(n, reader(), 0, &[]),
            _ => call(n, vault(), 0, &[1]),
        })
        .collect();
    let sequential = execute_block(&state, &cancun_block_input(), &txs, &ExecutionOptions::sequential()).expect("sequential");
    assert_eq!(sequential.included.len(), TXS as usize);
    for threads in [2, 4, 8] {
        for _ in 0..10 {
            let stats = parallel(&state, &txs, ExecutionOptions::force_parallel(threads), &sequential);
            assert!(stats.held_credits > 0, "{threads} threads: {stats:?}");
        }
    }
}

/// `CALL(GAS, COINBASE, CALLVALUE, 0, 0, 0, 0)`: a tip to the block's beneficiary.
const TIPPER: &[u8] = &[0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x34, 0x41, 0x5a, 0xf1, 0x50, 0x00];

/// Counts down from 262,144 (about six million gas), then `SELFDESTRUCT(CALLER)`.
const SLOW_DESTRUCTOR: &[u8] = &[0x62, 0x04, 0x00, 0x00, 0x5b, 0x60, 0x01, 0x90, 0x03, 0x80, 0x60, 0x04, 0x57, 0x50, 0x33, 0xff];

#[test]
fn tips_to_a_beneficiary_destroyed_below_them_are_charged_as_sequentially() {
    let _serial = one_at_a_time();
    // Before Cancun a contract beneficiary destroyed by the block's first transaction is, for
    // the tips above it, an account without code re-created by that transaction's fee. Tips that
    // run while the slow first transaction does hold the beneficiary's balance and call its code;
    // its absolute write (the account gone) must send them back to run again.
    const TXS: u64 = 64;
    let mut input = cancun_block_input();
    input.cfg.set_spec_and_mainnet_gas_params(pseq_executor::revm::primitives::hardfork::SpecId::SHANGHAI);
    let beneficiary = input.block.beneficiary;
    let tipper = addr(0xa0, 9);
    let mut state = InMemoryState::new();
    let contract = |code: &[u8]| InMemoryAccount { balance: U256::from(5), nonce: 1, code: Some(Bytecode::new_raw(Bytes::copy_from_slice(code))), ..Default::default() };
    state.insert_account(beneficiary, contract(SLOW_DESTRUCTOR));
    state.insert_account(tipper, contract(TIPPER));
    for n in 0..TXS {
        state.insert_account(addr(0x5e, n), InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
    }
    let mut txs = vec![TxEnv { gas_limit: 8_000_000, ..call(0, beneficiary, 0, &[]) }];
    txs.extend((1..TXS).map(|n| call(n, tipper, 1, &[])));
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    assert_eq!(sequential.included.len(), TXS as usize);
    for threads in [2, 4, 8] {
        for _ in 0..10 {
            let output = execute_block(&state, &input, &txs, &ExecutionOptions::force_parallel(threads)).expect("parallel");
            assert_eq!(output.path, ExecutedPath::Parallel);
            assert!(output.same_result(&sequential), "{threads} threads: parallel differs from sequential");
        }
    }
}

#[test]
fn tips_to_the_beneficiary_wait_for_nothing() {
    let _serial = one_at_a_time();
    // Searchers pay the block's beneficiary from contracts. Reading its balance exactly waits for
    // every lower transaction's fee; holding it, a tip is one more credit beside the fee.
    const TXS: u64 = 200;
    let input = cancun_block_input();
    let tipper = addr(0xa0, 9);
    let mut state = world(TXS, 0);
    state.insert_account(input.block.beneficiary, InMemoryAccount { balance: U256::from(1), nonce: 7, ..Default::default() });
    state.insert_account(tipper, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(Bytes::from_static(TIPPER))), ..Default::default() });
    let txs: Vec<TxEnv> = (0..TXS).map(|n| call(n, tipper, n + 1, &[])).collect();
    let sequential = execute_block(&state, &input, &txs, &ExecutionOptions::sequential()).expect("sequential");
    assert_eq!(sequential.included.len(), TXS as usize);
    for threads in [2, 4, 8] {
        for _ in 0..5 {
            let stats = parallel(&state, &txs, ExecutionOptions::force_parallel(threads), &sequential);
            assert_eq!((stats.aborts, stats.dependencies), (0, 0), "{threads} threads: {stats:?}");
        }
    }
    let mut waits = 0;
    for _ in 0..500 {
        let stats = parallel(&state, &txs, ExecutionOptions::force_parallel(2).without(Techniques::HELD_BALANCES), &sequential);
        waits += stats.aborts + stats.dependencies;
        if waits > 0 {
            break;
        }
    }
    assert!(waits > 0, "tips without held balances never waited");
}
