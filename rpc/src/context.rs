//! [`RpcContext`]: what every method reads: the sequencer (storage, pool, chain spec), the
//! block producer's command channel, the dev signers, and limits.

use crate::error::{invalid_params, server};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use jsonrpsee::types::ErrorObjectOwned;
use pseq_builder::{MinerCommand, Sequencer};
use std::{collections::HashMap, sync::{mpsc, Arc}};

/// Largest block range one `eth_getLogs` may scan.
pub const MAX_LOG_BLOCK_RANGE: u64 = 10_000;

/// Shared state of the RPC methods.
#[derive(Debug)]
pub struct RpcContext {
    /// The node's core.
    pub sequencer: Arc<Sequencer>,
    /// The block producer's commands (`evm_mine`, mode switches); `None` when nothing produces.
    pub miner: Option<mpsc::Sender<MinerCommand>>,
    /// Accounts `eth_sendTransaction` signs for (the dev accounts).
    pub signers: HashMap<Address, PrivateKeySigner>,
    /// Their addresses in derivation order (`eth_accounts`).
    pub accounts: Vec<Address>,
    /// Whether the dev namespaces (`evm_`, `anvil_`, `hardhat_`) are on.
    pub dev: bool,
    /// `web3_clientVersion`.
    pub client_version: String,
    /// Installed polled filters.
    pub filters: crate::filters::FilterStore,
    /// Payloads built for `forkchoiceUpdated` attributes, by payload id (the last few).
    pub payloads: parking_lot::Mutex<Vec<Arc<crate::engine::PayloadJob>>>,
    /// `evm_snapshot` ids with the head (number, hash) each recorded.
    pub snapshots: parking_lot::Mutex<Vec<(u64, u64, alloy_primitives::B256)>>,
    /// Accounts `eth_sendTransaction` sends for without their keys (`anvil_impersonateAccount`).
    pub impersonated: parking_lot::Mutex<std::collections::HashSet<Address>>,
    /// Whether every account is impersonated (`anvil_autoImpersonateAccount`).
    pub auto_impersonate: std::sync::atomic::AtomicBool,
}

impl RpcContext {
    /// A context over `sequencer` with no signers and the dev namespaces off.
    pub fn new(sequencer: Arc<Sequencer>) -> Self {
        Self {
            sequencer,
            miner: None,
            signers: HashMap::new(),
            accounts: Vec::new(),
            dev: false,
            filters: Default::default(),
            snapshots: Default::default(),
            payloads: Default::default(),
            impersonated: Default::default(),
            auto_impersonate: Default::default(),
            client_version: format!("pseq/v{}/{}-{}", env!("CARGO_PKG_VERSION"), std::env::consts::OS, std::env::consts::ARCH),
        }
    }

    /// Whether `eth_sendTransaction` may send for `address` without its key.
    pub fn is_impersonated(&self, address: &Address) -> bool {
        self.auto_impersonate.load(std::sync::atomic::Ordering::Relaxed) || self.impersonated.lock().contains(address)
    }

    /// Adds signers (the dev accounts).
    pub fn with_signers(mut self, signers: Vec<PrivateKeySigner>) -> Self {
        for signer in signers {
            self.accounts.push(signer.address());
            self.signers.insert(signer.address(), signer);
        }
        self
    }

    /// The number of the block `id` names, `None` meaning latest. Unknown blocks give geth's
    /// `header not found`.
    pub fn resolve(&self, id: Option<BlockId>) -> Result<u64, ErrorObjectOwned> {
        let storage = self.sequencer.storage();
        let head = storage.head().0;
        match id.unwrap_or(BlockId::Number(BlockNumberOrTag::Latest)) {
            BlockId::Number(tag) => match tag {
                BlockNumberOrTag::Latest | BlockNumberOrTag::Pending => Ok(head),
                BlockNumberOrTag::Earliest => Ok(0),
                BlockNumberOrTag::Safe | BlockNumberOrTag::Finalized => {
                    let (safe, finalized) = storage.safe_finalized().map_err(crate::error::internal)?;
                    let chosen = if tag == BlockNumberOrTag::Safe { safe } else { finalized };
                    // Blocks of a single sequencer are final once committed.
                    Ok(chosen.map_or(head, |(n, _)| n))
                }
                BlockNumberOrTag::Number(n) if n <= head => Ok(n),
                BlockNumberOrTag::Number(_) => Err(server("header not found")),
            },
            BlockId::Hash(hash) => {
                let number = storage.block_number(&hash.block_hash).map_err(crate::error::internal)?.ok_or_else(|| server("header for hash not found"))?;
                if hash.require_canonical == Some(true) && storage.canonical_hash(number).map_err(crate::error::internal)? != Some(hash.block_hash) {
                    return Err(invalid_params("hash is not currently canonical"));
                }
                Ok(number)
            }
        }
    }
}
