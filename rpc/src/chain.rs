//! Chain reads: blocks, transactions, receipts, logs, and the identity methods (`eth_chainId`,
//! `net_version`, `web3_clientVersion`, …) and raw `debug_getRaw*` encodings.

use crate::{
    context::{RpcContext, MAX_LOG_BLOCK_RANGE},
    convert::{rpc_transaction, StoredBlock},
    error::{internal, invalid_params, server},
};
use alloy_eips::{eip2718::Encodable2718, BlockId, BlockNumberOrTag};
use alloy_primitives::{keccak256, Bytes, B256, U64};
use alloy_rlp::Encodable;
use alloy_rpc_types_eth::{Filter, FilterBlockOption, Log, TransactionReceipt};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};

type Result<T> = std::result::Result<T, ErrorObjectOwned>;

/// A 32-byte hash parameter, `0x`-prefixed as geth requires.
fn hash_param(params: jsonrpsee::types::Params<'_>) -> Result<B256> {
    let text: String = params.one()?;
    if !text.starts_with("0x") {
        return Err(invalid_params(format!("invalid argument 0: hex string without 0x prefix: {text:?}")));
    }
    text.parse().map_err(|_| invalid_params(format!("invalid argument 0: not a 32-byte hash: {text:?}")))
}

/// The EIP-2718 encoding of a mined transaction.
fn mined_raw_transaction(ctx: &RpcContext, hash: B256) -> Result<Option<Bytes>> {
    let storage = ctx.sequencer.storage();
    let Some((number, index)) = storage.transaction_location(&hash).map_err(internal)? else { return Ok(None) };
    let block = StoredBlock::load_number(storage, number).map_err(internal)?;
    Ok(block.and_then(|b| b.raw_transaction(index as usize)).map(Bytes::from))
}

/// The canonical block `id` names, `None` when it does not exist.
pub fn block_by_id(ctx: &RpcContext, id: BlockId) -> Result<Option<StoredBlock>> {
    let storage = ctx.sequencer.storage();
    match id {
        BlockId::Hash(hash) => StoredBlock::load(storage, hash.block_hash).map_err(internal),
        BlockId::Number(BlockNumberOrTag::Number(n)) if n > storage.head().0 => Ok(None),
        BlockId::Number(_) => {
            let number = ctx.resolve(Some(id))?;
            StoredBlock::load_number(storage, number).map_err(internal)
        }
    }
}

fn receipts_of(ctx: &RpcContext, block: &StoredBlock) -> Result<Vec<TransactionReceipt>> {
    let receipts = ctx.sequencer.storage().receipts(&block.hash).map_err(internal)?.unwrap_or_default();
    Ok(block.rpc_receipts(&receipts, blob_gas_price(ctx, block)))
}

/// The blob base fee of `block` (Cancun on).
fn blob_gas_price(ctx: &RpcContext, block: &StoredBlock) -> Option<u128> {
    let rules = ctx.sequencer.rules();
    rules
        .fork(block.header.number, block.header.timestamp)
        .ok()
        .and_then(|(fork, _)| rules.blob_params(&fork))
        .and_then(|params| block.header.blob_fee(params))
}

/// The receipt of a mined transaction.
pub fn receipt_by_hash(ctx: &RpcContext, hash: B256) -> Result<Option<TransactionReceipt>> {
    let storage = ctx.sequencer.storage();
    let Some((number, index)) = storage.transaction_location(&hash).map_err(internal)? else { return Ok(None) };
    let Some(block) = StoredBlock::load_number(storage, number).map_err(internal)? else { return Ok(None) };
    let receipts = storage.receipts(&block.hash).map_err(internal)?.unwrap_or_default();
    Ok(block.rpc_receipt(index as usize, &receipts, blob_gas_price(ctx, &block)))
}

/// Logs of `block` that `filter` matches.
pub fn block_logs(ctx: &RpcContext, block: &StoredBlock, filter: &Filter) -> Result<Vec<Log>> {
    if !filter.matches_bloom(block.header.logs_bloom) {
        return Ok(Vec::new());
    }
    let receipts = receipts_of(ctx, block)?;
    Ok(receipts.into_iter().flat_map(|r| r.inner.into_logs()).filter(|log| filter.matches(&log.inner)).collect())
}

