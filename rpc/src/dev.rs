//! The dev namespace (on with `--dev`), with anvil's names and the `evm_` / `hardhat_` aliases
//! tools use: mining on demand, automine and interval mining switches, time travel, snapshots
//! (`evm_snapshot` / `evm_revert`, through storage's unwind), account edits (`anvil_setBalance`,
//! `setNonce`, `setCode`, `setStorageAt`, each committed in a block of its own) and dropping pooled
//! transactions.

use crate::{
    context::RpcContext,
    error::{internal, invalid_params, server},
};
use alloy_primitives::{Address, B256, U256, U64};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_builder::MinerCommand;
use pseq_config::MiningMode;
use std::{sync::mpsc, time::Duration};

type Result<T> = std::result::Result<T, ErrorObjectOwned>;

/// Most blocks one `anvil_mine` may ask for.
const MAX_MINE_BLOCKS: u64 = 10_000;

fn send(ctx: &RpcContext, command: MinerCommand) -> Result<()> {
    let miner = ctx.miner.as_ref().ok_or_else(|| server("block production is not running"))?;
    miner.send(command).map_err(|_| server("block production has stopped"))
}

fn mine(ctx: &RpcContext, blocks: u64) -> Result<Vec<B256>> {
    if blocks > MAX_MINE_BLOCKS {
        return Err(invalid_params(format!("at most {MAX_MINE_BLOCKS} blocks at once")));
    }
    let (reply, answer) = mpsc::channel();
    send(ctx, MinerCommand::Mine { blocks, reply })?;
    answer.recv_timeout(Duration::from_secs(600)).map_err(|_| internal("block production did not answer"))?.map_err(server)
}

fn quantity(value: &serde_json::Value) -> Result<u64> {
    match value {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| invalid_params("expected a non-negative integer")),
        serde_json::Value::String(s) => {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.map_err(|_| invalid_params(format!("invalid quantity {s:?}")))
        }
        _ => Err(invalid_params("expected a quantity")),
    }
}

