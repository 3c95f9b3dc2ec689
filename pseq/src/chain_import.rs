//! `pseq import` and `pseq db verify`: a chain file imported into a RocksDB datadir, every block
//! validated (header, receipts, state root) before it is committed; a datadir's state root
//! recomputed from scratch.

use crate::import::{decode_block, import_into_storage, split_rlp_blocks, ChainRules};
use pseq_config::ChainSpec;
use pseq_executor::ExecutionOptions;
use pseq_storage::{GenesisAccount, Storage, StorageOptions, VerifyReport};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Result of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportSummary {
    /// Blocks committed.
    pub imported: u64,
    /// Blocks already in the datadir (same hash at the same height), skipped.
    pub already_present: u64,
    /// Head after the import.
    pub head: u64,
}

/// Opens (or initialises from `genesis`) the datadir.
pub fn open_datadir(datadir: &Path, spec: &ChainSpec) -> Result<Storage, String> {
    std::fs::create_dir_all(datadir).map_err(|e| format!("cannot create datadir {}: {e}", datadir.display()))?;
    let alloc: Vec<(alloy_primitives::Address, GenesisAccount)> = spec
        .alloc
        .iter()
        .map(|(address, a)| (*address, GenesisAccount { balance: a.balance, nonce: a.nonce, code: a.code.clone(), storage: a.storage.clone() }))
        .collect();
    Storage::open_or_init(datadir, &StorageOptions::default(), spec.chain_id, &spec.genesis_header, &alloc)
        .map_err(|e| format!("datadir {}: {e}", datadir.display()))
}

/// Reads a genesis file.
pub fn read_genesis(path: &Path) -> Result<ChainSpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    ChainSpec::from_genesis_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Imports every block of `chain_file` (concatenated RLP blocks) into the datadir. Blocks the
/// datadir already has are skipped; the first invalid block stops the import with an error
/// naming it, everything before it stays committed.
pub fn import(datadir: &Path, genesis: &Path, chain_file: &Path, exec: &ExecutionOptions) -> Result<ImportSummary, String> {
    let spec = read_genesis(genesis)?;
    let storage = open_datadir(datadir, &spec)?;
    let data = std::fs::read(chain_file).map_err(|e| format!("cannot read {}: {e}", chain_file.display()))?;
    let blocks = split_rlp_blocks(&data).map_err(|e| format!("{}: {e}", chain_file.display()))?;
    let rules = ChainRules::from_spec(&spec);
    let mut summary = ImportSummary::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    for (index, rlp) in blocks.iter().enumerate() {
        let (head, _) = storage.head();
        let number = peek_number(rlp).map_err(|e| format!("block {index} of the file: {e}"))?;
        if number <= head {
            let ours = storage.canonical_hash(number).map_err(|e| e.to_string())?;
            let theirs = alloy_primitives::keccak256(header_rlp(rlp).map_err(|e| format!("block {index}: {e}"))?);
            if ours == Some(theirs) {
                summary.already_present += 1;
                continue;
            }
            return Err(format!("block {number} differs from the datadir's; unwind first (the datadir's head is {head})"));
        }
        let block = decode_block(rlp).map_err(|e| format!("block {number}: {e}"))?;
        import_into_storage(&storage, block, rlp.len(), &rules, exec, false).map_err(|e| format!("block {number}: {e}"))?;
        summary.imported += 1;
        if last_report.elapsed() > Duration::from_secs(2) {
            tracing::info!(block = number, imported = summary.imported, total = blocks.len(), "importing");
            last_report = Instant::now();
        }
    }
    summary.head = storage.head().0;
    tracing::info!(imported = summary.imported, skipped = summary.already_present, head = summary.head, elapsed_ms = started.elapsed().as_millis() as u64, "import done");
    Ok(summary)
}

/// The header's RLP inside a block's RLP.
fn header_rlp(block: &[u8]) -> Result<&[u8], String> {
    let mut rest = block;
    alloy_rlp::Header::decode(&mut rest).map_err(|e| e.to_string())?;
    let start = block.len() - rest.len();
    let mut probe = rest;
    let header = alloy_rlp::Header::decode(&mut probe).map_err(|e| e.to_string())?;
    let len = (rest.len() - probe.len()).checked_add(header.payload_length).filter(|l| *l <= rest.len()).ok_or("truncated header")?;
    Ok(&block[start..start + len])
}

/// The number of a block, from its header, without decoding the body.
fn peek_number(block: &[u8]) -> Result<u64, String> {
    let header = <alloy_consensus::Header as alloy_rlp::Decodable>::decode(&mut header_rlp(block)?).map_err(|e| format!("header RLP: {e}"))?;
    Ok(header.number)
}

/// Recomputes a datadir's state root from scratch.
pub fn verify(datadir: &Path) -> Result<VerifyReport, String> {
    let storage = Storage::open(datadir, &StorageOptions::default()).map_err(|e| format!("datadir {}: {e}", datadir.display()))?;
    storage.verify(&mut |n| tracing::info!(accounts = n, "verifying")).map_err(|e| e.to_string())
}
