//! The `txpool_` namespace: `txpool_status`, `txpool_content`, `txpool_contentFrom`,
//! `txpool_inspect`, in geth's shapes.

use crate::{context::RpcContext, convert::rpc_transaction};
use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, U64};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_mempool::{PoolEntry, SubPool};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn grouped(content: &BTreeMap<Address, BTreeMap<u64, PoolEntry>>, render: impl Fn(&PoolEntry) -> Value) -> Value {
    let mut pending = Map::new();
    let mut queued = Map::new();
    for (address, txs) in content {
        let mut p = Map::new();
        let mut q = Map::new();
        for (nonce, entry) in txs {
            let target = if entry.sub_pool == SubPool::Pending { &mut p } else { &mut q };
            target.insert(nonce.to_string(), render(entry));
        }
        if !p.is_empty() {
            pending.insert(format!("{address:?}"), Value::Object(p));
        }
        if !q.is_empty() {
            queued.insert(format!("{address:?}"), Value::Object(q));
        }
    }
    json!({ "pending": pending, "queued": queued })
}

fn full(entry: &PoolEntry) -> Value {
    serde_json::to_value(rpc_transaction(entry.tx.envelope.clone(), entry.tx.sender, None)).unwrap_or(Value::Null)
}

fn summary(entry: &PoolEntry) -> Value {
    let tx = &entry.tx.envelope;
    let to = tx.to().map_or("contract creation".to_string(), |a| format!("{a:?}"));
    Value::String(format!("{to}: {} wei + {} gas × {} wei", tx.value(), tx.gas_limit(), tx.max_fee_per_gas()))
}

/// Registers the pool inspection methods.
pub fn register(module: &mut RpcModule<RpcContext>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("txpool_status", |_, ctx, _| {
        let status = ctx.sequencer.pool().lock().status();
        json!({ "pending": U64::from(status.pending), "queued": U64::from(status.queued + status.base_fee) })
    })?;
    module.register_method("txpool_content", |_, ctx, _| {
        let content = ctx.sequencer.pool().lock().content();
        grouped(&content, full)
    })?;
    module.register_method("txpool_contentFrom", |params, ctx, _| {
        let address: Address = params.one()?;
        let pool = ctx.sequencer.pool().lock();
        let mut content = BTreeMap::new();
        if let Some(txs) = pool.sender_txs(&address) {
            content.insert(address, txs.clone());
        }
        drop(pool);
        let value = grouped(&content, full);
        let key = format!("{address:?}");
        Ok::<_, ErrorObjectOwned>(json!({ "pending": value["pending"].get(&key).cloned().unwrap_or(json!({})), "queued": value["queued"].get(&key).cloned().unwrap_or(json!({})) }))
    })?;
    module.register_method("txpool_inspect", |_, ctx, _| {
        let content = ctx.sequencer.pool().lock().content();
        grouped(&content, summary)
    })?;
    Ok(())
}
