//! [`ChainRules`]: what a chain fixes for every block, and the executor input of a block built
//! from its header. Shared by block import (checking a given header) and block building (a
//! header being made).

use alloy_consensus::Header;
use alloy_primitives::{Address, U256};
use pseq_config::{
    fork::{blob_params, spec_of, BlobScheduleEntry},
    ChainSpec, Network,
};
use pseq_executor::{
    revm::{
        context::{BlockEnv, CfgEnv},
        context_interface::block::BlobExcessGasAndPrice,
        primitives::hardfork::SpecId,
    },
    BlockInput, Ommer, Withdrawal,
};
use std::collections::BTreeMap;

/// What a chain fixes for every block: fork schedule, blob schedule, chain id, deposit contract.
#[derive(Debug, Clone)]
pub struct ChainRules {
    /// Fork per block.
    pub network: Network,
    /// Blob parameters per fork.
    pub blob_schedule: BTreeMap<String, BlobScheduleEntry>,
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// EIP-6110 deposit contract (mainnet's when `None`).
    pub deposit_contract: Option<Address>,
}

impl ChainRules {
    /// The rules of a chain spec.
    pub fn from_spec(spec: &ChainSpec) -> Self {
        Self { network: spec.network.clone(), blob_schedule: spec.blob_schedule.clone(), chain_id: spec.chain_id, deposit_contract: spec.deposit_contract }
    }

    /// The fork name and revm spec of a block.
    pub fn fork(&self, number: u64, timestamp: u64) -> Result<(String, SpecId), String> {
        let fork = self.network.fork_at(number, timestamp).to_string();
        let spec = spec_of(&fork).ok_or_else(|| format!("unknown fork {fork}"))?;
        Ok((fork, spec))
    }

    /// Blob parameters of a fork (`None` before Cancun).
    pub fn blob_params(&self, fork: &str) -> Option<alloy_eips::eip7840::BlobParams> {
        blob_params(fork, &self.blob_schedule)
    }

    /// The executor input of the block `header` describes (its ommers and withdrawals given).
    pub fn block_input(&self, header: &Header, ommers: Vec<Ommer>, withdrawals: Option<Vec<Withdrawal>>) -> Result<BlockInput, String> {
        let (fork, spec) = self.fork(header.number, header.timestamp)?;
        let params = self.blob_params(&fork);
        let mut cfg = CfgEnv::default();
        cfg.chain_id = self.chain_id;
        cfg.set_spec_and_mainnet_gas_params(spec);
        if let Some(params) = &params {
            cfg.blob_base_fee_update_fraction = Some(params.update_fraction as u64);
            cfg.set_max_blobs_per_tx(params.max_blobs_per_tx);
        }
        let env = BlockEnv {
            number: U256::from(header.number),
            beneficiary: header.beneficiary,
            timestamp: U256::from(header.timestamp),
            gas_limit: header.gas_limit,
            basefee: header.base_fee_per_gas.unwrap_or_default(),
            difficulty: header.difficulty,
            prevrandao: spec.is_enabled_in(SpecId::MERGE).then_some(header.mix_hash),
            blob_excess_gas_and_price: match (header.excess_blob_gas, &params) {
                (Some(excess), Some(params)) => Some(BlobExcessGasAndPrice::new(excess, params.update_fraction as u64)),
                _ => None,
            },
            ..Default::default()
        };
        let mut input = BlockInput::new(cfg, env);
        input.parent_hash = header.parent_hash;
        input.parent_beacon_block_root = header.parent_beacon_block_root;
        input.dao_fork = self.network.is_dao_block(header.number);
        input.ommers = ommers;
        input.withdrawals = withdrawals;
        input.max_blob_gas = params.as_ref().map(|p| p.max_blob_gas_per_block());
        if let Some(address) = self.deposit_contract {
            input.deposit_contract = address;
        }
        Ok(input)
    }
}
