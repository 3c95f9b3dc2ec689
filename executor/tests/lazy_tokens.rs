//! Lazy ERC-20 credits (`executor/src/parallel/tokens.rs`), tested against the token contracts of
//! `../shared/corpora/contracts/`:
//!
//! - the listed code hashes are those of the corpus contracts;
//! - the property the credit relies on, checked on the EVM alone (sequential execution, no
//!   Block-STM): a `transfer` behaves identically (status, gas, logs, every other write) for every
//!   recipient balance of the same kind (zero, or non-zero without overflow), and writes the
//!   balance plus the amount;
//! - blocks of transfers to one holder run through Block-STM to the end with lazy credits and give
//!   exactly the sequential result, including where the holder's balance returns to zero, is read
//!   by `balanceOf`, or overflows (then the block falls back to sequential execution).

use alloy_primitives::{keccak256, Address, Bytes, TxKind, U256};
use pseq_executor::{
    block::ExecutedPath,
    execute_block,
    parallel::{tokens, FallbackReason},
    revm::{
        bytecode::Bytecode,
        context::{BlockEnv, CfgEnv, TxEnv},
        primitives::hardfork::SpecId,
    },
    state::InMemoryAccount,
    BlockInput, BlockOutput, BlockRules, ExecutionOptions, InMemoryState,
};
use std::collections::BTreeMap;

mod common;
use common::{balance_of_calldata, corpus_code};

/// The corpus contracts with lazy credits, with their `KNOWN_TOKENS` entry.
const TOKENS: &[(&str, usize)] = &[("ERC20Token", 0), ("WETH9", 1)];

fn addr(kind: u8, n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = kind;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

const TOKEN: u8 = 0x70;
const HOLDER: u8 = 0x40;

fn call(sender: Address, nonce: u64, to: Address, data: Bytes) -> TxEnv {
    TxEnv { caller: sender, gas_limit: 200_000, gas_price: 2, kind: TxKind::Call(to), data, nonce, chain_id: Some(1), ..Default::default() }
}

fn input(spec: SpecId) -> BlockInput {
    let mut cfg = CfgEnv::default();
    cfg.chain_id = 1;
    cfg.set_spec_and_mainnet_gas_params(spec);
    let env = BlockEnv { number: U256::from(1), beneficiary: addr(0xbe, 0), gas_limit: 1_000_000_000, basefee: 1, prevrandao: Some(Default::default()), ..Default::default() };
    let mut input = BlockInput::new(cfg, env);
    // The block-level system calls need contracts this world does not have (blockchain tests
    // cover them).
    input.rules = BlockRules::None;
    input
}

/// A world with token `name` at `addr(TOKEN, 0)` and the given token balances; every holder
/// also has ether for gas.
fn world(name: &str, balances: &[(Address, U256)]) -> (InMemoryState, Address, u64) {
    let (_, index) = TOKENS.iter().find(|(n, _)| *n == name).expect("a corpus token");
    let mapping = tokens::KNOWN_TOKENS[*index].balances_slot;
    let token = addr(TOKEN, 0);
    let storage = balances.iter().map(|(holder, balance)| (tokens::balance_slot(*holder, mapping), *balance)).collect();
    let mut state = InMemoryState::new();
    state.insert_account(token, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(corpus_code(name))), storage, ..Default::default() });
    for (holder, _) in balances {
        state.insert_account(*holder, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
    }
    (state, token, mapping)
}

#[test]
fn known_token_hashes_are_those_of_the_corpus_contracts() {
    for (name, index) in TOKENS {
        let known = &tokens::KNOWN_TOKENS[*index];
        assert_eq!(known.code_hash, keccak256(corpus_code(name)), "{name} ({})", known.name);
        assert_eq!(tokens::known_token(&known.code_hash), Some(known));
    }
}

