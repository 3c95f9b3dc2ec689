//! Chain specs from geth-format `genesis.json` files: the fork schedule, blob schedule, deposit
//! contract, the genesis allocation and the genesis header built from them.

use crate::{
    fork::{spec_of, BlobScheduleEntry, Network},
    fork_id::ForkPoints,
};
use alloy_consensus::{constants::EMPTY_WITHDRAWALS, Header, EMPTY_OMMER_ROOT_HASH};
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_genesis::Genesis;
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_trie::EMPTY_ROOT_HASH;
use pseq_executor::{revm::primitives::hardfork::SpecId, state::InMemoryAccount, InMemoryState};
use std::collections::BTreeMap;

/// EIP-1559: base fee of the first London block, and of a London genesis without one.
pub const INITIAL_BASE_FEE: u64 = 1_000_000_000;

/// One allocated account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllocAccount {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Runtime code (empty for none).
    pub code: Bytes,
    /// Storage, zero values dropped.
    pub storage: BTreeMap<U256, U256>,
}

/// Everything a node needs to know about its chain.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Fork per block.
    pub network: Network,
    /// Blob parameters per fork name (`Cancun`, `Prague`, `Osaka`, `BPO1`, …).
    pub blob_schedule: BTreeMap<String, BlobScheduleEntry>,
    /// EIP-6110 deposit contract, where the genesis names one.
    pub deposit_contract: Option<Address>,
    /// The genesis allocation.
    pub alloc: Vec<(Address, AllocAccount)>,
    /// Block 0.
    pub genesis_header: Header,
    /// Fork transition points (EIP-2124 fork ids, `eth_config`).
    pub fork_points: ForkPoints,
}

impl ChainSpec {
    /// Parses a geth-format genesis file.
    pub fn from_genesis_json(text: &str) -> Result<Self, String> {
        let genesis: Genesis = serde_json::from_str(text).map_err(|e| format!("not a genesis file: {e}"))?;
        Self::from_genesis(&genesis)
    }

    /// Builds the chain spec of a parsed genesis.
    pub fn from_genesis(genesis: &Genesis) -> Result<Self, String> {
        let network = Network::from_chain_config(&genesis.config)?;
        let blob_schedule = genesis
            .config
            .blob_schedule
            .iter()
            .map(|(name, params)| {
                let fork = match name.as_str() {
                    "cancun" => "Cancun".to_string(),
                    "prague" => "Prague".to_string(),
                    "osaka" => "Osaka".to_string(),
                    other => other.to_uppercase(),
                };
                (fork, BlobScheduleEntry { target: params.target_blob_count, max: params.max_blob_count, update_fraction: params.update_fraction as u64 })
            })
            .collect();
        let alloc: Vec<(Address, AllocAccount)> = genesis
            .alloc
            .iter()
            .map(|(address, account)| {
                let storage = account
                    .storage
                    .iter()
                    .flatten()
                    .map(|(k, v)| (U256::from_be_bytes(k.0), U256::from_be_bytes(v.0)))
                    .filter(|(_, v)| !v.is_zero())
                    .collect();
                let account = AllocAccount {
                    balance: account.balance,
                    nonce: account.nonce.unwrap_or_default(),
                    code: account.code.clone().unwrap_or_default(),
                    storage,
                };
                (*address, account)
            })
            .collect();
        let genesis_header = genesis_header(genesis, &network, &alloc)?;
        Ok(Self {
            chain_id: genesis.config.chain_id,
            network,
            blob_schedule,
            deposit_contract: genesis.config.deposit_contract_address,
            alloc,
            genesis_header,
            fork_points: ForkPoints::from_chain_config(&genesis.config, genesis.timestamp),
        })
    }

    /// The revm spec at a block.
    pub fn spec_at(&self, number: u64, timestamp: u64) -> SpecId {
        spec_of(self.network.fork_at(number, timestamp)).unwrap_or(SpecId::FRONTIER)
    }
}

/// The state root of an allocation, computed from scratch.
pub fn alloc_state_root(alloc: &[(Address, AllocAccount)]) -> B256 {
    let mut state = InMemoryState::new();
    for (address, account) in alloc {
        let code = (!account.code.is_empty()).then(|| pseq_executor::revm::bytecode::Bytecode::new_raw(account.code.clone()));
        state.insert_account(
            *address,
            InMemoryAccount { balance: account.balance, nonce: account.nonce, code, storage: account.storage.iter().map(|(k, v)| (*k, *v)).collect() },
        );
    }
    state.state_root()
}

/// Block 0 as geth builds it from a genesis file: the fork-dependent fields are present when
/// their fork is active at block 0.
fn genesis_header(genesis: &Genesis, network: &Network, alloc: &[(Address, AllocAccount)]) -> Result<Header, String> {
    let spec = spec_of(network.fork_at(0, genesis.timestamp)).ok_or("unknown fork at genesis")?;
    let active = |fork: SpecId| spec.is_enabled_in(fork);
    let base_fee = match genesis.base_fee_per_gas {
        Some(fee) => Some(u64::try_from(fee).map_err(|_| "baseFeePerGas does not fit 64 bits")?),
        None => Some(INITIAL_BASE_FEE),
    };
    Ok(Header {
        parent_hash: genesis.parent_hash.unwrap_or_default(),
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: genesis.coinbase,
        state_root: alloc_state_root(alloc),
        transactions_root: EMPTY_ROOT_HASH,
        receipts_root: EMPTY_ROOT_HASH,
        logs_bloom: Default::default(),
        difficulty: genesis.difficulty,
        number: genesis.number.unwrap_or_default(),
        gas_limit: genesis.gas_limit,
        gas_used: 0,
        timestamp: genesis.timestamp,
        extra_data: genesis.extra_data.clone(),
        mix_hash: genesis.mix_hash,
        nonce: genesis.nonce.into(),
        base_fee_per_gas: if active(SpecId::LONDON) { base_fee } else { None },
        withdrawals_root: active(SpecId::SHANGHAI).then_some(EMPTY_WITHDRAWALS),
        blob_gas_used: active(SpecId::CANCUN).then(|| genesis.blob_gas_used.unwrap_or_default()),
        excess_blob_gas: active(SpecId::CANCUN).then(|| genesis.excess_blob_gas.unwrap_or_default()),
        parent_beacon_block_root: active(SpecId::CANCUN).then_some(B256::ZERO),
        requests_hash: active(SpecId::PRAGUE).then_some(EMPTY_REQUESTS_HASH),
        ..Default::default()
    })
}
