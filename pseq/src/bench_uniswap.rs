//! The `uniswap` workload of `pseq bench exec`: Uniswap V3 swaps over many pools, set up by
//! writing the contracts' code and storage straight into the pre-state (no deployment).
//!
//! Each pool trades its own pair of ERC-20 tokens and has its own `SingleSwap` front contract
//! (`sellToken0`, `sellToken1`, `buyToken0`, `buyToken1`), which pulls the caller's tokens and
//! swaps them through one shared `SwapRouter`. Transaction `i` is sent by its own account to pool
//! `i % pools`: swaps on one pool depend on each other (price, liquidity, balances), swaps on
//! different pools do not.
//!
//! Storage layouts (Solidity's): ERC20Token `_balances@0, _allowances@1, _totalSupply@2`;
//! UniswapV3Pool `slot0@0, liquidity@4, ticks@5, tickBitmap@6, observations@8`; SwapRouter
//! `amountInCached@0`; SingleSwap `token0@0, token1@1 (fee at byte offset 20)`. Addresses the
//! contracts were compiled with as immutables are replaced in the code by this world's addresses.

use crate::bench::{bytecode_from_hex, contract_hex, erc20_balance_slot};
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use pseq_executor::{state::InMemoryAccount, InMemoryState};
use alloy_primitives::map::HashMap;
use std::path::Path;

/// The pools' fee tier (0.3%) and its tick spacing.
const POOL_FEE: u32 = 3_000;
const TICK_SPACING: i32 = 60;
/// The one liquidity position of every pool spans these ticks.
const TICK_LOWER: i32 = -600_000;
const TICK_UPPER: i32 = 600_000;
/// That position's liquidity, and so the pool's liquidity at its starting price.
const LIQUIDITY: u128 = 111_111_000_000_010_412_955_141;
/// Each pool's reserve of each token, and each trader's balance (18 decimals).
const POOL_RESERVE: u128 = 111_111_000_000_000_000_000_000;
const TRADER_BALANCE: u128 = 1_000_000_000_000_000_000;

/// Placeholder addresses and hash compiled into the contracts' code as immutables.
const POOL_TOKEN0: &str = "261d8c5e9742e6f7f1076fa1f560894524e19cad";
const POOL_TOKEN1: &str = "ce3478a9e0167a6bc5716dc39dbbbfac38f27623";
const POOL_FACTORY: &str = "cba6b9a951749b8735c603e7ffc5151849248772";
const POOL_SELF: &str = "d495d5e5cab2567777fff988c4fcd71328b17c9d";
const ROUTER_WETH9: &str = "6509f2a854ba7441039fce3b959d5badd2ffcfcd";
const ROUTER_FACTORY: &str = "d787a42ee3ac477c46dd6c912e7af795d44453d5";
const ROUTER_INIT_CODE_HASH: &str = "636fcf59d7fdf3a03833dba1c6d936c9d7c6730057c8c4c8e5059feaeab60e04";
const SINGLE_SWAP_ROUTER: &str = "e7cfcccb38ce07ba9d8d13431afe8cf6172de031";

/// Gas limit of one swap.
pub const SWAP_GAS_LIMIT: u64 = 200_000;

/// One swap transaction to be signed by the caller: sender, `SingleSwap` contract, calldata.
pub struct Swap {
    /// The trader (funded, no nonce used yet).
    pub trader: Address,
    /// The pool's `SingleSwap` contract.
    pub to: Address,
    /// Calldata.
    pub data: Bytes,
}

/// Replaces every occurrence of a compiled-in placeholder, which must be present.
fn patch(code: &str, placeholder: &str, value: &[u8], name: &str) -> Result<String, String> {
    if !code.contains(placeholder) {
        return Err(format!("{name}: placeholder {placeholder} not found in the code"));
    }
    Ok(code.replace(placeholder, &hex::encode(value)))
}

/// A deterministic address in the workload's own range.
fn address(kind: u8, n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0x20 + kind;
    bytes[12..20].copy_from_slice(&n.to_be_bytes());
    // Spread the rest so pool and token addresses look like real ones.
    bytes[1..12].copy_from_slice(&keccak256([&[kind][..], &n.to_be_bytes()].concat())[..11]);
    Address::from(bytes)
}

fn word_of_address(a: Address) -> U256 {
    U256::from_be_slice(a.as_slice())
}

/// The 32-byte mapping key of a signed Solidity integer (sign-extended).
fn signed_key(value: i64) -> U256 {
    if value >= 0 {
        U256::from(value as u64)
    } else {
        U256::MAX - U256::from(value.unsigned_abs() - 1)
    }
}

/// The slot of `mapping[key]` for a mapping at `slot`.
fn mapping_slot(slot: U256, key: U256) -> U256 {
    let mut preimage = [0u8; 64];
    preimage[..32].copy_from_slice(&key.to_be_bytes::<32>());
    preimage[32..].copy_from_slice(&slot.to_be_bytes::<32>());
    U256::from_be_bytes(keccak256(preimage).0)
}

