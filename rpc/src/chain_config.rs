//! What the node says about its chain and its data: `eth_config` (EIP-7910: the current, next
//! and last fork's activation time, blob schedule, chain id, EIP-2124 fork id, precompiles and
//! system contracts) and `eth_capabilities` (the head, and from which block each kind of data is
//! served: this node keeps all history).

use crate::{context::RpcContext, error::internal};
use alloy_primitives::{hex, Address};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_config::{fork::spec_of, Activation};
use pseq_executor::revm::primitives::hardfork::SpecId;
use serde_json::{json, Map, Value};

/// Precompiles by EIP-7910 name: the fork that added them and their address.
const PRECOMPILES: &[(&str, SpecId, u16)] = &[
    ("ECREC", SpecId::FRONTIER, 0x01),
    ("SHA256", SpecId::FRONTIER, 0x02),
    ("RIPEMD160", SpecId::FRONTIER, 0x03),
    ("ID", SpecId::FRONTIER, 0x04),
    ("MODEXP", SpecId::BYZANTIUM, 0x05),
    ("BN254_ADD", SpecId::BYZANTIUM, 0x06),
    ("BN254_MUL", SpecId::BYZANTIUM, 0x07),
    ("BN254_PAIRING", SpecId::BYZANTIUM, 0x08),
    ("BLAKE2F", SpecId::ISTANBUL, 0x09),
    ("KZG_POINT_EVALUATION", SpecId::CANCUN, 0x0a),
    ("BLS12_G1ADD", SpecId::PRAGUE, 0x0b),
    ("BLS12_G1MSM", SpecId::PRAGUE, 0x0c),
    ("BLS12_G2ADD", SpecId::PRAGUE, 0x0d),
    ("BLS12_G2MSM", SpecId::PRAGUE, 0x0e),
    ("BLS12_PAIRING_CHECK", SpecId::PRAGUE, 0x0f),
    ("BLS12_MAP_FP_TO_G1", SpecId::PRAGUE, 0x10),
    ("BLS12_MAP_FP2_TO_G2", SpecId::PRAGUE, 0x11),
    ("P256VERIFY", SpecId::OSAKA, 0x100),
];

/// System contracts by EIP-7910 name: the fork that added them and their address.
const SYSTEM_CONTRACTS: &[(&str, SpecId, Address)] = &[
    ("BEACON_ROOTS_ADDRESS", SpecId::CANCUN, alloy_eips::eip4788::BEACON_ROOTS_ADDRESS),
    ("HISTORY_STORAGE_ADDRESS", SpecId::PRAGUE, alloy_eips::eip2935::HISTORY_STORAGE_ADDRESS),
    ("WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS", SpecId::PRAGUE, alloy_eips::eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS),
    ("CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS", SpecId::PRAGUE, alloy_eips::eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS),
];

/// One fork's EIP-7910 description.
fn fork_config(ctx: &RpcContext, name: &str, activation: Activation) -> Value {
    let spec = spec_of(name).unwrap_or(SpecId::FRONTIER);
    let chain = ctx.sequencer.spec();
    let genesis_hash = chain.genesis_header.hash_slow();
    let (time, fork_hash) = match activation {
        Activation::Timestamp(t) => (t, chain.fork_points.fork_hash(genesis_hash, u64::MAX, t)),
        Activation::Block(n) => (0, chain.fork_points.fork_hash(genesis_hash, n, 0)),
    };
    let blob_schedule = ctx.sequencer.rules().blob_params(name).map(|p| {
        json!({ "target": p.target_blob_count, "max": p.max_blob_count, "baseFeeUpdateFraction": p.update_fraction as u64 })
    });
    let mut precompiles = Map::new();
    for (label, since, address) in PRECOMPILES {
        if spec.is_enabled_in(*since) {
            precompiles.insert(label.to_string(), json!(precompile_address(*address)));
        }
    }
    let mut contracts = Map::new();
    for (label, since, address) in SYSTEM_CONTRACTS {
        if spec.is_enabled_in(*since) {
            contracts.insert(label.to_string(), json!(address));
        }
    }
    if spec.is_enabled_in(SpecId::PRAGUE) {
        contracts.insert("DEPOSIT_CONTRACT_ADDRESS".into(), json!(chain.deposit_contract.unwrap_or_default()));
    }
    json!({
        "activationTime": time,
        "blobSchedule": blob_schedule,
        "chainId": format!("{:#x}", chain.chain_id),
        "forkId": format!("0x{}", hex::encode(fork_hash)),
        "precompiles": precompiles,
        "systemContracts": contracts,
    })
}

fn precompile_address(low: u16) -> Address {
    let mut bytes = [0u8; 20];
    bytes[18..].copy_from_slice(&low.to_be_bytes());
    Address::from(bytes)
}

/// `eth_config`: the fork in force at the head, the next scheduled one and the last one.
fn eth_config(ctx: &RpcContext) -> Result<Value, ErrorObjectOwned> {
    let head = ctx.sequencer.head_header().map_err(internal)?;
    let forks = ctx.sequencer.spec().network.forks();
    let current_name = ctx.sequencer.spec().network.fork_at(head.number, head.timestamp).to_string();
    // Forks sharing an activation collapse into the last of them (the one in force).
    let mut distinct: Vec<(&str, Activation)> = Vec::new();
    for (name, activation) in forks {
        match distinct.last_mut() {
            Some(last) if last.1 == *activation => *last = (name, *activation),
            _ => distinct.push((name, *activation)),
        }
    }
    let position = distinct.iter().rposition(|(name, _)| *name == current_name).unwrap_or(0);
    let current = distinct.get(position).map(|(name, a)| fork_config(ctx, name, *a));
    let next = distinct.get(position + 1).map(|(name, a)| fork_config(ctx, name, *a));
    let last = (position + 1 < distinct.len()).then(|| distinct.last().map(|(name, a)| fork_config(ctx, name, *a))).flatten();
    Ok(json!({ "current": current, "next": next, "last": last }))
}

/// `eth_capabilities`: the head and the oldest block of each kind of data served (all of it).
fn eth_capabilities(ctx: &RpcContext) -> Value {
    let (number, hash) = ctx.sequencer.storage().head();
    let full = json!({ "disabled": false, "oldestBlock": "0x0" });
    json!({
        "head": { "number": format!("{number:#x}"), "hash": hash },
        "state": full,
        "tx": full,
        "logs": { "disabled": false, "oldestBlock": "0x0", "deleteStrategy": { "type": "none" } },
        "receipts": full,
        "blocks": full,
        "stateproofs": full,
    })
}

/// Registers `eth_config` and `eth_capabilities`.
pub fn register(module: &mut RpcModule<RpcContext>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_config", |_, ctx, _| eth_config(ctx))?;
    module.register_method("eth_capabilities", |_, ctx, _| Ok::<_, ErrorObjectOwned>(eth_capabilities(ctx)))?;
    Ok(())
}
