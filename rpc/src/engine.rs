//! The Engine API (authenticated port): `engine_exchangeCapabilities`,
//! `engine_getClientVersionV1`, `engine_newPayloadV1`-`V4` (the payload is checked, executed with
//! the parallel executor and committed when it extends the head) and
//! `engine_forkchoiceUpdatedV1`-`V3` (moves the head; an ancestor of the head unwinds storage to
//! it; with payload attributes it builds a block on the new head from the pool and returns its
//! payload id), `engine_getPayloadV1`-`V5` (the built block with its blobs bundle; a `newPayload`
//! of it then commits the prepared state without executing again),
//! `engine_getPayloadBodiesByHashV1`/`ByRangeV1`; and `testing_buildBlockV1` for the public port.

use crate::{context::RpcContext, error::internal};
use alloy_consensus::{Block, TxEnvelope};
use alloy_eips::eip7594::BlobTransactionSidecarVariant;
use alloy_primitives::{Bytes, B256};
use alloy_rpc_types_engine::{
    CancunPayloadFields, ExecutionPayload, ExecutionPayloadInputV2, ExecutionPayloadSidecar, ExecutionPayloadV1, ExecutionPayloadV3,
    ForkchoiceState, ForkchoiceUpdated, PayloadStatus, PayloadStatusEnum, PraguePayloadFields,
};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

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
    "engine_getPayloadBodiesByHashV1",
    "engine_getPayloadBodiesByRangeV1",
];

/// Built payloads kept for `getPayload`.
const KEEP_PAYLOADS: usize = 8;
/// How often a payload not yet fetched is rebuilt when the pool changed.
const IMPROVE_EVERY: Duration = Duration::from_millis(100);
/// How long a payload keeps improving at most (one slot).
const IMPROVE_FOR: Duration = Duration::from_secs(12);

/// A payload built for a consensus client: the best block so far, rebuilt in the background
/// while the pool changes, until `getPayload` fetches it (or the head moves, or a slot passes).
#[derive(Debug)]
pub struct PayloadJob {
    /// The payload id `forkchoiceUpdated` returned.
    pub id: alloy_primitives::B64,
    /// The best block so far; taken when its `newPayload` commits it.
    pub best: Mutex<Option<pseq_builder::Assembled>>,
    /// Hash of the best block (how `newPayload` finds it).
    pub hash: Mutex<B256>,
    /// Set by `getPayload`: the block handed out is final.
    pub fetched: AtomicBool,
}

