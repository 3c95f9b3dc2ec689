//! Account and storage reads at any block: `eth_getBalance`, `eth_getTransactionCount`,
//! `eth_getCode`, `eth_getStorageAt`.

use crate::{
    context::RpcContext,
    error::{internal, invalid_params},
};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, Bytes, B256, U256};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_executor::revm::{database::DatabaseRef, primitives::KECCAK_EMPTY};

fn account(ctx: &RpcContext, address: Address, id: Option<BlockId>) -> Result<(U256, u64, Bytes), ErrorObjectOwned> {
    let number = ctx.resolve(id)?;
    let view = ctx.sequencer.storage().state_at(number).map_err(internal)?;
    let Some(info) = view.basic_ref(address).map_err(|e| internal(e.0))? else { return Ok((U256::ZERO, 0, Bytes::new())) };
    let code = match info.code {
        Some(code) => code.original_bytes(),
        None if info.code_hash != KECCAK_EMPTY => view.code_by_hash_ref(info.code_hash).map_err(|e| internal(e.0))?.original_bytes(),
        None => Bytes::new(),
    };
    Ok((info.balance, info.nonce, code))
}

/// Registers the state reads.
pub fn register(module: &mut RpcModule<RpcContext>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_getBalance", |params, ctx, _| {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        account(ctx, address, id).map(|(balance, _, _)| balance)
    })?;
    module.register_method("eth_getTransactionCount", |params, ctx, _| {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        let (_, nonce, _) = account(ctx, address, id)?;
        if id == Some(BlockId::Number(BlockNumberOrTag::Pending)) {
            return Ok::<_, ErrorObjectOwned>(U256::from(ctx.sequencer.pool().lock().next_nonce(&address, nonce)));
        }
        Ok(U256::from(nonce))
    })?;
    module.register_method("eth_getCode", |params, ctx, _| {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        account(ctx, address, id).map(|(_, _, code)| code)
    })?;
    module.register_method("eth_getStorageAt", |params, ctx, _| {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let slot: U256 = match seq.next::<serde_json::Value>()? {
            serde_json::Value::String(text) => parse_slot(&text)?,
            _ => return Err(invalid_params("invalid storage slot")),
        };
        let id: Option<BlockId> = seq.optional_next()?;
        let number = ctx.resolve(id)?;
        let view = ctx.sequencer.storage().state_at(number).map_err(internal)?;
        let value = view.storage_ref(address, slot).map_err(|e| internal(e.0))?;
        Ok::<_, ErrorObjectOwned>(B256::from(value))
    })?;
    module.register_blocking_method("eth_getProof", |params, ctx, _| {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let keys: Vec<alloy_serde::storage::JsonStorageKey> = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        if keys.len() > 1024 {
            return Err(invalid_params("too many storage keys (at most 1024)"));
        }
        let number = ctx.resolve(id)?;
        let slots: Vec<U256> = keys.iter().map(|k| U256::from_be_bytes(k.as_b256().0)).collect();
        let proof = ctx.sequencer.storage().proof_at(number, address, &slots).map_err(internal)?;
        let storage_proof = keys
            .into_iter()
            .zip(proof.storage_proofs)
            .map(|(key, (value, nodes))| alloy_rpc_types_eth::EIP1186StorageProof { key, value, proof: nodes })
            .collect();
        Ok::<_, ErrorObjectOwned>(alloy_rpc_types_eth::EIP1186AccountProofResponse {
            address,
            balance: proof.balance,
            code_hash: proof.code_hash,
            nonce: proof.nonce,
            storage_hash: proof.storage_root,
            account_proof: proof.account_proof,
            storage_proof,
        })
    })?;
    module.register_method("eth_getStorageValues", |params, ctx, _| {
        let mut seq = params.sequence();
        let requests: std::collections::BTreeMap<Address, Vec<B256>> = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        if requests.values().all(Vec::is_empty) {
            return Err(invalid_params("empty request"));
        }
        if requests.values().map(Vec::len).sum::<usize>() > 1024 {
            return Err(invalid_params("too many storage slots requested (at most 1024)"));
        }
        let number = ctx.resolve(id)?;
        let view = ctx.sequencer.storage().state_at(number).map_err(internal)?;
        let mut out = std::collections::BTreeMap::new();
        for (address, slots) in requests {
            let values: Result<Vec<B256>, ErrorObjectOwned> =
                slots.iter().map(|slot| view.storage_ref(address, U256::from_be_bytes(slot.0)).map(B256::from).map_err(|e| internal(e.0))).collect();
            out.insert(address, values?);
        }
        Ok::<_, ErrorObjectOwned>(out)
    })?;
    Ok(())
}

/// A storage slot as geth accepts it: hex of at most 32 bytes, `0x` optional.
fn parse_slot(text: &str) -> Result<U256, ErrorObjectOwned> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    if digits.is_empty() || digits.len() > 64 {
        return Err(invalid_params(format!("invalid storage slot {text:?}")));
    }
    U256::from_str_radix(digits, 16).map_err(|_| invalid_params(format!("invalid storage slot {text:?}")))
}