fn selector_call(selector: [u8; 4], args: &[u64]) -> Bytes {
    let mut data = selector.to_vec();
    for arg in args {
        data.extend_from_slice(&U256::from(*arg).to_be_bytes::<32>());
    }
    Bytes::from(data)
}

/// The pool address the router derives: CREATE2 from the factory over (token0, token1, fee).
fn pool_address(factory: Address, token0: Address, token1: Address, init_code_hash: B256) -> Address {
    let mut key = [0u8; 96];
    key[12..32].copy_from_slice(token0.as_slice());
    key[44..64].copy_from_slice(token1.as_slice());
    key[64..].copy_from_slice(&U256::from(POOL_FEE).to_be_bytes::<32>());
    let salt = keccak256(key);
    let mut preimage = Vec::with_capacity(85);
    preimage.push(0xff);
    preimage.extend_from_slice(factory.as_slice());
    preimage.extend_from_slice(salt.as_slice());
    preimage.extend_from_slice(init_code_hash.as_slice());
    Address::from_slice(&keccak256(preimage)[12..])
}

/// A pool's storage: price at tick 0, the position's liquidity in range, the two initialised
/// ticks of that position and their bitmap bits, one oracle observation.
fn pool_storage() -> HashMap<U256, U256> {
    let mut storage = HashMap::default();
    // slot0: sqrtPriceX96 = 2^96 (price 1), tick 0, observationIndex 0, cardinality 1,
    // cardinalityNext 1, feeProtocol 0, unlocked.
    let slot0 = (U256::from(1u8) << 96) | (U256::from(1u8) << (160 + 24 + 16)) | (U256::from(1u8) << (160 + 24 + 32)) | (U256::from(1u8) << (160 + 24 + 48 + 8));
    storage.insert(U256::ZERO, slot0);
    // A pool that has traded before: its fee accumulators are not zero (a first swap would
    // otherwise pay for creating both slots and not fit the gas limit).
    storage.insert(U256::from(1), U256::from(1u8));
    storage.insert(U256::from(2), U256::from(1u8));
    storage.insert(U256::from(4), U256::from(LIQUIDITY));
    let liquidity = U256::from(LIQUIDITY);
    for (tick, net_is_negative) in [(TICK_LOWER, false), (TICK_UPPER, true)] {
        let base = mapping_slot(U256::from(5), signed_key(tick as i64));
        // Tick.Info word 0: liquidityGross (low 128 bits), liquidityNet (high 128, signed).
        let net = if net_is_negative { (U256::from(1u8) << 128) - liquidity } else { liquidity };
        storage.insert(base, liquidity | (net << 128));
        // Word 3: tickCumulativeOutside 0, secondsPerLiquidity 0, secondsOutside 0, initialized.
        storage.insert(base + U256::from(3), U256::from(1u8) << 248);
        let compressed = tick / TICK_SPACING;
        let word = signed_key((compressed >> 8) as i64);
        let bit = (compressed & 0xff) as usize;
        let entry = storage.entry(mapping_slot(U256::from(6), word)).or_insert(U256::ZERO);
        *entry |= U256::from(1u8) << bit;
    }
    // observations[0]: blockTimestamp 1, initialised.
    storage.insert(U256::from(8), U256::from(1u8) | (U256::from(1u8) << 248));
    storage
}

