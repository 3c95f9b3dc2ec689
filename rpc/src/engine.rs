//! The Engine API (authenticated port): `engine_exchangeCapabilities`,
//! `engine_getClientVersionV1`, `engine_newPayloadV1`-`V4` (the payload is checked, executed with
//! the parallel executor and committed when it extends the head) and
//! `engine_forkchoiceUpdatedV1`-`V3` (moves the head; an ancestor of the head unwinds storage to
//! it; with payload attributes it builds a block on the new head from the pool and returns its
//! payload id), `engine_getPayloadV1`-`V5` (the built block; a `newPayload` of it then commits the
//! prepared state without executing again).

use crate::{context::RpcContext, error::internal};
use alloy_consensus::{Block, TxEnvelope};
use alloy_primitives::{Bytes, B256};
use alloy_rpc_types_engine::{
    CancunPayloadFields, ExecutionPayload, ExecutionPayloadInputV2, ExecutionPayloadSidecar, ExecutionPayloadV1, ExecutionPayloadV3,
    ForkchoiceState, ForkchoiceUpdated, PayloadStatus, PayloadStatusEnum, PraguePayloadFields,
};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use serde_json::{json, Value};

type Result<T> = std::result::Result<T, ErrorObjectOwned>;

/// The Engine API methods this node serves.
pub const CAPABILITIES: &[&str] = &[
    "engine_exchangeCapabilities",
    "engine_getClientVersionV1",
    "engine_newPayloadV1",
    "engine_newPayloadV2",
    "engine_newPayloadV3",
    "engine_newPayloadV4",
    "engine_forkchoiceUpdatedV1",
    "engine_forkchoiceUpdatedV2",
    "engine_forkchoiceUpdatedV3",
    "engine_getPayloadV1",
    "engine_getPayloadV2",
    "engine_getPayloadV3",
    "engine_getPayloadV4",
    "engine_getPayloadV5",
];

/// Built payloads kept for `getPayload`.
const KEEP_PAYLOADS: usize = 8;

fn engine_error(code: i32, message: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.to_string(), None::<()>)
}

fn invalid(ctx: &RpcContext, reason: String) -> PayloadStatus {
    let latest_valid = ctx.sequencer.storage().head().1;
    PayloadStatus::new(PayloadStatusEnum::Invalid { validation_error: reason }, Some(latest_valid))
}

/// Validates and imports a payload.
fn new_payload(ctx: &RpcContext, payload: ExecutionPayload, sidecar: ExecutionPayloadSidecar) -> Result<PayloadStatus> {
    let storage = ctx.sequencer.storage();
    let claimed = payload.block_hash();
    let parent_hash = payload.parent_hash();
    if storage.block_number(&claimed).map_err(internal)?.is_some() {
        return Ok(PayloadStatus::new(PayloadStatusEnum::Valid, Some(claimed)));
    }
    let block: Block<TxEnvelope> = match payload.try_into_block_with_sidecar(&sidecar) {
        Ok(block) => block,
        Err(e) => return Ok(invalid(ctx, e.to_string())),
    };
    let hash = block.header.hash_slow();
    if hash != claimed {
        return Ok(PayloadStatus::new(PayloadStatusEnum::Invalid { validation_error: format!("block hash mismatch: computed {hash}, payload says {claimed}") }, None));
    }
    let (_, head_hash) = storage.head();
    if parent_hash != head_hash {
        // Not on our head: a fork or a gap. Without the parent's state at hand, report it.
        let known = storage.block_number(&parent_hash).map_err(internal)?.is_some();
        let status = if known { PayloadStatusEnum::Accepted } else { PayloadStatusEnum::Syncing };
        return Ok(PayloadStatus::from_status(status));
    }
    // A block this node built for the consensus client: commit what was prepared.
    let built = ctx.payloads.lock().iter().find(|(_, _, h)| *h == hash).map(|(_, p, _)| p.clone());
    if let Some(slot) = built {
        if let Some(assembled) = slot.lock().take() {
            match ctx.sequencer.commit_payload(assembled) {
                Ok(built) => return Ok(PayloadStatus::new(PayloadStatusEnum::Valid, Some(built.block.hash))),
                Err(e) => tracing::debug!(error = %e, "built payload not committed as prepared; executing it again"),
            }
        }
    }
    match ctx.sequencer.import_block(block) {
        Ok(hash) => Ok(PayloadStatus::new(PayloadStatusEnum::Valid, Some(hash))),
        Err(pseq_builder::BuildError::Invalid(reason)) => Ok(PayloadStatus::new(PayloadStatusEnum::Invalid { validation_error: reason }, Some(parent_hash))),
        Err(e) => Err(internal(e)),
    }
}