/// Rebuilds `job` while the pool changes, keeping a block that pays the fee recipient more.
/// `seen`: the pool's status taken before the job's first build, so that a transaction arriving
/// between that build and this thread's start still makes it rebuild.
fn improve(ctx: Arc<RpcContext>, job: Arc<PayloadJob>, request: pseq_builder::PayloadAttributes, parent: B256, mut seen: pseq_mempool::PoolStatus) {
    let started = Instant::now();
    let mut rebuilds = 0u32;
    while started.elapsed() < IMPROVE_FOR {
        std::thread::sleep(IMPROVE_EVERY);
        if job.fetched.load(Ordering::Acquire) || ctx.sequencer.storage().head().1 != parent {
            break;
        }
        let status = ctx.sequencer.pool().lock().status();
        if status == seen {
            continue;
        }
        let better = match ctx.sequencer.build_payload(&request) {
            Ok(better) => better,
            Err(error) => {
                // Try again at the next tick (the pool status is not marked as seen).
                tracing::warn!(id = %job.id, %error, "payload rebuild failed");
                continue;
            }
        };
        seen = status;
        rebuilds += 1;
        let mut best = job.best.lock();
        if job.fetched.load(Ordering::Acquire) {
            break;
        }
        if best.as_ref().is_some_and(|current| better.block_value > current.block_value) {
            *job.hash.lock() = better.block.header.hash_slow();
            *best = Some(better);
        }
    }
    tracing::debug!(id = %job.id, rebuilds, "payload no longer improved");
}

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
    let built = ctx.payloads.lock().iter().find(|job| *job.hash.lock() == hash).cloned();
    if let Some(job) = built {
        job.fetched.store(true, Ordering::Release);
        let taken = job.best.lock().take();
        if let Some(assembled) = taken {
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

fn forkchoice_updated(ctx: &Arc<RpcContext>, state: ForkchoiceState, attributes: Option<Value>) -> Result<ForkchoiceUpdated> {
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

/// Reads payload attributes (V1-V3, with the OP-stack `transactions`, `noTxPool` and `gasLimit`).
fn parse_attributes(attributes: &Value) -> Result<pseq_builder::PayloadAttributes> {
    let bad = |e: String| engine_error(-38003, &format!("Invalid payload attributes: {e}"));
    let parsed: alloy_rpc_types_engine::PayloadAttributes = serde_json::from_value(attributes.clone()).map_err(|e| bad(e.to_string()))?;
    let raw_transactions: Vec<Bytes> = match attributes.get("transactions") {
        None | Some(Value::Null) => Vec::new(),
        Some(list) => serde_json::from_value(list.clone()).map_err(|e| bad(format!("transactions: {e}")))?,
    };
    let gas_limit = match attributes.get("gasLimit") {
        None | Some(Value::Null) => None,
        Some(value) => Some(serde_json::from_value::<alloy_primitives::U64>(value.clone()).map_err(|e| bad(format!("gasLimit: {e}")))?.to()),
    };
    Ok(pseq_builder::PayloadAttributes {
        timestamp: parsed.timestamp,
        prev_randao: parsed.prev_randao,
        fee_recipient: parsed.suggested_fee_recipient,
        withdrawals: parsed.withdrawals.unwrap_or_default(),
        parent_beacon_block_root: parsed.parent_beacon_block_root,
        no_tx_pool: attributes.get("noTxPool").and_then(Value::as_bool).unwrap_or(false),
        transactions: decode_forced(&raw_transactions).map_err(bad)?,
        gas_limit,
        extra_data: None,
    })
}

/// Decodes transactions a block must carry (canonical EIP-2718 form, senders recovered).
fn decode_forced(raws: &[Bytes]) -> std::result::Result<Vec<std::sync::Arc<pseq_mempool::PooledTx>>, String> {
    raws.iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut buf = raw.as_ref();
            let tx = <TxEnvelope as alloy_eips::eip2718::Decodable2718>::decode_2718(&mut buf).map_err(|e| format!("transaction {i}: {e}"))?;
            let sender = alloy_consensus::transaction::SignerRecoverable::recover_signer(&tx).map_err(|_| format!("transaction {i}: invalid sender"))?;
            Ok(std::sync::Arc::new(pseq_mempool::PooledTx::new(tx, sender)))
        })
        .collect()
}

fn build_payload(ctx: &Arc<RpcContext>, attributes: &Value) -> Result<alloy_primitives::B64> {
    let request = parse_attributes(attributes)?;
    let seen = ctx.sequencer.pool().lock().status();
    let assembled = ctx.sequencer.build_payload(&request).map_err(|e| engine_error(-38003, &format!("Invalid payload attributes: {e}")))?;
    let hash = assembled.block.header.hash_slow();
    let parent = assembled.block.header.parent_hash;
    let digest = alloy_primitives::keccak256([parent.as_slice(), attributes.to_string().as_bytes()].concat());
    let id = alloy_primitives::B64::from_slice(&digest[..8]);
    let job = Arc::new(PayloadJob { id, best: Mutex::new(Some(assembled)), hash: Mutex::new(hash), fetched: AtomicBool::new(false) });
    {
        let mut payloads = ctx.payloads.lock();
        payloads.retain(|other| other.id != id);
        payloads.push(job.clone());
        if payloads.len() > KEEP_PAYLOADS {
            payloads.remove(0);
        }
    }
    // Payloads that may take pool transactions keep improving until fetched.
    if !request.no_tx_pool {
        let ctx = ctx.clone();
        let spawned = std::thread::Builder::new().name("payload-improve".into()).spawn(move || improve(ctx, job, request, parent, seen));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "payload improvement not started");
        }
    }
    Ok(id)
}

