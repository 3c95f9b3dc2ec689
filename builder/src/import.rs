//! Importing one block: decode its RLP, validate the header against its parent (number, parent
//! hash, timestamp, gas limit bounds, EIP-1559 base fee, EIP-4844/7691/7918 blob gas, merge
//! rules, fork-dependent fields, roots of transactions, ommers and withdrawals, the Osaka RLP
//! size limit), recover senders, execute, and check gas used, receipts root, logs bloom, blob gas
//! used and requests hash. The state root is the caller's to check, because it depends on where
//! the state lives (in memory for fixtures, RocksDB for the node and `pseq import`).
//!
//! Not checked: proof-of-work difficulty and seal (test chains use fake proof of work) and
//! ommer ancestry beyond depth and duplicates.

use pseq_config::fork::{blob_params, spec_of, Network};
use alloy_consensus::{proofs, Block, Header, TxEnvelope};
use alloy_eips::{eip1559::BaseFeeParams, eip7840::BlobParams};
use alloy_evm::FromRecoveredTx;
use alloy_primitives::B256;
use alloy_rlp::Decodable;
use pseq_executor::{
    execute_block, logs_bloom, receipts_root,
    revm::{
        context::TxEnv,
        primitives::hardfork::SpecId,
    },
    BlockInput, BlockOutput, BlockRules, ExecutionOptions, Ommer, StateDiff, StateSource, TxReceipt, Withdrawal,
};

/// EIP-7934: the largest RLP-encoded block Osaka accepts.
const MAX_RLP_BLOCK_SIZE: usize = 8_388_608;
/// EIP-1559: base fee of the first London block.
const INITIAL_BASE_FEE: u64 = 1_000_000_000;

/// The state root after applying a diff to the pre-state (for pre-Byzantium receipts, which
/// carry the root after each transaction).
pub type RootAfter<'a> = &'a dyn Fn(&StateDiff) -> Result<B256, String>;

pub use crate::chain_rules::ChainRules;

/// A block that passed every check but the state root.
#[derive(Debug)]
pub struct ExecutedBlock {
    /// The decoded block.
    pub block: Block<TxEnvelope>,
    /// Its hash.
    pub hash: B256,
    /// What execution produced.
    pub output: BlockOutput,
    /// Receipts as hashed into the receipts root (with post-state roots before Byzantium).
    pub receipts: Vec<TxReceipt>,
}

/// Splits a file of concatenated RLP blocks (geth's `export` format) into the blocks' encodings.
pub fn split_rlp_blocks(mut data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut blocks = Vec::new();
    while !data.is_empty() {
        let mut probe = data;
        let header = alloy_rlp::Header::decode(&mut probe).map_err(|e| format!("block {}: bad RLP header: {e}", blocks.len()))?;
        if !header.list {
            return Err(format!("block {}: RLP item is not a list", blocks.len()));
        }
        let total = (data.len() - probe.len()).checked_add(header.payload_length).filter(|t| *t <= data.len());
        let Some(total) = total else {
            return Err(format!("block {}: truncated (RLP says {} more bytes, {} left)", blocks.len(), header.payload_length, probe.len()));
        };
        blocks.push(&data[..total]);
        data = &data[total..];
    }
    Ok(blocks)
}

/// Decodes one block's RLP (nothing may follow it).
pub fn decode_block(rlp: &[u8]) -> Result<Block<TxEnvelope>, String> {
    let mut buf = rlp;
    let block = Block::<TxEnvelope, Header>::decode(&mut buf).map_err(|e| format!("RLP: {e}"))?;
    if !buf.is_empty() {
        return Err("trailing bytes after the block RLP".into());
    }
    Ok(block)
}

/// Decodes, validates and executes one block on top of `parent` (whose post-state is `state`).
#[allow(clippy::too_many_arguments)]
pub fn execute_rlp_block<S: StateSource>(
    parent: &Header,
    parent_hash: B256,
    state: &S,
    rlp: &[u8],
    chain: &ChainRules,
    options: &ExecutionOptions,
    compare: bool,
    root_after: RootAfter<'_>,
) -> Result<ExecutedBlock, String> {
    let block = decode_block(rlp)?;
    execute_decoded_block(parent, parent_hash, state, block, rlp.len(), chain, options, compare, root_after)
}