/// Registers the dev methods.
pub fn register(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_blocking_method("evm_mine", |params, ctx, _| {
        let timestamp: Option<serde_json::Value> = params.sequence().optional_next()?;
        if let Some(t) = timestamp {
            ctx.sequencer.set_next_timestamp(quantity(&t)?).map_err(server)?;
        }
        mine(&ctx, 1).map(|_| "0x0")
    })?;
    for name in ["anvil_mine", "hardhat_mine"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let blocks: Option<serde_json::Value> = params.sequence().optional_next()?;
            let blocks = blocks.as_ref().map(quantity).transpose()?.unwrap_or(1);
            mine(&ctx, blocks).map(|_| ())
        })?;
    }
    for name in ["evm_setAutomine", "anvil_setAutomine"] {
        module.register_method(name, |params, ctx, _| {
            let on: bool = params.one()?;
            send(ctx, MinerCommand::SetMode(if on { MiningMode::Auto } else { MiningMode::Manual }))
        })?;
    }
    for name in ["evm_setIntervalMining", "anvil_setIntervalMining"] {
        module.register_method(name, |params, ctx, _| {
            let value: serde_json::Value = params.one()?;
            let ms = quantity(&value)?;
            let mode = if ms == 0 { MiningMode::Manual } else { MiningMode::Interval(Duration::from_millis(ms)) };
            send(ctx, MinerCommand::SetMode(mode))
        })?;
    }
    for name in ["evm_increaseTime", "anvil_increaseTime"] {
        module.register_method(name, |params, ctx, _| {
            let value: serde_json::Value = params.one()?;
            let seconds = i64::try_from(quantity(&value)?).map_err(|_| invalid_params("time offset too large"))?;
            Ok::<_, ErrorObjectOwned>(U256::from(ctx.sequencer.increase_time(seconds).max(0) as u64))
        })?;
    }
    for name in ["evm_setNextBlockTimestamp", "anvil_setNextBlockTimestamp"] {
        module.register_method(name, |params, ctx, _| {
            let value: serde_json::Value = params.one()?;
            ctx.sequencer.set_next_timestamp(quantity(&value)?).map_err(server)
        })?;
    }
    for name in ["evm_snapshot", "anvil_snapshot"] {
        module.register_method(name, |_, ctx, _| {
            let (number, hash) = ctx.sequencer.storage().head();
            let mut snapshots = ctx.snapshots.lock();
            let id = snapshots.last().map_or(0, |s| s.0 + 1);
            snapshots.push((id, number, hash));
            Ok::<_, ErrorObjectOwned>(U64::from(id))
        })?;
    }
    for name in ["evm_revert", "anvil_revert"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let value: serde_json::Value = params.one()?;
            let id = quantity(&value)?;
            let mut snapshots = ctx.snapshots.lock();
            let Some(position) = snapshots.iter().position(|s| s.0 == id) else { return Ok::<_, ErrorObjectOwned>(false) };
            let (_, number, hash) = snapshots[position];
            // The snapshot and every later one are used up (anvil's and hardhat's rule).
            snapshots.truncate(position);
            drop(snapshots);
            let storage = ctx.sequencer.storage();
            if storage.canonical_hash(number).map_err(internal)? != Some(hash) {
                return Ok(false);
            }
            if storage.head().0 > number {
                ctx.sequencer.unwind_to(number).map_err(server)?;
            }
            Ok(true)
        })?;
    }
    // State edits: each is committed in a new block without transactions (anvil edits the state
    // without a block; here every header's state root stays true).
    for name in ["anvil_setBalance", "hardhat_setBalance"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let mut seq = params.sequence();
            let address: alloy_primitives::Address = seq.next()?;
            let balance: U256 = seq.next()?;
            ctx.sequencer.edit_account(address, |account, _| account.balance = balance).map_err(server)?;
            Ok::<_, ErrorObjectOwned>(())
        })?;
    }
    for name in ["anvil_setNonce", "hardhat_setNonce"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let mut seq = params.sequence();
            let address: alloy_primitives::Address = seq.next()?;
            let nonce: serde_json::Value = seq.next()?;
            let nonce = quantity(&nonce)?;
            ctx.sequencer.edit_account(address, |account, _| account.nonce = nonce).map_err(server)?;
            Ok::<_, ErrorObjectOwned>(())
        })?;
    }
    for name in ["anvil_setCode", "hardhat_setCode"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let mut seq = params.sequence();
            let address: alloy_primitives::Address = seq.next()?;
            let code: alloy_primitives::Bytes = seq.next()?;
            ctx.sequencer
                .edit_account(address, |account, _| {
                    account.code_hash = if code.is_empty() { pseq_executor::revm::primitives::KECCAK_EMPTY } else { alloy_primitives::keccak256(&code) };
                    account.code = (!code.is_empty()).then(|| pseq_executor::revm::bytecode::Bytecode::new_raw(code.clone()));
                })
                .map_err(server)?;
            Ok::<_, ErrorObjectOwned>(())
        })?;
    }
    for name in ["anvil_setStorageAt", "hardhat_setStorageAt"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let mut seq = params.sequence();
            let address: alloy_primitives::Address = seq.next()?;
            let slot: U256 = seq.next()?;
            let value: B256 = seq.next()?;
            ctx.sequencer.edit_account(address, |_, slots| {
                slots.insert(slot, U256::from_be_bytes(value.0));
            })
            .map_err(server)?;
            Ok::<_, ErrorObjectOwned>(true)
        })?;
    }
    for name in ["anvil_impersonateAccount", "hardhat_impersonateAccount"] {
        module.register_method(name, |params, ctx, _| {
            let address: Address = params.one()?;
            ctx.impersonated.lock().insert(address);
            Ok::<_, ErrorObjectOwned>(())
        })?;
    }
    for name in ["anvil_stopImpersonatingAccount", "hardhat_stopImpersonatingAccount"] {
        module.register_method(name, |params, ctx, _| {
            let address: Address = params.one()?;
            ctx.impersonated.lock().remove(&address);
            Ok::<_, ErrorObjectOwned>(())
        })?;
    }
    module.register_method("anvil_autoImpersonateAccount", |params, ctx, _| {
        let on: bool = params.one()?;
        ctx.auto_impersonate.store(on, std::sync::atomic::Ordering::Relaxed);
        Ok::<_, ErrorObjectOwned>(())
    })?;
    module.register_method("anvil_dropTransaction", |params, ctx, _| {
        let hash: B256 = params.one()?;
        Ok::<_, ErrorObjectOwned>(ctx.sequencer.pool().lock().remove(&hash).map(|tx| tx.hash))
    })?;
    module.register_method("anvil_nodeInfo", |_, ctx, _| {
        let head = ctx.sequencer.storage().head();
        serde_json::json!({
            "currentBlockNumber": U64::from(head.0),
            "currentBlockHash": head.1,
            "chainId": U64::from(ctx.sequencer.spec().chain_id),
            "gasLimit": U64::from(ctx.sequencer.settings().gas_limit),
        })
    })?;
    Ok(())
}
