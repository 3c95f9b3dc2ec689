//! EIP-2124 fork identifiers and the per-fork view EIP-7910's `eth_config` reports: which
//! blocks and timestamps a chain forks at (as geth gathers them: every `*Block` and `*Time` of
//! the genesis `config`, zero and genesis-time entries dropped, duplicates merged) and the CRC32
//! fork hash up to a given fork.

use alloy_eips::eip2124::ForkHash;
use alloy_primitives::B256;

/// Fork transition points of a chain, for fork hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForkPoints {
    /// Block numbers at which forks activate, ascending, without zero or duplicates.
    pub blocks: Vec<u64>,
    /// Timestamps at which forks activate, ascending, after the genesis time, without duplicates.
    pub times: Vec<u64>,
}

impl ForkPoints {
    /// The transition points of a geth-format chain config whose genesis has `genesis_time`.
    pub fn from_chain_config(config: &alloy_genesis::ChainConfig, genesis_time: u64) -> Self {
        let dao = config.dao_fork_support.then_some(config.dao_fork_block).flatten();
        let mut blocks: Vec<u64> = [
            config.homestead_block,
            dao,
            config.eip150_block,
            config.eip155_block,
            config.eip158_block,
            config.byzantium_block,
            config.constantinople_block,
            config.petersburg_block,
            config.istanbul_block,
            config.muir_glacier_block,
            config.berlin_block,
            config.london_block,
            config.arrow_glacier_block,
            config.gray_glacier_block,
            config.merge_netsplit_block,
        ]
        .into_iter()
        .flatten()
        .filter(|&n| n > 0)
        .collect();
        blocks.sort_unstable();
        blocks.dedup();
        let mut times: Vec<u64> = [
            config.shanghai_time,
            config.cancun_time,
            config.prague_time,
            config.osaka_time,
            config.bpo1_time,
            config.bpo2_time,
            config.bpo3_time,
            config.bpo4_time,
            config.bpo5_time,
        ]
        .into_iter()
        .flatten()
        .filter(|&t| t > genesis_time)
        .collect();
        times.sort_unstable();
        times.dedup();
        Self { blocks, times }
    }

    /// The fork hash of a node at block `number` and time `timestamp`: the CRC32 of the genesis
    /// hash extended by every transition point already passed.
    pub fn fork_hash(&self, genesis_hash: B256, number: u64, timestamp: u64) -> [u8; 4] {
        let mut hash = ForkHash::from(genesis_hash);
        for &block in self.blocks.iter().filter(|&&b| b <= number) {
            hash += block;
        }
        for &time in self.times.iter().filter(|&&t| t <= timestamp) {
            hash += time;
        }
        hash.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::b256;

    /// Mainnet's published fork ids (EIP-2124's table and geth's `forkid_test.go`).
    #[test]
    fn mainnet_fork_hashes() {
        let genesis = b256!("d4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0db1cb8fa3");
        let points = ForkPoints {
            blocks: vec![1_150_000, 1_920_000, 2_463_000, 2_675_000, 4_370_000, 7_280_000, 9_069_000, 9_200_000, 12_244_000, 12_965_000, 13_773_000, 15_050_000],
            times: vec![1_681_338_455, 1_710_338_135, 1_746_612_311],
        };
        assert_eq!(points.fork_hash(genesis, 0, 0), [0xfc, 0x64, 0xec, 0x04]);
        assert_eq!(points.fork_hash(genesis, 1_150_000, 0), [0x97, 0xc2, 0xc3, 0x4c]);
        assert_eq!(points.fork_hash(genesis, 15_050_000, 0), [0xf0, 0xaf, 0xd0, 0xe3]);
        assert_eq!(points.fork_hash(genesis, 20_000_000, 1_681_338_455), [0xdc, 0xe9, 0x6c, 0x2d]);
        assert_eq!(points.fork_hash(genesis, 20_000_000, 1_710_338_135), [0x9f, 0x3d, 0x22, 0x54]);
    }

    #[test]
    fn zero_and_genesis_time_points_are_dropped() {
        let config = alloy_genesis::ChainConfig { homestead_block: Some(0), eip150_block: Some(3), eip155_block: Some(3), shanghai_time: Some(10), cancun_time: Some(20), ..Default::default() };
        let points = ForkPoints::from_chain_config(&config, 10);
        assert_eq!(points, ForkPoints { blocks: vec![3], times: vec![20] });
    }
}