fn forkchoice_updated(ctx: &RpcContext, state: ForkchoiceState, attributes: Option<Value>) -> Result<ForkchoiceUpdated> {
    let storage = ctx.sequencer.storage();
    if state.head_block_hash.is_zero() {
        return Err(engine_error(-38002, "Invalid forkchoice state"));
    }
    let Some(number) = storage.block_number(&state.head_block_hash).map_err(internal)? else {
        return Ok(ForkchoiceUpdated::from_status(PayloadStatusEnum::Syncing));
    };
    if storage.canonical_hash(number).map_err(internal)? != Some(state.head_block_hash) {
        return Ok(ForkchoiceUpdated::from_status(PayloadStatusEnum::Syncing));
    }
    let head = storage.head().0;
    if number < head {
        ctx.sequencer.unwind_to(number).map_err(internal)?;
    }
    let lookup = |hash: B256| -> Result<Option<(u64, B256)>> {
        if hash.is_zero() {
            return Ok(None);
        }
        match storage.block_number(&hash).map_err(internal)? {
            Some(n) => Ok(Some((n, hash))),
            None => Err(engine_error(-38002, "Invalid forkchoice state")),
        }
    };
    let safe = lookup(state.safe_block_hash)?;
    let finalized = lookup(state.finalized_block_hash)?;
    storage.set_safe_finalized(safe, finalized).map_err(internal)?;
    let status = PayloadStatus::new(PayloadStatusEnum::Valid, Some(state.head_block_hash));
    let Some(attributes) = attributes.filter(|a| !a.is_null()) else { return Ok(ForkchoiceUpdated::new(status)) };
    let id = build_payload(ctx, &attributes)?;
    Ok(ForkchoiceUpdated::new(status).with_payload_id(alloy_rpc_types_engine::PayloadId(id)))
}

fn build_payload(ctx: &RpcContext, attributes: &Value) -> Result<alloy_primitives::B64> {
    let parsed: alloy_rpc_types_engine::PayloadAttributes =
        serde_json::from_value(attributes.clone()).map_err(|e| engine_error(-38003, &format!("Invalid payload attributes: {e}")))?;
    if attributes.get("transactions").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return Err(engine_error(-38003, "Invalid payload attributes: forced transactions are not supported yet"));
    }
    let request = pseq_builder::PayloadAttributes {
        timestamp: parsed.timestamp,
        prev_randao: parsed.prev_randao,
        fee_recipient: parsed.suggested_fee_recipient,
        withdrawals: parsed.withdrawals.unwrap_or_default(),
        parent_beacon_block_root: parsed.parent_beacon_block_root,
        no_tx_pool: attributes.get("noTxPool").and_then(Value::as_bool).unwrap_or(false),
    };
    let assembled = ctx.sequencer.build_payload(&request).map_err(|e| engine_error(-38003, &format!("Invalid payload attributes: {e}")))?;
    let hash = assembled.block.header.hash_slow();
    let digest = alloy_primitives::keccak256([hash.as_slice(), attributes.to_string().as_bytes()].concat());
    let id = alloy_primitives::B64::from_slice(&digest[..8]);
    let mut payloads = ctx.payloads.lock();
    payloads.retain(|(other, _, _)| *other != id);
    payloads.push((id, std::sync::Arc::new(parking_lot::Mutex::new(Some(assembled))), hash));
    if payloads.len() > KEEP_PAYLOADS {
        payloads.remove(0);
    }
    Ok(id)
}

