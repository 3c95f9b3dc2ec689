//! The built-in development chain (`pseq node --dev`), with the defaults of the tools users
//! know (anvil, hardhat): chain id 31337, twenty accounts of the mnemonic
//! `test test … junk` holding 10,000 ETH each, a 30M gas limit, a 1 gwei base fee, every fork up
//! to Osaka active from genesis, and the system contracts of EIP-4788, EIP-2935, EIP-7002 and
//! EIP-7251 deployed.

use crate::genesis::ChainSpec;
use alloy_eips::{eip2935, eip4788, eip7002, eip7251};
use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::{coins_bip39::English, MnemonicBuilder, PrivateKeySigner};
use serde_json::{json, Map, Value};

/// Chain id of the dev chain (anvil's and hardhat's).
pub const DEV_CHAIN_ID: u64 = 31337;
/// The well-known development mnemonic.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";
/// Dev accounts derived from [`DEV_MNEMONIC`].
pub const DEV_ACCOUNTS: u32 = 20;
/// Balance of each dev account: 10,000 ETH.
pub const DEV_BALANCE_WEI: u128 = 10_000 * 1_000_000_000_000_000_000;
/// Default block gas limit of the dev chain.
pub const DEV_GAS_LIMIT: u64 = 30_000_000;
/// Base fee of the dev genesis: 1 gwei.
pub const DEV_BASE_FEE: u64 = 1_000_000_000;

/// The signer of dev account `index` (path `m/44'/60'/0'/0/index`).
pub fn dev_signer(index: u32) -> Result<PrivateKeySigner, String> {
    MnemonicBuilder::<English>::default()
        .phrase(DEV_MNEMONIC)
        .index(index)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())
}

/// The signers of the twenty dev accounts, in derivation order.
pub fn dev_signers() -> Result<Vec<PrivateKeySigner>, String> {
    (0..DEV_ACCOUNTS).map(dev_signer).collect()
}

/// The dev chain's `genesis.json`, as geth would read it. `gas_limit` is the genesis block's gas
/// limit (and so the chain's, blocks keep their parent's).
pub fn dev_genesis_json(chain_id: u64, gas_limit: u64) -> Result<Value, String> {
    let mut alloc = Map::new();
    for signer in dev_signers()? {
        alloc.insert(format!("{:#x}", signer.address()), json!({ "balance": format!("{:#x}", U256::from(DEV_BALANCE_WEI)) }));
    }
    let system: [(Address, &[u8]); 4] = [
        (eip4788::BEACON_ROOTS_ADDRESS, &eip4788::BEACON_ROOTS_CODE),
        (eip2935::HISTORY_STORAGE_ADDRESS, &eip2935::HISTORY_STORAGE_CODE),
        (eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS, &eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_CODE),
        (eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS, &eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_CODE),
    ];
    for (address, code) in system {
        alloc.insert(format!("{address:#x}"), json!({ "balance": "0x0", "nonce": "0x1", "code": format!("0x{}", hex_encode(code)) }));
    }
    Ok(json!({
        "config": {
            "chainId": chain_id,
            "homesteadBlock": 0, "eip150Block": 0, "eip155Block": 0, "eip158Block": 0,
            "byzantiumBlock": 0, "constantinopleBlock": 0, "petersburgBlock": 0, "istanbulBlock": 0,
            "berlinBlock": 0, "londonBlock": 0,
            "terminalTotalDifficulty": 0, "terminalTotalDifficultyPassed": true,
            "shanghaiTime": 0, "cancunTime": 0, "pragueTime": 0, "osakaTime": 0,
            "depositContractAddress": "0x00000000219ab540356cbb839cbe05303d7705fa",
            "blobSchedule": {
                "cancun": { "target": 3, "max": 6, "baseFeeUpdateFraction": 3338477 },
                "prague": { "target": 6, "max": 9, "baseFeeUpdateFraction": 5007716 },
                "osaka": { "target": 6, "max": 9, "baseFeeUpdateFraction": 5007716 }
            }
        },
        "nonce": "0x0",
        "timestamp": "0x0",
        "extraData": "0x",
        "gasLimit": format!("{gas_limit:#x}"),
        "difficulty": "0x0",
        "mixHash": format!("{:#x}", B256::ZERO),
        "coinbase": format!("{:#x}", Address::ZERO),
        "baseFeePerGas": format!("{DEV_BASE_FEE:#x}"),
        "alloc": alloc,
    }))
}

/// The dev chain spec.
pub fn dev_chain_spec(chain_id: u64, gas_limit: u64) -> Result<ChainSpec, String> {
    let genesis = dev_genesis_json(chain_id, gas_limit)?;
    ChainSpec::from_genesis_json(&genesis.to_string())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_dev_accounts_are_the_well_known_ones() {
        // Addresses every anvil / hardhat user has seen (independent of this code).
        let signers = dev_signers().unwrap();
        assert_eq!(signers.len(), 20);
        assert_eq!(format!("{:?}", signers[0].address()), "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266");
        assert_eq!(format!("{:?}", signers[1].address()), "0x70997970c51812dc3a010c7d01b50e0d17dc79c8");
        assert_eq!(format!("{:?}", signers[19].address()), "0x8626f6940e2eb28930efb4cef49b2d1f2c9c1199");
    }

    #[test]
    fn dev_chain_is_osaka_from_genesis() {
        let spec = dev_chain_spec(DEV_CHAIN_ID, DEV_GAS_LIMIT).unwrap();
        assert_eq!(spec.chain_id, 31337);
        assert_eq!(spec.network.fork_at(0, 0), "Osaka");
        assert_eq!(spec.genesis_header.base_fee_per_gas, Some(DEV_BASE_FEE));
        assert_eq!(spec.genesis_header.gas_limit, DEV_GAS_LIMIT);
        assert_eq!(spec.alloc.len(), 24);
        assert!(spec.genesis_header.requests_hash.is_some());
    }
}
