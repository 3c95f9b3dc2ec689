//! Lazy ERC-20 credits on mainnet's USDT (TetherToken at 0xdAC17F95…), with its real code and
//! storage from the mainnet-blocks corpus (`executor/tests/lazy_tokens.rs` covers the corpus's
//! contracts the same way):
//!
//! - the listed code hash is USDT's, and its balances mapping is where the entry says;
//! - on the EVM alone, a USDT `transfer` behaves identically for every recipient balance of the
//!   same kind (zero; non-zero without overflow) except for the balance written, which is the
//!   balance plus the amount;
//! - the mainnet blocks with many USDT transfers to one recipient credit it lazily under
//!   Block-STM and give the sequential result.

use alloy_primitives::{address, keccak256, Address, TxKind, U256};
use pseq::{corpus, replay};
use pseq_executor::{
    execute_block,
    parallel::tokens,
    revm::{bytecode::Bytecode, context::TxEnv, primitives::hardfork::SpecId, state::AccountInfo},
    state::InMemoryAccount,
    BlockOutput, ExecutionOptions, InMemoryState,
};
use std::collections::BTreeMap;

const USDT: Address = address!("dac17f958d2ee523a2206206994597c13d831ec7");
/// Blocks with the most USDT transfers to one recipient (56 of 177, 50 of 473 transactions).
const USDT_BLOCKS: [u64; 2] = [12_522_062, 16_146_267];

fn block(number: u64) -> replay::LoadedBlock {
    let dir = corpus::mainnet_blocks().expect("mainnet blocks corpus");
    replay::load_block(&dir, number, &replay::block_hashes(&dir)).expect("the block loads")
}

/// USDT's account (with code) and the storage the block's pre-state holds for it.
fn usdt(block: &replay::LoadedBlock) -> (AccountInfo, Vec<(U256, U256)>) {
    let (_, info, storage) = block.state.accounts().find(|(address, _, _)| **address == USDT).expect("USDT in the pre-state");
    (info.clone(), storage.iter().map(|(k, v)| (*k, *v)).collect())
}

fn usdt_entry() -> &'static tokens::KnownToken {
    tokens::KNOWN_TOKENS.iter().find(|t| t.name.starts_with("TetherToken")).expect("USDT is listed")
}

#[test]
fn usdt_is_listed_with_its_code_hash() {
    let block = block(USDT_BLOCKS[0]);
    let (info, _) = usdt(&block);
    let code = info.code.expect("USDT has code").original_bytes();
    assert_eq!(usdt_entry().code_hash, keccak256(&code));
    assert_eq!(info.code_hash, keccak256(&code));
}

#[test]
fn a_usdt_transfer_depends_on_the_recipient_balance_only_through_the_addition() {
    let block = block(USDT_BLOCKS[0]);
    let (info, base_storage) = usdt(&block);
    let mapping = usdt_entry().balances_slot;
    let sender = Address::repeat_byte(0x51);
    let recipient = Address::repeat_byte(0x52);
    let max = U256::MAX;
    for spec in [block.input.cfg.spec, SpecId::CANCUN, SpecId::PRAGUE] {
        let mut input = block.input.clone();
        input.cfg.set_spec_and_mainnet_gas_params(spec);
        input.rules = pseq_executor::BlockRules::None;
        input.block.prevrandao.get_or_insert_default();
        for amount in [U256::ZERO, U256::from(1), U256::from(2_500_000_000u64)] {
            let kinds: [&[U256]; 2] =
                [&[U256::ZERO], &[U256::from(1), U256::from(3), U256::from(10u64.pow(12)), U256::from(1) << 200, max - amount - U256::from(1), max - amount]];
            for values in kinds {
                let mut reference: Option<(BlockOutput, U256)> = None;
                for value in values {
                    let mut storage: BTreeMap<U256, U256> = base_storage.iter().copied().collect();
                    storage.insert(tokens::balance_slot(sender, mapping), U256::from(10u64.pow(13)));
                    storage.insert(tokens::balance_slot(recipient, mapping), *value);
                    let mut state = InMemoryState::new();
                    let code = info.code.clone().map(|c| Bytecode::new_raw(c.original_bytes()));
                    state.insert_account(USDT, InMemoryAccount { balance: info.balance, nonce: info.nonce, code, storage: storage.into_iter().collect() });
                    state.insert_account(sender, InMemoryAccount { balance: U256::from(10u128.pow(18)), ..Default::default() });
                    let tx = TxEnv {
                        caller: sender,
                        gas_limit: 200_000,
                        gas_price: input.block.basefee as u128 + 1,
                        kind: TxKind::Call(USDT),
                        data: tokens::transfer_calldata(recipient, amount),
                        chain_id: Some(1),
                        ..Default::default()
                    };
                    let mut output = execute_block(&state, &input, &[tx], &ExecutionOptions::sequential()).expect("executes");
                    let context = format!("{spec:?} amount {amount} balance {value}");
                    assert!(output.receipts[0].success, "{context}: the transfer failed");
                    // A zero amount changes no slot.
                    let written = output.state.accounts.get_mut(&USDT).and_then(|diff| diff.storage.remove(&tokens::balance_slot(recipient, mapping)));
                    assert_eq!(written.unwrap_or(*value), *value + amount, "{context}: the balance written (is the mapping at slot {mapping}?)");
                    match &reference {
                        None => reference = Some((output, *value)),
                        Some((first, first_value)) => {
                            assert_eq!(output.receipts, first.receipts, "{context}: receipt differs from balance {first_value}");
                            let strip = |o: &BlockOutput| -> BTreeMap<_, _> { o.state.accounts.iter().map(|(a, d)| (*a, d.clone())).collect() };
                            assert_eq!(strip(&output), strip(first), "{context}: other writes differ from balance {first_value}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn usdt_heavy_mainnet_blocks_credit_lazily_and_match_sequential_execution() {
    for number in USDT_BLOCKS {
        let block = block(number);
        let sequential = execute_block(&block.state, &block.input, &block.txs, &ExecutionOptions::sequential()).expect("sequential");
        for threads in [2, 4] {
            let parallel = execute_block(&block.state, &block.input, &block.txs, &ExecutionOptions::force_parallel(threads)).expect("parallel");
            assert!(parallel.same_result(&sequential), "block {number}, {threads} threads: parallel differs from sequential");
            let credits = parallel.stats.map_or(0, |s| s.lazy_token_credits);
            assert!(credits >= 10, "block {number}, {threads} threads: {credits} lazy credits ({:?})", parallel.path);
        }
    }
}