/// Writes the world into `state` and returns `swaps` swaps over `pools` pools.
pub fn build(state: &mut InMemoryState, contracts_dir: &Path, pools: usize, swaps: usize) -> Result<Vec<Swap>, String> {
    let pools = pools.clamp(1, swaps.max(1));
    let token_code = bytecode_from_hex(&contract_hex(contracts_dir, "ERC20Token")?, "ERC20Token")?;
    let pool_hex = contract_hex(contracts_dir, "UniswapV3Pool")?;
    let router_hex = contract_hex(contracts_dir, "SwapRouter")?;
    let single_swap_hex = contract_hex(contracts_dir, "SingleSwap")?;

    let factory = address(0, 0);
    let weth9 = address(0, 1);
    let router = address(0, 2);
    let init_code_hash = keccak256(b"pseq uniswap workload: pool init code");
    let router_hex = patch(&router_hex, ROUTER_WETH9, weth9.as_slice(), "SwapRouter")?;
    let router_hex = patch(&router_hex, ROUTER_FACTORY, factory.as_slice(), "SwapRouter")?;
    let router_hex = patch(&router_hex, ROUTER_INIT_CODE_HASH, init_code_hash.as_slice(), "SwapRouter")?;
    let mut router_storage = HashMap::default();
    router_storage.insert(U256::ZERO, U256::MAX);
    state.insert_account(router, InMemoryAccount { nonce: 1, code: Some(bytecode_from_hex(&router_hex, "SwapRouter")?), storage: router_storage, ..Default::default() });
    let single_swap_code = bytecode_from_hex(&patch(&single_swap_hex, SINGLE_SWAP_ROUTER, router.as_slice(), "SingleSwap")?, "SingleSwap")?;

    // Traders of each pool, so each token's storage is written in one pass.
    let traders: Vec<Address> = (0..swaps as u64).map(|i| address(1, i)).collect();
    let mut swaps_out = Vec::with_capacity(swaps);
    let mut fronts = Vec::with_capacity(pools);
    for p in 0..pools as u64 {
        let (a, b) = (address(2, 2 * p), address(2, 2 * p + 1));
        let (token0, token1) = if a < b { (a, b) } else { (b, a) };
        let pool = pool_address(factory, token0, token1, init_code_hash);
        let front = address(3, p);
        fronts.push(front);

        let pool_hex = patch(&pool_hex, POOL_TOKEN0, token0.as_slice(), "UniswapV3Pool")?;
        let pool_hex = patch(&pool_hex, POOL_TOKEN1, token1.as_slice(), "UniswapV3Pool")?;
        let pool_hex = patch(&pool_hex, POOL_FACTORY, factory.as_slice(), "UniswapV3Pool")?;
        let pool_hex = patch(&pool_hex, POOL_SELF, pool.as_slice(), "UniswapV3Pool")?;
        state.insert_account(pool, InMemoryAccount { nonce: 1, code: Some(bytecode_from_hex(&pool_hex, "UniswapV3Pool")?), storage: pool_storage(), ..Default::default() });

        let mut front_storage = HashMap::default();
        front_storage.insert(U256::ZERO, word_of_address(token0));
        front_storage.insert(U256::from(1), word_of_address(token1) | (U256::from(POOL_FEE) << 160));
        state.insert_account(front, InMemoryAccount { nonce: 1, code: Some(single_swap_code.clone()), storage: front_storage, ..Default::default() });

        let pool_traders: Vec<Address> = traders.iter().copied().skip(p as usize).step_by(pools).collect();
        for token in [token0, token1] {
            let mut storage = HashMap::default();
            storage.insert(erc20_balance_slot(pool), U256::from(POOL_RESERVE));
            for trader in &pool_traders {
                storage.insert(erc20_balance_slot(*trader), U256::from(TRADER_BALANCE));
                // _allowances[trader][front] (mapping of mappings at slot 1).
                let inner = mapping_slot(U256::from(1), word_of_address(*trader));
                storage.insert(mapping_slot(inner, word_of_address(front)), U256::from(TRADER_BALANCE));
            }
            let supply = U256::from(POOL_RESERVE) + U256::from(TRADER_BALANCE) * U256::from(pool_traders.len());
            storage.insert(U256::from(2), supply);
            state.insert_account(token, InMemoryAccount { nonce: 1, code: Some(token_code.clone()), storage, ..Default::default() });
        }
    }
    for (i, trader) in traders.iter().enumerate() {
        let round = i / pools;
        let data = match round % 4 {
            0 => selector_call([0xc9, 0x2b, 0x08, 0x91], &[2_000]),        // sellToken0(2000)
            1 => selector_call([0x6b, 0x05, 0x52, 0x60], &[2_000]),        // sellToken1(2000)
            2 => selector_call([0x8d, 0xc3, 0x3f, 0x82], &[1_000, 2_000]), // buyToken0(1000, 2000)
            _ => selector_call([0xb2, 0xdb, 0x18, 0xa2], &[1_000, 2_000]), // buyToken1(1000, 2000)
        };
        swaps_out.push(Swap { trader: *trader, to: fronts[i % pools], data });
    }
    Ok(swaps_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use pseq_executor::{execute_block, ExecutionOptions};

    #[test]
    fn every_swap_succeeds_and_parallel_equals_sequential() {
        let dir = crate::corpus::corpora_dir().join("contracts");
        // Four rounds over the 64 pools: each of the four swap kinds once per pool.
        let workload = crate::bench::build("uniswap", Some(4 * crate::bench::UNISWAP_POOLS), &dir).expect("workload");
        let sequential = execute_block(&workload.state, &workload.input, &workload.txs, &ExecutionOptions::sequential()).expect("sequential");
        assert_eq!(sequential.receipts.len(), workload.txs.len());
        for (index, receipt) in sequential.receipts.iter().enumerate() {
            assert!(receipt.success, "swap {index} failed");
            // Two token transfers at least (in and out of the pool) and the pool's Swap event.
            assert!(receipt.logs.len() >= 3, "swap {index} logged {} events", receipt.logs.len());
            assert!(receipt.gas_used > 100_000, "swap {index} used only {} gas", receipt.gas_used);
        }
        // Every pool's price (slot0) moved.
        let changed_pools = sequential.state.accounts.values().filter(|a| a.storage.contains_key(&U256::ZERO) && a.storage.len() > 2).count();
        assert!(changed_pools >= crate::bench::UNISWAP_POOLS, "{changed_pools} pools changed");
        for threads in [2, 4] {
            let parallel = execute_block(&workload.state, &workload.input, &workload.txs, &ExecutionOptions::force_parallel(threads)).expect("parallel");
            assert!(parallel.same_result(&sequential), "{threads} threads: parallel differs from sequential");
        }
    }

    #[test]
    fn signed_keys_are_sign_extended() {
        assert_eq!(signed_key(5), U256::from(5));
        assert_eq!(signed_key(-1), U256::MAX);
        assert_eq!(signed_key(-600_000), U256::MAX - U256::from(599_999));
    }
}
