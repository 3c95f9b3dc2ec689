//! Helpers shared by the executor's integration tests: test addresses, a Cancun block
//! environment, and the corpus's token contracts. (Each test file uses some of them.)
#![allow(dead_code)]

use alloy_primitives::{Address, Bytes, U256};
use pseq_executor::{
    revm::{
        context::{BlockEnv, CfgEnv},
        primitives::hardfork::SpecId,
    },
    BlockInput,
};

/// A test address: `kind` in the first byte (what the account is for), `n` in the last eight.
pub fn addr(kind: u8, n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = kind;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

/// Block 1 of chain 1 under Cancun, paying fees to `addr(0xbe, 0)`, with a 1-gigagas limit.
pub fn cancun_block_input() -> BlockInput {
    let mut cfg = CfgEnv::default();
    cfg.chain_id = 1;
    cfg.set_spec_and_mainnet_gas_params(SpecId::CANCUN);
    let env = BlockEnv { number: U256::from(1), beneficiary: addr(0xbe, 0), gas_limit: 1_000_000_000, prevrandao: Some(Default::default()), ..Default::default() };
    BlockInput::new(cfg, env)
}

/// The runtime code of `../shared/corpora/contracts/{name}.hex`; panics when the corpora are not
/// beside the project (a missing corpus must fail, not skip).
pub fn corpus_code(name: &str) -> Bytes {
    // The crate's folder as cargo names it now (a shared build folder may hold a test binary
    // compiled in another checkout).
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let path = std::path::Path::new(&crate_dir).join(format!("../../shared/corpora/contracts/{name}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (the corpora must sit beside the project)", path.display()));
    Bytes::from(alloy_primitives::hex::decode(text.trim().trim_start_matches("0x")).unwrap_or_else(|e| panic!("{name}.hex: {e}")))
}

/// Calldata of ERC-20 `balanceOf(holder)`.
pub fn balance_of_calldata(holder: Address) -> Bytes {
    let mut data = vec![0x70, 0xa0, 0x82, 0x31];
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(holder.as_slice());
    Bytes::from(data)
}