/// The blobs bundle of a payload: V1 (one KZG proof per blob) for `getPayloadV3`/`V4`, V2 (cell
/// proofs) for `V5`; legacy sidecars are converted to cell proofs where V2 is asked for.
fn blobs_bundle(sidecars: &[std::sync::Arc<BlobTransactionSidecarVariant>], cell_proofs: bool) -> Result<Value> {
    let (mut commitments, mut proofs, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
    for sidecar in sidecars {
        match (sidecar.as_ref(), cell_proofs) {
            (BlobTransactionSidecarVariant::Eip4844(s), false) => {
                commitments.extend(s.commitments.iter().copied());
                proofs.extend(s.proofs.iter().copied());
                blobs.extend(s.blobs.iter().copied());
            }
            (BlobTransactionSidecarVariant::Eip7594(s), true) => {
                commitments.extend(s.commitments.iter().copied());
                proofs.extend(s.cell_proofs.iter().copied());
                blobs.extend(s.blobs.iter().copied());
            }
            (BlobTransactionSidecarVariant::Eip4844(s), true) => {
                let converted = s.clone().try_into_7594(alloy_eips::eip4844::env_settings::EnvKzgSettings::Default.get()).map_err(internal)?;
                commitments.extend(converted.commitments.iter().copied());
                proofs.extend(converted.cell_proofs.iter().copied());
                blobs.extend(converted.blobs.iter().copied());
            }
            (BlobTransactionSidecarVariant::Eip7594(_), false) => return Err(engine_error(-38005, "Unsupported fork")),
        }
    }
    Ok(json!({ "commitments": commitments, "proofs": proofs, "blobs": blobs }))
}

/// A built block in the shape of `engine_getPayloadV<version>`.
fn payload_response(assembled: &pseq_builder::Assembled, version: u8) -> Result<Value> {
    let block = &assembled.block;
    let block_value = assembled.block_value;
    let hash = block.header.hash_slow();
    let v3 = ExecutionPayloadV3::from_block_unchecked(hash, block);
    Ok(match version {
        1 => serde_json::to_value(&v3.payload_inner.payload_inner).map_err(internal)?,
        2 => json!({ "executionPayload": v3.payload_inner, "blockValue": block_value }),
        3 => json!({ "executionPayload": v3, "blockValue": block_value, "blobsBundle": blobs_bundle(&assembled.sidecars, false)?, "shouldOverrideBuilder": false }),
        _ => {
            // EIP-7685: requests with empty data are left out of the list.
            let requests: Vec<Bytes> = assembled.requests.clone().unwrap_or_default().take().into_iter().filter(|r| r.len() > 1).collect();
            let bundle = blobs_bundle(&assembled.sidecars, version >= 5)?;
            json!({ "executionPayload": v3, "blockValue": block_value, "blobsBundle": bundle, "shouldOverrideBuilder": false, "executionRequests": requests })
        }
    })
}

/// `engine_getPayloadV<version>`: the built block in that version's shape.
fn get_payload(ctx: &RpcContext, id: alloy_primitives::B64, version: u8) -> Result<Value> {
    let job = ctx.payloads.lock().iter().find(|job| job.id == id).cloned();
    let job = job.ok_or_else(|| engine_error(-38001, "Unknown payload"))?;
    job.fetched.store(true, Ordering::Release);
    let guard = job.best.lock();
    // Committed already (its newPayload came back): the block is in storage.
    let assembled = guard.as_ref().ok_or_else(|| engine_error(-38001, "Unknown payload"))?;
    payload_response(assembled, version)
}

/// `engine_getPayloadBodiesByHashV1` / `ByRangeV1`: transactions and withdrawals of stored
/// blocks, `null` for those unknown.
fn payload_body(ctx: &RpcContext, hash: B256) -> Result<Value> {
    let Some(body) = ctx.sequencer.storage().body(&hash).map_err(internal)? else { return Ok(Value::Null) };
    let transactions: Vec<Bytes> = body.transactions.iter().map(|tx| alloy_eips::eip2718::Encodable2718::encoded_2718(tx).into()).collect();
    Ok(json!({ "transactions": transactions, "withdrawals": body.withdrawals }))
}

/// Most bodies one request may ask for (the spec asks for at least 32).
const MAX_BODIES: u64 = 1024;

/// `testing_buildBlockV1(parentHash, attributes, transactions | null, extraData)`: builds a block
/// on the head without committing it and returns it as `getPayload` of its fork would. With a
/// transaction list the block holds exactly those (all must apply); with `null`, the pool's best.
fn testing_build_block(ctx: &RpcContext, parent: B256, attributes: &Value, transactions: Option<Vec<Bytes>>, extra_data: Option<Bytes>) -> Result<Value> {
    let head = ctx.sequencer.storage().head().1;
    if parent != head {
        return Err(crate::error::server(format!("parent {parent} is not the head {head}")));
    }
    let mut request = parse_attributes(attributes)?;
    if let Some(raws) = transactions {
        request.transactions = decode_forced(&raws).map_err(crate::error::server)?;
        request.no_tx_pool = true;
    }
    request.extra_data = extra_data;
    let assembled = ctx.sequencer.build_payload(&request).map_err(|e| match e {
        pseq_builder::BuildError::Invalid(why) => crate::error::server(why),
        other => internal(other),
    })?;
    let header = &assembled.block.header;
    let spec = ctx.sequencer.rules().fork(header.number, header.timestamp).map_err(internal)?.1;
    use pseq_executor::revm::primitives::hardfork::SpecId;
    let version = if spec.is_enabled_in(SpecId::OSAKA) {
        5
    } else if spec.is_enabled_in(SpecId::PRAGUE) {
        4
    } else if spec.is_enabled_in(SpecId::CANCUN) {
        3
    } else {
        2
    };
    payload_response(&assembled, version)
}

/// Registers `testing_buildBlockV1` (on the public port: it commits nothing).
pub fn register_testing(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_blocking_method("testing_buildBlockV1", |params, ctx, _| {
        let mut seq = params.sequence();
        let parent: B256 = seq.next()?;
        let attributes: Value = seq.next()?;
        let transactions: Option<Vec<Bytes>> = seq.optional_next()?;
        let extra_data: Option<Bytes> = seq.optional_next()?;
        testing_build_block(&ctx, parent, &attributes, transactions, extra_data)
    })?;
    Ok(())
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
    module.register_method("engine_getPayloadBodiesByHashV1", |params, ctx, _| {
        let hashes: Vec<B256> = params.one()?;
        if hashes.len() as u64 > MAX_BODIES {
            return Err(engine_error(-38004, "Too large request"));
        }
        hashes.into_iter().map(|hash| payload_body(ctx, hash)).collect::<Result<Vec<Value>>>()
    })?;
    module.register_method("engine_getPayloadBodiesByRangeV1", |params, ctx, _| {
        let mut seq = params.sequence();
        let start: alloy_primitives::U64 = seq.next()?;
        let count: alloy_primitives::U64 = seq.next()?;
        let (start, count) = (start.to::<u64>(), count.to::<u64>());
        if start < 1 || count < 1 {
            return Err(ErrorObjectOwned::owned(-32602, "Invalid params: start and count must be at least 1", None::<()>));
        }
        if count > MAX_BODIES {
            return Err(engine_error(-38004, "Too large request"));
        }
        let storage = ctx.sequencer.storage();
        // Bodies up to the head only: no trailing nulls.
        let last = start.saturating_add(count - 1).min(storage.head().0);
        let mut bodies = Vec::new();
        for number in start..=last {
            let body = match storage.canonical_hash(number).map_err(internal)? {
                Some(hash) => payload_body(ctx, hash)?,
                None => Value::Null,
            };
            bodies.push(body);
        }
        Ok(bodies)
    })?;
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