/// `eth_getLogs`: the logs `filter` matches over its block range (at most
/// [`MAX_LOG_BLOCK_RANGE`] blocks) or its block hash.
pub fn get_logs(ctx: &RpcContext, filter: &Filter) -> Result<Vec<Log>> {
    let storage = ctx.sequencer.storage();
    let head = storage.head().0;
    let (from, to) = match filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            let block = StoredBlock::load(storage, hash).map_err(internal)?.ok_or_else(|| server("unknown block"))?;
            return block_logs(ctx, &block, filter);
        }
        FilterBlockOption::Range { from_block, to_block } => {
            let resolve = |tag: Option<BlockNumberOrTag>| -> Result<u64> {
                match tag {
                    Some(BlockNumberOrTag::Number(n)) => Ok(n),
                    other => ctx.resolve(other.map(BlockId::Number)),
                }
            };
            let to = resolve(to_block)?;
            if to > head {
                return Err(invalid_params("block range extends beyond current head block"));
            }
            (resolve(from_block)?, to)
        }
    };
    if from > to {
        if from > head {
            return Ok(Vec::new());
        }
        return Err(invalid_params("invalid block range params"));
    }
    if to - from >= MAX_LOG_BLOCK_RANGE {
        return Err(server(format!("exceed maximum block range: {MAX_LOG_BLOCK_RANGE}")));
    }
    let mut logs = Vec::new();
    for number in from..=to {
        let Some(header) = storage.header_by_number(number).map_err(internal)? else { continue };
        if !filter.matches_bloom(header.logs_bloom) {
            continue;
        }
        if let Some(block) = StoredBlock::load_number(storage, number).map_err(internal)? {
            logs.extend(block_logs(ctx, &block, filter)?);
        }
    }
    Ok(logs)
}

fn tx_by_block_and_index(ctx: &RpcContext, id: BlockId, index: U64) -> Result<Option<alloy_rpc_types_eth::Transaction>> {
    let Some(block) = block_by_id(ctx, id)? else { return Ok(None) };
    let index = index.to::<usize>();
    if !block.has_tx(index) {
        return Ok(None);
    }
    let Some(sender) = block.sender(index) else { return Ok(None) };
    Ok(block.rpc_transaction(index, sender))
}