/// Why a block was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The block is invalid (the reason).
    Invalid(String),
    /// Reading or writing the datadir failed.
    Storage(String),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(reason) | Self::Storage(reason) => f.write_str(reason),
        }
    }
}

/// Validates, executes and commits one block on top of the storage head: the header's state
/// root must equal the one the incremental trie computes. Shared by `pseq import`, blockchain
/// tests through RocksDB and the Engine API's `newPayload`.
pub fn import_into_storage(
    storage: &pseq_storage::Storage,
    block: Block<TxEnvelope>,
    encoded_len: usize,
    chain: &ChainRules,
    options: &ExecutionOptions,
    compare: bool,
) -> Result<(ExecutedBlock, pseq_storage::Committed), ImportError> {
    let io = |e: pseq_storage::StorageError| ImportError::Storage(e.to_string());
    let (_, parent_hash) = storage.head();
    let parent = storage.header(&parent_hash).map_err(io)?.ok_or_else(|| ImportError::Storage("head header missing".into()))?;
    let root_after = |diff: &StateDiff| storage.prepare_state(diff).map(|u| u.state_root).map_err(|e| e.to_string());
    let executed = execute_decoded_block(&parent, parent_hash, &storage.latest(), block, encoded_len, chain, options, compare, &root_after)
        .map_err(ImportError::Invalid)?;
    let update = storage.prepare_state(&executed.output.state).map_err(io)?;
    if update.state_root != executed.block.header.state_root {
        return Err(ImportError::Invalid(format!("state root {} != header {}", update.state_root, executed.block.header.state_root)));
    }
    let committed = storage.commit_block(&executed.block, &executed.receipts, update).map_err(io)?;
    Ok((executed, committed))
}

/// Validates and executes a decoded block (`encoded_len`: its RLP size, for the EIP-7934 limit).
#[allow(clippy::too_many_arguments)]
pub fn execute_decoded_block<S: StateSource>(
    parent: &Header,
    parent_hash: B256,
    state: &S,
    block: Block<TxEnvelope>,
    encoded_len: usize,
    chain: &ChainRules,
    options: &ExecutionOptions,
    compare: bool,
    root_after: RootAfter<'_>,
) -> Result<ExecutedBlock, String> {
    let header = &block.header;
    let number = header.number;
    let network = &chain.network;
    let fork = network.fork_at(number, header.timestamp).to_string();
    let spec = spec_of(&fork).ok_or_else(|| format!("unknown fork {fork}"))?;
    if spec.is_enabled_in(SpecId::OSAKA) && encoded_len > MAX_RLP_BLOCK_SIZE {
        return Err(format!("block RLP of {encoded_len} bytes exceeds the EIP-7934 limit"));
    }
    let params = blob_params(&fork, &chain.blob_schedule);
    validate_header(parent, parent_hash, header, network, spec, params.as_ref())?;
    validate_body(&block, parent, spec)?;

    let (input, txs) = prepare_block(&block, chain)?;
    let output = execute_block(state, &input, &txs, options).map_err(|e| e.to_string())?;
    if compare {
        let reference = execute_block(state, &input, &txs, &ExecutionOptions::sequential()).map_err(|e| format!("sequential path: {e}"))?;
        if !reference.same_result(&output) {
            return Err(format!("parallel and sequential results differ ({:?})", output.path));
        }
    }
    let receipts = check_outputs(header, &output, spec, state, &input, &txs, options, root_after)?;
    let hash = header.hash_slow();
    Ok(ExecutedBlock { block, hash, output, receipts })
}

/// What executing a decoded block needs: its environment and rules, and its transactions with
/// their senders recovered (no header or body check: see [`execute_decoded_block`]).
pub fn prepare_block(block: &Block<TxEnvelope>, chain: &ChainRules) -> Result<(BlockInput, Vec<TxEnv>), String> {
    let mut txs = Vec::with_capacity(block.body.transactions.len());
    for (i, tx) in block.body.transactions.iter().enumerate() {
        if let TxEnvelope::Eip4844(signed) = tx {
            if matches!(signed.tx(), alloy_consensus::TxEip4844Variant::TxEip4844WithSidecar(_)) {
                return Err(format!("transaction {i}: blob transaction with its sidecar inside a block"));
            }
        }
        let signer = alloy_consensus::transaction::SignerRecoverable::recover_signer(tx).map_err(|e| format!("transaction {i}: invalid signature: {e}"))?;
        txs.push(TxEnv::from_recovered_tx(tx, signer));
    }
    let ommers = block.body.ommers.iter().map(|o| Ommer { beneficiary: o.beneficiary, number: o.number }).collect();
    let withdrawals = block.body.withdrawals.as_ref().map(|ws| ws.iter().map(|w| Withdrawal { address: w.address, amount_gwei: w.amount }).collect());
    let input = chain.block_input(&block.header, ommers, withdrawals)?;
    Ok((input, txs))
}

