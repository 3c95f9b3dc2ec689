//! WebSocket subscriptions: `eth_subscribe` to `newHeads`, `logs` (with a filter) and
//! `newPendingTransactions`; `eth_unsubscribe`.

use crate::{chain::block_logs, context::RpcContext, convert::StoredBlock, error::invalid_params};
use alloy_rpc_types_eth::Filter;
use jsonrpsee::{core::SubscriptionResult, PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

fn message(value: &impl Serialize) -> Option<SubscriptionMessage> {
    serde_json::value::to_raw_value(value).ok().map(SubscriptionMessage::from)
}

/// Forwards what `render` makes of each new block (possibly nothing, possibly several messages)
/// until the subscriber goes away.
async fn forward_blocks<F>(pending: PendingSubscriptionSink, ctx: Arc<RpcContext>, render: F) -> SubscriptionResult
where
    F: Fn(&RpcContext, &pseq_builder::NewBlock) -> Vec<SubscriptionMessage>,
{
    let mut blocks = ctx.sequencer.subscribe();
    let sink = pending.accept().await?;
    loop {
        tokio::select! {
            _ = sink.closed() => return Ok(()),
            block = blocks.recv() => match block {
                Ok(block) => {
                    for msg in render(&ctx, &block) {
                        sink.send(msg).await?;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}

async fn new_heads(pending: PendingSubscriptionSink, ctx: Arc<RpcContext>) -> SubscriptionResult {
    forward_blocks(pending, ctx, |_, block| {
        let mut header = alloy_rpc_types_eth::Header::new(block.header.clone());
        header.hash = block.hash;
        message(&header).into_iter().collect()
    })
    .await
}

async fn logs(pending: PendingSubscriptionSink, ctx: Arc<RpcContext>, filter: Filter) -> SubscriptionResult {
    forward_blocks(pending, ctx, move |ctx, block| {
        if !filter.matches_bloom(block.header.logs_bloom) {
            return Vec::new();
        }
        let Ok(Some(stored)) = StoredBlock::load(ctx.sequencer.storage(), block.hash) else { return Vec::new() };
        let Ok(found) = block_logs(ctx, &stored, &filter) else { return Vec::new() };
        found.iter().filter_map(message).collect()
    })
    .await
}

async fn pending_transactions(pending: PendingSubscriptionSink, ctx: Arc<RpcContext>) -> SubscriptionResult {
    let receiver = ctx.sequencer.pool().lock().subscribe_pending();
    let (sender, mut hashes) = tokio::sync::mpsc::unbounded_channel();
    // The pool notifies over a std channel: a small thread forwards into the async world and
    // ends at the first notification after the subscriber has gone.
    std::thread::Builder::new().name("pseq-pending-sub".into()).spawn(move || {
        while let Ok(hash) = receiver.recv() {
            if sender.send(hash).is_err() {
                break;
            }
        }
    })?;
    let sink = pending.accept().await?;
    loop {
        tokio::select! {
            _ = sink.closed() => return Ok(()),
            hash = hashes.recv() => match hash {
                Some(hash) => {
                    if let Some(msg) = message(&hash) {
                        sink.send(msg).await?;
                    }
                }
                None => return Ok(()),
            }
        }
    }
}

/// Registers `eth_subscribe` / `eth_unsubscribe`.
pub fn register(module: &mut RpcModule<RpcContext>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_subscription("eth_subscribe", "eth_subscription", "eth_unsubscribe", |params, pending, ctx, _| async move {
        let mut seq = params.sequence();
        let kind: String = match seq.next() {
            Ok(kind) => kind,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        };
        match kind.as_str() {
            "newHeads" => new_heads(pending, ctx).await,
            "newPendingTransactions" => pending_transactions(pending, ctx).await,
            "logs" => {
                let filter: Filter = match seq.optional_next() {
                    Ok(filter) => filter.unwrap_or_default(),
                    Err(e) => {
                        pending.reject(e).await;
                        return Ok(());
                    }
                };
                logs(pending, ctx, filter).await
            }
            other => {
                pending.reject(invalid_params(format!("unsupported subscription type {other:?}"))).await;
                Ok(())
            }
        }
    })?;
    Ok(())
}
