//! Starting the servers: JSON-RPC over HTTP and WebSocket on one port (jsonrpsee), and the
//! `/metrics` (Prometheus) and `/health` endpoints (axum).

use crate::context::RpcContext;
use jsonrpsee::{
    server::{BatchRequestConfig, Server, ServerConfig, ServerHandle},
    RpcModule,
};
use pseq_builder::Sequencer;
use std::{net::SocketAddr, sync::Arc};

/// Largest request body accepted (geth's HTTP limit is 5 MiB; blocks of big transactions need
/// more).
pub const MAX_REQUEST_BYTES: u32 = 16 * 1024 * 1024;
/// Largest response.
pub const MAX_RESPONSE_BYTES: u32 = 256 * 1024 * 1024;
/// Most calls in one batch.
pub const MAX_BATCH: u32 = 1_000;
/// Most open connections (jsonrpsee's default of 100 answered HTTP 429 to a load generator with
/// more than 100 batches in flight at 15,000 tx/s).
pub const MAX_CONNECTIONS: u32 = 10_000;
/// Most subscriptions one WebSocket connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 1_024;

/// Subscription ids as geth writes them: `0x` and 32 hex digits (clients such as viem expect
/// strings, jsonrpsee's default is a number).
#[derive(Debug, Default)]
pub struct HexIdProvider {
    counter: std::sync::atomic::AtomicU64,
}

impl jsonrpsee::core::traits::IdProvider for HexIdProvider {
    fn next_id(&self) -> jsonrpsee::types::SubscriptionId<'static> {
        use std::hash::{BuildHasher, Hasher};
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Unpredictable across connections (a random-keyed hash of a counter), unique per node.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(n);
        let id = format!("0x{:016x}{n:016x}", hasher.finish());
        jsonrpsee::types::SubscriptionId::Str(id.into())
    }
}

/// Every namespace for this context (the dev ones only when it says so).
pub fn module(context: RpcContext) -> Result<RpcModule<RpcContext>, String> {
    let dev = context.dev;
    let mut module = RpcModule::new(context);
    let registered = (|| {
        crate::chain::register(&mut module)?;
        crate::chain_config::register(&mut module)?;
        crate::engine::register_testing(&mut module)?;
        crate::state::register(&mut module)?;
        crate::call::register(&mut module)?;
        crate::send::register(&mut module)?;
        crate::fees::register(&mut module)?;
        crate::filters::register(&mut module)?;
        crate::txpool::register(&mut module)?;
        crate::pubsub::register(&mut module)?;
        crate::trace::register(&mut module)?;
        if dev {
            crate::dev::register(&mut module)?;
        }
        Ok::<_, jsonrpsee::core::RegisterMethodError>(())
    })();
    registered.map_err(|e| e.to_string())?;
    Ok(module)
}

/// Starts the HTTP + WebSocket JSON-RPC server; returns the bound address and the handle that
/// stops it.
pub async fn start_rpc(addr: SocketAddr, module: RpcModule<RpcContext>) -> Result<(SocketAddr, ServerHandle), String> {
    let config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .max_subscriptions_per_connection(MAX_SUBSCRIPTIONS_PER_CONNECTION)
        .max_connections(MAX_CONNECTIONS)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        .set_id_provider(HexIdProvider::default())
        .build();
    let server = Server::builder()
        .set_config(config)
        .set_http_middleware(tower::ServiceBuilder::new().layer(crate::cors::CorsLayer))
        .build(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (JSON-RPC): {e}"))?;
    let bound = server.local_addr().map_err(|e| e.to_string())?;
    Ok((bound, server.start(module)))
}

/// The Engine API module (served on the authenticated port only).
pub fn engine_module(context: RpcContext) -> Result<RpcModule<RpcContext>, String> {
    let mut module = RpcModule::new(context);
    crate::engine::register(&mut module).map_err(|e| e.to_string())?;
    // Consensus clients also read the chain through the authenticated port.
    crate::chain::register(&mut module).map_err(|e| e.to_string())?;
    Ok(module)
}

/// Starts the Engine API server with JWT authentication; returns the bound address and handle.
pub async fn start_engine(
    addr: SocketAddr,
    module: RpcModule<RpcContext>,
    secret: alloy_rpc_types_engine::JwtSecret,
) -> Result<(SocketAddr, ServerHandle), String> {
    let config = ServerConfig::builder()
        .max_request_body_size(MAX_REQUEST_BYTES)
        .max_response_body_size(MAX_RESPONSE_BYTES)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        .build();
    let middleware = tower::ServiceBuilder::new().layer(crate::jwt::JwtLayer::new(secret));
    let server = Server::builder()
        .set_config(config)
        .set_http_middleware(middleware)
        .build(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (Engine API): {e}"))?;
    let bound = server.local_addr().map_err(|e| e.to_string())?;
    Ok((bound, server.start(module)))
}

/// Starts `/metrics` and `/health` on `addr`; returns the bound address.
pub async fn start_metrics(addr: SocketAddr, sequencer: Arc<Sequencer>) -> Result<SocketAddr, String> {
    use axum::{routing::get, Router};
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (metrics): {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let for_metrics = sequencer.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let sequencer = for_metrics.clone();
                async move {
                    let status = sequencer.pool().lock().status();
                    sequencer.metrics().render(status.pending, status.queued + status.base_fee)
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let sequencer = sequencer.clone();
                async move {
                    let (number, hash) = sequencer.storage().head();
                    format!("{{\"status\":\"ok\",\"head\":{number},\"hash\":\"{hash}\"}}")
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