fn validate_header(
    parent: &Header,
    parent_hash: B256,
    header: &Header,
    network: &Network,
    spec: SpecId,
    params: Option<&BlobParams>,
) -> Result<(), String> {
    if header.parent_hash != parent_hash {
        return Err("parent hash mismatch".into());
    }
    if Some(header.number) != parent.number.checked_add(1) {
        return Err(format!("number {} does not follow parent {}", header.number, parent.number));
    }
    if header.timestamp <= parent.timestamp {
        return Err("timestamp not after parent".into());
    }
    if header.extra_data.len() > 32 {
        return Err("extra data longer than 32 bytes".into());
    }
    if header.gas_used > header.gas_limit {
        return Err("gas used above gas limit".into());
    }
    let parent_gas_limit =
        if network.is_london_activation(header.number) { parent.gas_limit.saturating_mul(BaseFeeParams::ethereum().elasticity_multiplier as u64) } else { parent.gas_limit };
    let diff = header.gas_limit.abs_diff(parent_gas_limit);
    if diff >= parent_gas_limit / 1024 || header.gas_limit < 5000 {
        return Err(format!("gas limit {} outside the bounds of parent {}", header.gas_limit, parent_gas_limit));
    }
    let present = |field: bool, active: bool, name: &str| -> Result<(), String> {
        match (field, active) {
            (true, false) => Err(format!("{name} present before its fork")),
            (false, true) => Err(format!("{name} missing")),
            _ => Ok(()),
        }
    };
    present(header.base_fee_per_gas.is_some(), spec.is_enabled_in(SpecId::LONDON), "base fee")?;
    present(header.withdrawals_root.is_some(), spec.is_enabled_in(SpecId::SHANGHAI), "withdrawals root")?;
    present(header.blob_gas_used.is_some(), spec.is_enabled_in(SpecId::CANCUN), "blob gas used")?;
    present(header.excess_blob_gas.is_some(), spec.is_enabled_in(SpecId::CANCUN), "excess blob gas")?;
    present(header.parent_beacon_block_root.is_some(), spec.is_enabled_in(SpecId::CANCUN), "parent beacon block root")?;
    present(header.requests_hash.is_some(), spec.is_enabled_in(SpecId::PRAGUE), "requests hash")?;
    if let Some(base_fee) = header.base_fee_per_gas {
        let expected = if network.is_london_activation(header.number) || parent.base_fee_per_gas.is_none() {
            INITIAL_BASE_FEE
        } else {
            parent.next_block_base_fee(BaseFeeParams::ethereum()).unwrap_or_default()
        };
        if base_fee != expected {
            return Err(format!("base fee {base_fee} != expected {expected}"));
        }
    }
    if spec.is_enabled_in(SpecId::MERGE)
        && (!header.difficulty.is_zero() || !header.nonce.is_zero() || header.ommers_hash != alloy_consensus::EMPTY_OMMER_ROOT_HASH)
    {
        return Err("post-merge header with difficulty, nonce or ommers".into());
    }
    if let (Some(params), Some(excess)) = (params, header.excess_blob_gas) {
        // The child's fork sets every parameter, the EIP-7918 reserve price included (it is
        // zero before Osaka).
        let expected = params.next_block_excess_blob_gas_osaka(
            parent.excess_blob_gas.unwrap_or_default(),
            parent.blob_gas_used.unwrap_or_default(),
            parent.base_fee_per_gas.unwrap_or_default(),
        );
        if excess != expected {
            return Err(format!("excess blob gas {excess} != expected {expected}"));
        }
        let used = header.blob_gas_used.unwrap_or_default();
        if used > params.max_blob_gas_per_block() || !used.is_multiple_of(alloy_eips::eip4844::DATA_GAS_PER_BLOB) {
            return Err(format!("blob gas used {used} invalid"));
        }
    }
    Ok(())
}