/// Registers the chain reads.
pub fn register(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_chainId", |_, ctx, _| Ok::<_, ErrorObjectOwned>(U64::from(ctx.sequencer.spec().chain_id)))?;
    module.register_method("net_version", |_, ctx, _| Ok::<_, ErrorObjectOwned>(ctx.sequencer.spec().chain_id.to_string()))?;
    module.register_method("net_listening", |_, _, _| Ok::<_, ErrorObjectOwned>(true))?;
    module.register_method("net_peerCount", |_, _, _| Ok::<_, ErrorObjectOwned>(U64::ZERO))?;
    module.register_method("web3_clientVersion", |_, ctx, _| Ok::<_, ErrorObjectOwned>(ctx.client_version.clone()))?;
    module.register_method("web3_sha3", |params, _, _| {
        let data: Bytes = params.one()?;
        Ok::<_, ErrorObjectOwned>(keccak256(&data))
    })?;
    module.register_method("eth_syncing", |_, _, _| Ok::<_, ErrorObjectOwned>(false))?;
    module.register_method("eth_blockNumber", |_, ctx, _| Ok::<_, ErrorObjectOwned>(U64::from(ctx.sequencer.storage().head().0)))?;
    module.register_method("eth_accounts", |_, ctx, _| Ok::<_, ErrorObjectOwned>(ctx.accounts.clone()))?;
    module.register_method("eth_getBlockByNumber", |params, ctx, _| {
        let mut seq = params.sequence();
        let tag: BlockNumberOrTag = seq.next()?;
        let full: bool = seq.optional_next()?.unwrap_or(false);
        Ok::<_, ErrorObjectOwned>(block_by_id(ctx, BlockId::Number(tag))?.map(|b| b.rpc_block(full)))
    })?;
    module.register_method("eth_getBlockByHash", |params, ctx, _| {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let full: bool = seq.optional_next()?.unwrap_or(false);
        Ok::<_, ErrorObjectOwned>(block_by_id(ctx, BlockId::hash(hash))?.map(|b| b.rpc_block(full)))
    })?;
    module.register_method("eth_getBlockTransactionCountByNumber", |params, ctx, _| {
        let tag: BlockNumberOrTag = params.one()?;
        Ok::<_, ErrorObjectOwned>(block_by_id(ctx, BlockId::Number(tag))?.map(|b| U64::from(b.body.transactions.len())))
    })?;
    module.register_method("eth_getBlockTransactionCountByHash", |params, ctx, _| {
        let hash: B256 = params.one()?;
        Ok::<_, ErrorObjectOwned>(block_by_id(ctx, BlockId::hash(hash))?.map(|b| U64::from(b.body.transactions.len())))
    })?;
    module.register_method("eth_getUncleCountByBlockNumber", |params, ctx, _| {
        let tag: BlockNumberOrTag = params.one()?;
        Ok::<_, ErrorObjectOwned>(block_by_id(ctx, BlockId::Number(tag))?.map(|_| U64::ZERO))
    })?;
    module.register_method("eth_getUncleCountByBlockHash", |params, ctx, _| {
        let hash: B256 = params.one()?;
        Ok::<_, ErrorObjectOwned>(block_by_id(ctx, BlockId::hash(hash))?.map(|_| U64::ZERO))
    })?;
    module.register_method("eth_getTransactionByHash", |params, ctx, _| {
        let hash = hash_param(params)?;
        if let Some(entry) = ctx.sequencer.pool().lock().get(&hash) {
            return Ok::<_, ErrorObjectOwned>(Some(rpc_transaction(entry.tx.envelope.clone(), entry.tx.sender, None)));
        }
        let storage = ctx.sequencer.storage();
        let Some((number, index)) = storage.transaction_location(&hash).map_err(internal)? else { return Ok(None) };
        tx_by_block_and_index(ctx, BlockId::number(number), U64::from(index))
    })?;
    module.register_method("eth_getTransactionByBlockHashAndIndex", |params, ctx, _| {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let index: U64 = seq.next()?;
        tx_by_block_and_index(ctx, BlockId::hash(hash), index)
    })?;
    module.register_method("eth_getTransactionByBlockNumberAndIndex", |params, ctx, _| {
        let mut seq = params.sequence();
        let tag: BlockNumberOrTag = seq.next()?;
        let index: U64 = seq.next()?;
        tx_by_block_and_index(ctx, BlockId::Number(tag), index)
    })?;
    module.register_method("eth_getRawTransactionByHash", |params, ctx, _| {
        let hash = hash_param(params)?;
        if let Some(entry) = ctx.sequencer.pool().lock().get(&hash) {
            return Ok::<_, ErrorObjectOwned>(Some(Bytes::from(entry.tx.envelope.encoded_2718())));
        }
        mined_raw_transaction(ctx, hash)
    })?;
    module.register_method("eth_getTransactionReceipt", |params, ctx, _| {
        let hash = hash_param(params)?;
        receipt_by_hash(ctx, hash)
    })?;
    module.register_method("eth_getBlockReceipts", |params, ctx, _| {
        let id: BlockId = params.one()?;
        match block_by_id(ctx, id)? {
            Some(block) => receipts_of(ctx, &block).map(Some),
            None => Ok(None),
        }
    })?;
    // Scanning up to 10,000 blocks: off the async workers.
    module.register_blocking_method("eth_getLogs", |params, ctx, _| {
        let filter: Filter = params.one()?;
        get_logs(&ctx, &filter)
    })?;
    module.register_method("debug_getRawHeader", |params, ctx, _| {
        let id: BlockId = params.one()?;
        let block = block_by_id(ctx, id)?.ok_or_else(|| server("header not found"))?;
        let mut out = Vec::new();
        block.header.encode(&mut out);
        Ok::<_, ErrorObjectOwned>(Bytes::from(out))
    })?;
    module.register_method("debug_getRawBlock", |params, ctx, _| {
        let id: BlockId = params.one()?;
        let block = block_by_id(ctx, id)?.ok_or_else(|| server("block not found"))?;
        let full = alloy_consensus::Block { header: block.header, body: block.body };
        let mut out = Vec::new();
        full.encode(&mut out);
        Ok::<_, ErrorObjectOwned>(Bytes::from(out))
    })?;
    module.register_method("debug_getRawReceipts", |params, ctx, _| {
        let id: BlockId = params.one()?;
        let block = block_by_id(ctx, id)?.ok_or_else(|| server("block not found"))?;
        let receipts = ctx.sequencer.storage().receipts(&block.hash).map_err(internal)?.unwrap_or_default();
        Ok::<_, ErrorObjectOwned>(receipts.iter().map(|r| Bytes::from(r.encoded_2718())).collect::<Vec<_>>())
    })?;
    module.register_method("debug_getRawTransaction", |params, ctx, _| {
        let hash = hash_param(params)?;
        mined_raw_transaction(ctx, hash)
    })?;
    Ok(())
}
