//! Transaction submission: `eth_sendRawTransaction`, `eth_sendRawTransactionSync` (EIP-7966:
//! waits for the receipt) and `eth_sendTransaction` (signed here with a dev account's key, or
//! sent for an impersonated account with a placeholder signature).

use crate::{
    call::estimate,
    chain::receipt_by_hash,
    context::RpcContext,
    error::{internal, server},
};
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Bytes, TxKind, B256};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer::SignerSync;
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_mempool::{recover, PooledTx};
use std::{sync::Arc, time::Duration};

type Result<T> = std::result::Result<T, ErrorObjectOwned>;

/// Priority fee `eth_sendTransaction` and `eth_maxPriorityFeePerGas` suggest: 1 gwei.
pub const SUGGESTED_TIP: u128 = 1_000_000_000;
/// How long `eth_sendRawTransactionSync` waits by default.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

fn submit_raw(ctx: &RpcContext, raw: &[u8]) -> Result<B256> {
    let config = ctx.sequencer.pool().lock().config().validation.clone();
    let tx = recover(raw, &config).map_err(server)?;
    let hash = tx.hash;
    // Transactions submitted over RPC are local, as in geth and reth: exempt from the
    // per-sender slot limit and from stale pruning.
    ctx.sequencer.submit(tx, true).map_err(server)?;
    Ok(hash)
}

/// Fills, signs and submits a dev account's transaction.
fn send_transaction(ctx: &RpcContext, mut request: TransactionRequest) -> Result<B256> {
    let from = request.from.ok_or_else(|| server("from address is required"))?;
    let signer = ctx.signers.get(&from);
    if signer.is_none() && !ctx.is_impersonated(&from) {
        return Err(server("unknown account"));
    }
    // An impersonated account's transaction carries a placeholder signature (r = the sender, so
    // that equal transactions of different senders hash apart) and its sender as given.
    let sign = |hash: B256| -> Result<alloy_primitives::Signature> {
        match signer {
            Some(signer) => signer.sign_hash_sync(&hash).map_err(internal),
            None => Ok(alloy_primitives::Signature::new(alloy_primitives::U256::from_be_slice(from.as_slice()), alloy_primitives::U256::from(1), false)),
        }
    };
    let chain_id = ctx.sequencer.spec().chain_id;
    let nonce = match request.nonce {
        Some(n) => n,
        None => {
            let account = ctx.sequencer.sender_account(from).map_err(internal)?;
            ctx.sequencer.pool().lock().next_nonce(&from, account.nonce)
        }
    };
    let gas = match request.gas {
        Some(gas) => gas,
        None => estimate(ctx, &request, Some(BlockId::Number(BlockNumberOrTag::Latest)))?,
    };
    request.gas = Some(gas);
    let to = request.to.unwrap_or(TxKind::Create);
    let value = request.value.unwrap_or_default();
    let input = request.input.input().cloned().unwrap_or_default();
    let envelope: TxEnvelope = if let Some(gas_price) = request.gas_price {
        let tx = TxLegacy { chain_id: Some(chain_id), nonce, gas_price, gas_limit: gas, to, value, input };
        let signature = sign(tx.signature_hash())?;
        tx.into_signed(signature).into()
    } else {
        let base_fee = ctx.sequencer.pool().lock().base_fee() as u128;
        let tip = request.max_priority_fee_per_gas.unwrap_or(SUGGESTED_TIP);
        let max_fee = request.max_fee_per_gas.unwrap_or(base_fee * 2 + tip);
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip.min(max_fee),
            to,
            value,
            access_list: request.access_list.clone().unwrap_or_default(),
            input,
        };
        let signature = sign(tx.signature_hash())?;
        tx.into_signed(signature).into()
    };
    let mut tx = PooledTx::new(envelope, from);
    tx.impersonated = signer.is_none();
    let hash = tx.hash;
    ctx.sequencer.submit(tx, true).map_err(server)?;
    Ok(hash)
}

/// Registers the submission methods.
pub fn register(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_sendRawTransaction", |params, ctx, _| {
        let raw: Bytes = params.one()?;
        submit_raw(ctx, &raw)
    })?;
    // anvil's name for sending as an impersonated account; the same method here.
    for name in ["eth_sendTransaction", "eth_sendUnsignedTransaction"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let request: TransactionRequest = params.one()?;
            send_transaction(&ctx, request)
        })?;
    }
    module.register_async_method("eth_sendRawTransactionSync", |params, ctx: Arc<RpcContext>, _| async move {
        let mut seq = params.sequence();
        let raw: Bytes = seq.next()?;
        let timeout_ms: Option<u64> = seq.optional_next()?;
        let timeout = timeout_ms.map_or(SYNC_TIMEOUT, Duration::from_millis).min(Duration::from_secs(60));
        let mut blocks = ctx.sequencer.subscribe();
        let hash = submit_raw(&ctx, &raw)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(receipt) = receipt_by_hash(&ctx, hash)? {
                return Ok(receipt);
            }
            match tokio::time::timeout_at(deadline, blocks.recv()).await {
                Ok(Ok(block)) if !block.tx_hashes.contains(&hash) => continue,
                Ok(_) => continue,
                Err(_) => {
                    return Err(ErrorObjectOwned::owned(
                        4,
                        "The transaction was added to the mempool but wasn't processed within the designated timeout",
                        Some(hash),
                    ))
                }
            }
        }
    })?;
    Ok(())
}