/// The property lazy credits rest on, on the EVM alone: for a fixed sender, amount and fork, the
/// recipient's balance changes nothing in a transfer's outcome but the balance written, within
/// each kind (zero; non-zero without overflow).
#[test]
fn a_transfer_depends_on_the_recipient_balance_only_through_the_addition() {
    let sender = addr(HOLDER, 1);
    let recipient = addr(HOLDER, 2);
    let max = U256::MAX;
    for (name, _) in TOKENS {
        for spec in [SpecId::PETERSBURG, SpecId::ISTANBUL, SpecId::BERLIN, SpecId::CANCUN, SpecId::PRAGUE] {
            for amount in [U256::ZERO, U256::from(1), U256::from(12_345), U256::from(10u128.pow(20))] {
                let kinds: [&[U256]; 2] = [
                    &[U256::ZERO],
                    &[U256::from(1), U256::from(2), U256::from(7), U256::from(10u128.pow(18)), U256::from(1) << 128, max - amount - U256::from(1), max - amount],
                ];
                for values in kinds {
                    let mut reference: Option<(BlockOutput, U256)> = None;
                    for value in values {
                        let (state, token, mapping) = world(name, &[(sender, U256::from(10u128.pow(21))), (recipient, *value)]);
                        let slot = tokens::balance_slot(recipient, mapping);
                        let tx = call(sender, 0, token, tokens::transfer_calldata(recipient, amount));
                        let mut output = execute_block(&state, &input(spec), &[tx], &ExecutionOptions::sequential()).expect("executes");
                        let context = format!("{name} {spec:?} amount {amount} balance {value}");
                        assert!(output.receipts[0].success, "{context}: the transfer failed");
                        let written = output.state.accounts.get_mut(&token).and_then(|diff| diff.storage.remove(&slot));
                        // An unchanged slot is not in the diff (a zero amount).
                        assert_eq!(written.unwrap_or(*value), *value + amount, "{context}: the balance written");
                        match &reference {
                            None => reference = Some((output, *value)),
                            Some((first, first_value)) => {
                                assert_eq!(output.receipts, first.receipts, "{context}: receipt differs from balance {first_value}");
                                let strip = |o: &BlockOutput| -> BTreeMap<_, _> { o.state.accounts.iter().filter(|(_, d)| d.info.is_some() || !d.storage.is_empty()).map(|(a, d)| (*a, d.clone())).collect() };
                                assert_eq!(strip(&output), strip(first), "{context}: other writes differ from balance {first_value}");
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Executes `txs` sequentially and forced through Block-STM at 2, 4 and 8 threads (twice), and
/// returns the parallel outputs after checking each equals the sequential one.
fn parallel_equals_sequential(state: &InMemoryState, input: &BlockInput, txs: &[TxEnv], context: &str) -> Vec<BlockOutput> {
    let sequential = execute_block(state, input, txs, &ExecutionOptions::sequential()).expect("sequential");
    [2, 4, 8, 4, 8]
        .into_iter()
        .map(|threads| {
            let parallel = execute_block(state, input, txs, &ExecutionOptions::force_parallel(threads)).expect("parallel");
            assert!(parallel.same_result(&sequential), "{context}, {threads} threads: parallel differs from sequential");
            parallel
        })
        .collect()
}

#[test]
fn transfers_to_one_holder_credit_it_lazily_and_match_sequential_execution() {
    for (name, _) in TOKENS {
        for spec in [SpecId::ISTANBUL, SpecId::CANCUN, SpecId::PRAGUE] {
            let hot = addr(HOLDER, 0);
            let senders: Vec<Address> = (1..=400).map(|n| addr(HOLDER, n)).collect();
            // The hot holder starts at zero: its first credit pays for creating the slot.
            let mut balances: Vec<(Address, U256)> = senders.iter().map(|s| (*s, U256::from(1_000u64))).collect();
            balances.push((hot, U256::ZERO));
            let (state, token, _) = world(name, &balances);
            let mut hot_nonce = 0;
            let mut txs = Vec::new();
            for (i, sender) in senders.iter().enumerate() {
                // Some transfers exceed the sender's balance and revert; some are zero.
                let amount = match i % 23 { 7 => U256::from(5_000u64), 11 => U256::ZERO, _ => U256::from(1 + i as u64 % 9) };
                txs.push(call(*sender, 0, token, tokens::transfer_calldata(hot, amount)));
                match i % 97 {
                    // The holder reads its balance exactly through the credits below it.
                    40 => {
                        txs.push(call(hot, hot_nonce, token, balance_of_calldata(hot)));
                        hot_nonce += 1;
                    }
                    // It sends everything it has to another holder: its balance is zero again,
                    // so the next credit pays for setting the slot.
                    80 => {
                        let received: u64 = txs.iter().filter_map(|tx| tokens::decode_transfer(&tx.data)).filter(|(to, _)| *to == hot).map(|(_, a)| a.to::<u64>()).filter(|a| *a <= 1_000).sum();
                        let sent: u64 = txs.iter().filter(|tx| tx.caller == hot).filter_map(|tx| tokens::decode_transfer(&tx.data)).map(|(_, a)| a.to::<u64>()).sum();
                        txs.push(call(hot, hot_nonce, token, tokens::transfer_calldata(senders[0], U256::from(received - sent))));
                        hot_nonce += 1;
                    }
                    _ => {}
                }
            }
            let context = format!("{name} {spec:?}");
            for parallel in parallel_equals_sequential(&state, &input(spec), &txs, &context) {
                assert_eq!(parallel.path, ExecutedPath::Parallel, "{context}");
                let credits = parallel.stats.map_or(0, |s| s.lazy_token_credits);
                assert!(credits > 300, "{context}: only {credits} lazy credits");
            }
        }
    }
}

#[test]
fn a_credit_that_would_overflow_sends_the_block_to_sequential_execution() {
    for (name, _) in TOKENS {
        let whale = addr(HOLDER, 0);
        let senders: Vec<Address> = (1..=50).map(|n| addr(HOLDER, n)).collect();
        let mut balances: Vec<(Address, U256)> = senders.iter().map(|s| (*s, U256::from(1_000u64))).collect();
        balances.push((whale, U256::MAX - U256::from(100u64)));
        let (state, token, _) = world(name, &balances);
        // Credits of 3 each: the 34th overflows (ERC20Token reverts it, WETH9 wraps around).
        let txs: Vec<TxEnv> = senders.iter().map(|s| call(*s, 0, token, tokens::transfer_calldata(whale, U256::from(3u64)))).collect();
        let context = name.to_string();
        for parallel in parallel_equals_sequential(&state, &input(SpecId::CANCUN), &txs, &context) {
            assert_eq!(parallel.path, ExecutedPath::ParallelFallback(FallbackReason::LazyCheckFailed), "{context}");
        }
    }
}