fn validate_body(block: &Block<TxEnvelope, Header>, parent: &Header, spec: SpecId) -> Result<(), String> {
    let header = &block.header;
    let tx_root = proofs::calculate_transaction_root(&block.body.transactions);
    if tx_root != header.transactions_root {
        return Err("transactions root mismatch".into());
    }
    if proofs::calculate_ommers_root(&block.body.ommers) != header.ommers_hash {
        return Err("ommers hash mismatch".into());
    }
    if spec.is_enabled_in(SpecId::MERGE) && !block.body.ommers.is_empty() {
        return Err("ommers after the merge".into());
    }
    if block.body.ommers.len() > 2 {
        return Err("more than two ommers".into());
    }
    for (i, ommer) in block.body.ommers.iter().enumerate() {
        if ommer.number >= header.number || ommer.number.saturating_add(7) <= header.number {
            return Err(format!("ommer {i} at an invalid depth"));
        }
        // An ommer one block below this one is a sibling of the parent: same grandparent, not
        // the parent itself. (Deeper ancestry needs headers this check does not have.)
        if ommer.number.saturating_add(1) == header.number && (ommer.parent_hash != parent.parent_hash || ommer.hash_slow() == header.parent_hash) {
            return Err(format!("ommer {i} is not a sibling of the parent"));
        }
        if block.body.ommers[..i].iter().any(|o| o.hash_slow() == ommer.hash_slow()) {
            return Err(format!("ommer {i} duplicated"));
        }
    }
    match (&block.body.withdrawals, header.withdrawals_root) {
        (Some(withdrawals), Some(root)) => {
            if proofs::calculate_withdrawals_root(withdrawals) != root {
                return Err("withdrawals root mismatch".into());
            }
        }
        (None, None) => {}
        _ => return Err("withdrawals and withdrawals root disagree".into()),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_outputs<S: StateSource>(
    header: &Header,
    output: &BlockOutput,
    spec: SpecId,
    pre: &S,
    input: &BlockInput,
    txs: &[TxEnv],
    options: &ExecutionOptions,
    root_after: RootAfter<'_>,
) -> Result<Vec<TxReceipt>, String> {
    if output.gas_used != header.gas_used {
        return Err(format!("gas used {} != header {}", output.gas_used, header.gas_used));
    }
    if logs_bloom(output.receipts.iter().flat_map(|r| r.logs.iter())) != header.logs_bloom {
        return Err("logs bloom mismatch".into());
    }
    let receipts = if spec.is_enabled_in(SpecId::BYZANTIUM) {
        output.receipts.clone()
    } else {
        receipts_with_post_state(pre, input, txs, &output.receipts, options, root_after)?
    };
    let root = receipts_root(&receipts);
    if root != header.receipts_root {
        return Err(format!("receipts root {root} != header {}", header.receipts_root));
    }
    if let Some(used) = header.blob_gas_used {
        if used != output.blob_gas_used {
            return Err(format!("blob gas used {} != header {used}", output.blob_gas_used));
        }
    }
    if let Some(expected) = header.requests_hash {
        let hash = output.requests.as_ref().map(|r| r.requests_hash()).unwrap_or_default();
        if hash != expected {
            return Err(format!("requests hash {hash} != header {expected}"));
        }
    }
    Ok(receipts)
}

/// Pre-Byzantium receipts carry the state root after each transaction: execute each prefix of
/// the block (without the end-of-block rewards) and take its root.
fn receipts_with_post_state<S: StateSource>(
    pre: &S,
    input: &BlockInput,
    txs: &[TxEnv],
    receipts: &[TxReceipt],
    options: &ExecutionOptions,
    root_after: RootAfter<'_>,
) -> Result<Vec<TxReceipt>, String> {
    let mut prefix_input = input.clone();
    prefix_input.rules = BlockRules::PreOnly;
    let mut with_roots = Vec::with_capacity(receipts.len());
    for (i, receipt) in receipts.iter().enumerate() {
        let out = execute_block(pre, &prefix_input, &txs[..=i], options).map_err(|e| e.to_string())?;
        let mut receipt = receipt.clone();
        receipt.post_state = Some(root_after(&out.state)?);
        with_roots.push(receipt);
    }
    Ok(with_roots)
}