/// `engine_getPayloadV<version>`: the built block in that version's shape.
fn get_payload(ctx: &RpcContext, id: alloy_primitives::B64, version: u8) -> Result<Value> {
    let slot = ctx.payloads.lock().iter().find(|(other, _, _)| *other == id).map(|(_, p, _)| p.clone());
    let slot = slot.ok_or_else(|| engine_error(-38001, "Unknown payload"))?;
    let guard = slot.lock();
    // Committed already (its newPayload came back): the block is in storage.
    let (block, block_value, requests) = match guard.as_ref() {
        Some(a) => (a.block.clone(), a.block_value, a.requests.clone().unwrap_or_default()),
        None => return Err(engine_error(-38001, "Unknown payload")),
    };
    drop(guard);
    let hash = block.header.hash_slow();
    let v3 = ExecutionPayloadV3::from_block_unchecked(hash, &block);
    let empty_bundle = json!({ "commitments": [], "proofs": [], "blobs": [] });
    Ok(match version {
        1 => serde_json::to_value(&v3.payload_inner.payload_inner).map_err(internal)?,
        2 => json!({ "executionPayload": v3.payload_inner, "blockValue": block_value }),
        3 => json!({ "executionPayload": v3, "blockValue": block_value, "blobsBundle": empty_bundle, "shouldOverrideBuilder": false }),
        _ => {
            let requests: Vec<Bytes> = requests.take();
            json!({ "executionPayload": v3, "blockValue": block_value, "blobsBundle": empty_bundle, "shouldOverrideBuilder": false, "executionRequests": requests })
        }
    })
}

/// Registers the Engine API.
pub fn register(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("engine_exchangeCapabilities", |_, _, _| Ok::<_, ErrorObjectOwned>(CAPABILITIES.to_vec()))?;
    module.register_method("engine_getClientVersionV1", |_, _, _| {
        Ok::<_, ErrorObjectOwned>(json!([{ "code": "PS", "name": "pseq", "version": env!("CARGO_PKG_VERSION"), "commit": "0x00000000" }]))
    })?;
    module.register_blocking_method("engine_newPayloadV1", |params, ctx, _| {
        let payload: ExecutionPayloadV1 = params.one()?;
        new_payload(&ctx, ExecutionPayload::V1(payload), ExecutionPayloadSidecar::none())
    })?;
    module.register_blocking_method("engine_newPayloadV2", |params, ctx, _| {
        let payload: ExecutionPayloadInputV2 = params.one()?;
        new_payload(&ctx, payload.into_payload(), ExecutionPayloadSidecar::none())
    })?;
    module.register_blocking_method("engine_newPayloadV3", |params, ctx, _| {
        let mut seq = params.sequence();
        let payload: ExecutionPayloadV3 = seq.next()?;
        let versioned_hashes: Vec<B256> = seq.next()?;
        let parent_beacon_block_root: B256 = seq.next()?;
        new_payload(&ctx, ExecutionPayload::V3(payload), ExecutionPayloadSidecar::v3(CancunPayloadFields { parent_beacon_block_root, versioned_hashes }))
    })?;
    module.register_blocking_method("engine_newPayloadV4", |params, ctx, _| {
        let mut seq = params.sequence();
        let payload: ExecutionPayloadV3 = seq.next()?;
        let versioned_hashes: Vec<B256> = seq.next()?;
        let parent_beacon_block_root: B256 = seq.next()?;
        let requests: Vec<Bytes> = seq.next()?;
        let sidecar = ExecutionPayloadSidecar::v4(
            CancunPayloadFields { parent_beacon_block_root, versioned_hashes },
            PraguePayloadFields::new(alloy_eips::eip7685::Requests::new(requests)),
        );
        new_payload(&ctx, ExecutionPayload::V3(payload), sidecar)
    })?;
    for (name, version) in [("engine_getPayloadV1", 1u8), ("engine_getPayloadV2", 2), ("engine_getPayloadV3", 3), ("engine_getPayloadV4", 4), ("engine_getPayloadV5", 5)] {
        module.register_method(name, move |params, ctx, _| {
            let id: alloy_primitives::B64 = params.one()?;
            get_payload(ctx, id, version)
        })?;
    }
    for name in ["engine_forkchoiceUpdatedV1", "engine_forkchoiceUpdatedV2", "engine_forkchoiceUpdatedV3"] {
        module.register_blocking_method(name, |params, ctx, _| {
            let mut seq = params.sequence();
            let state: ForkchoiceState = seq.next()?;
            let attributes: Option<Value> = seq.optional_next()?;
            forkchoice_updated(&ctx, state, attributes)
        })?;
    }
    Ok(())
}
