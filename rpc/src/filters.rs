//! Polled filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`), as ethers and web3.py use
//! them over HTTP. A filter not polled for five minutes is dropped, as in geth.

use crate::{
    chain::{block_logs, get_logs},
    context::RpcContext,
    convert::StoredBlock,
    error::{internal, server},
};
use alloy_primitives::B256;
use alloy_rpc_types_eth::{Filter, FilterBlockOption};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use parking_lot::Mutex;
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, mpsc},
    time::{Duration, Instant},
};

/// How long an unpolled filter lives (geth's `filterTimeout`).
pub const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
/// Most filters installed at once.
pub const MAX_FILTERS: usize = 10_000;

enum Kind {
    Blocks { next: u64 },
    Logs { filter: Box<Filter>, next: u64 },
    Pending { hashes: mpsc::Receiver<B256> },
}

struct Installed {
    kind: Kind,
    polled: Instant,
}

/// The installed filters of a node.
#[derive(Default)]
pub struct FilterStore {
    filters: Mutex<HashMap<String, Installed>>,
    counter: AtomicU64,
}

impl std::fmt::Debug for FilterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterStore").field("installed", &self.filters.lock().len()).finish()
    }
}

impl FilterStore {
    fn install(&self, kind: Kind) -> Result<String, ErrorObjectOwned> {
        use std::hash::{BuildHasher, Hasher};
        let mut filters = self.filters.lock();
        filters.retain(|_, f| f.polled.elapsed() < FILTER_TIMEOUT);
        if filters.len() >= MAX_FILTERS {
            return Err(server("too many filters"));
        }
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(n);
        let id = format!("0x{:016x}{n:016x}", hasher.finish());
        filters.insert(id.clone(), Installed { kind, polled: Instant::now() });
        Ok(id)
    }
}

fn changes(ctx: &RpcContext, id: &str) -> Result<Value, ErrorObjectOwned> {
    let storage = ctx.sequencer.storage();
    let head = storage.head().0;
    let mut filters = ctx.filters.filters.lock();
    let installed = filters.get_mut(id).ok_or_else(|| server("filter not found"))?;
    installed.polled = Instant::now();
    match &mut installed.kind {
        Kind::Blocks { next } => {
            let mut hashes = Vec::new();
            while *next <= head {
                if let Some(hash) = storage.canonical_hash(*next).map_err(internal)? {
                    hashes.push(hash);
                }
                *next += 1;
            }
            Ok(serde_json::to_value(hashes).map_err(internal)?)
        }
        Kind::Pending { hashes } => Ok(serde_json::to_value(hashes.try_iter().collect::<Vec<_>>()).map_err(internal)?),
        Kind::Logs { filter, next } => {
            let to = match filter.block_option {
                FilterBlockOption::Range { to_block: Some(tag), .. } => tag.as_number().unwrap_or(head).min(head),
                _ => head,
            };
            let mut logs = Vec::new();
            while *next <= to {
                if let Some(block) = StoredBlock::load_number(storage, *next).map_err(internal)? {
                    logs.extend(block_logs(ctx, &block, filter)?);
                }
                *next += 1;
            }
            Ok(serde_json::to_value(logs).map_err(internal)?)
        }
    }
}

/// Registers the filter methods.
pub fn register(module: &mut RpcModule<RpcContext>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_newFilter", |params, ctx, _| {
        let filter: Filter = params.one()?;
        let head = ctx.sequencer.storage().head().0;
        let next = match filter.block_option {
            FilterBlockOption::Range { from_block: Some(tag), .. } => tag.as_number().unwrap_or(head + 1),
            FilterBlockOption::AtBlockHash(_) => return Err(server("block hash filters cannot be polled")),
            _ => head + 1,
        };
        ctx.filters.install(Kind::Logs { filter: Box::new(filter), next })
    })?;
    module.register_method("eth_newBlockFilter", |_, ctx, _| {
        let next = ctx.sequencer.storage().head().0 + 1;
        ctx.filters.install(Kind::Blocks { next })
    })?;
    module.register_method("eth_newPendingTransactionFilter", |_, ctx, _| {
        let hashes = ctx.sequencer.pool().lock().subscribe_pending();
        ctx.filters.install(Kind::Pending { hashes })
    })?;
    module.register_method("eth_getFilterChanges", |params, ctx, _| {
        let id: String = params.one()?;
        changes(ctx, &id)
    })?;
    module.register_blocking_method("eth_getFilterLogs", |params, ctx, _| {
        let id: String = params.one()?;
        let filter = {
            let mut filters = ctx.filters.filters.lock();
            let installed = filters.get_mut(&id).ok_or_else(|| server("filter not found"))?;
            installed.polled = Instant::now();
            match &installed.kind {
                Kind::Logs { filter, .. } => (**filter).clone(),
                _ => return Err(server("filter not found")),
            }
        };
        get_logs(&ctx, &filter)
    })?;
    module.register_method("eth_uninstallFilter", |params, ctx, _| {
        let id: String = params.one()?;
        Ok::<_, ErrorObjectOwned>(ctx.filters.filters.lock().remove(&id).is_some())
    })?;
    Ok(())
}
