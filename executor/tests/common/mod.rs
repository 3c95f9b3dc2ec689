//! Helpers shared by the executor's integration tests that use the corpus's token contracts.

use alloy_primitives::{Address, Bytes};

/// The runtime code of `../shared/corpora/contracts/{name}.hex`; panics when the corpora are not
/// beside the project (a missing corpus must fail, not skip).
pub fn corpus_code(name: &str) -> Bytes {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../shared/corpora/contracts/{name}.hex"));
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
