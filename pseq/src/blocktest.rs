//! `pseq blocktest`: runs EEST `blockchain_test` fixtures.
//!
//! For each test: build the genesis state from `pre`, check the genesis header's hash and state
//! root, then import every block from its RLP: decode, validate the header against its parent
//! (number, parent hash, timestamp, gas limit bounds, EIP-1559 base fee, EIP-4844/7691/7918 blob
//! gas, merge rules, fork-dependent fields, roots of transactions, ommers and withdrawals, the
//! Osaka RLP size limit), recover senders, execute, and check gas used, receipts root, logs bloom,
//! state root, blob gas used and requests hash. A block the fixture marks invalid passes when it
//! is rejected; the chain then continues from its parent. Finally `lastblockhash` and the
//! post-state must match. Not checked: proof-of-work difficulty (fixtures use a fixed minimum
//! difficulty and no real seal) and ommer ancestry beyond depth and duplicates.

use crate::{
    fork::{blob_params, spec_of, BlobScheduleEntry, Network},
    report::{Counts, Progress},
    statetest::skip_reason,
    testfiles::json_files,
};
use alloy_consensus::{proofs, Block, Header, TxEnvelope};
use alloy_eips::{eip1559::BaseFeeParams, eip7840::BlobParams};
use alloy_evm::FromRecoveredTx;
use alloy_primitives::{Address, Bytes, B256, U256, U64};
use alloy_rlp::Decodable;
use pseq_executor::{
    execute_block, logs_bloom, receipts_root,
    revm::{
        bytecode::Bytecode,
        context::{BlockEnv, CfgEnv, TxEnv},
        context_interface::block::BlobExcessGasAndPrice,
        primitives::hardfork::SpecId,
    },
    state::InMemoryAccount,
    BlockInput, BlockOutput, BlockRules, ExecutionOptions, InMemoryState, Ommer, TxReceipt, Withdrawal,
};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// EIP-7934: the largest RLP-encoded block Osaka accepts.
const MAX_RLP_BLOCK_SIZE: usize = 8_388_608;
/// EIP-1559: base fee of the first London block.
const INITIAL_BASE_FEE: u64 = 1_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    network: String,
    genesis_block_header: FixtureHeaderHash,
    #[serde(rename = "genesisRLP")]
    genesis_rlp: Option<Bytes>,
    blocks: Vec<FixtureBlock>,
    pre: BTreeMap<Address, FixtureAccount>,
    post_state: Option<BTreeMap<Address, FixtureAccount>>,
    post_state_hash: Option<B256>,
    lastblockhash: B256,
    config: Option<FixtureConfig>,
}

#[derive(Debug, Deserialize)]
struct FixtureHeaderHash {
    hash: B256,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureBlock {
    rlp: Bytes,
    expect_exception: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FixtureAccount {
    balance: U256,
    nonce: U64,
    code: Bytes,
    storage: BTreeMap<U256, U256>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureConfig {
    chainid: Option<U64>,
    blob_schedule: Option<BTreeMap<String, FixtureBlobEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureBlobEntry {
    target: U64,
    max: U64,
    base_fee_update_fraction: U64,
}

/// Options of a blockchain-test run.
#[derive(Debug, Clone)]
pub struct BlockTestOptions {
    /// How blocks execute.
    pub exec: ExecutionOptions,
    /// Also execute every block sequentially and require identical results.
    pub compare: bool,
}

fn state_from(accounts: &BTreeMap<Address, FixtureAccount>) -> InMemoryState {
    let mut state = InMemoryState::new();
    for (address, account) in accounts {
        let code = (!account.code.is_empty()).then(|| Bytecode::new_raw(account.code.clone()));
        state.insert_account(
            *address,
            InMemoryAccount {
                balance: account.balance,
                nonce: account.nonce.to(),
                code,
                storage: account.storage.iter().map(|(k, v)| (*k, *v)).collect(),
            },
        );
    }
    state
}

/// Runs every blockchain test under `paths`.
pub fn run(paths: &[PathBuf], options: &BlockTestOptions) -> Result<Counts, String> {
    let files = json_files(paths)?;
    let mut counts = Counts::default();
    let mut progress = Progress::new("blocktest", files.len());
    for file in &files {
        run_file(file, options, &mut counts);
        progress.tick(&counts);
    }
    Ok(counts)
}

/// Runs one fixture file; a broken file counts as one failure.
pub fn run_file(path: &Path, options: &BlockTestOptions, counts: &mut Counts) {
    let display = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return counts.fail(format!("{display}: cannot read: {e}")),
    };
    let tests: BTreeMap<String, serde_json::Value> = match serde_json::from_str(&text) {
        Ok(tests) => tests,
        Err(e) => return counts.fail(format!("{display}: not a blockchain test fixture: {e}")),
    };
    if let Some(reason) = skip_reason(path) {
        return counts.skip(reason, tests.len());
    }
    for (name, value) in tests {
        let fixture: Fixture = match serde_json::from_value(value) {
            Ok(fixture) => fixture,
            Err(e) => {
                counts.fail(format!("{display} {name}: malformed test: {e}"));
                continue;
            }
        };
        match run_test(&fixture, options) {
            Ok(()) => counts.pass(),
            Err(e) => counts.fail(format!("{display} {name}: {e}")),
        }
    }
}

/// The head of the chain being imported.
struct Head {
    header: Header,
    hash: B256,
    state: InMemoryState,
}

fn run_test(fixture: &Fixture, options: &BlockTestOptions) -> Result<(), String> {
    let network = Network::parse(&fixture.network)?;
    let chain_id = fixture.config.as_ref().and_then(|c| c.chainid).map(|c| c.to()).unwrap_or(1u64);
    let schedule: BTreeMap<String, BlobScheduleEntry> = fixture
        .config
        .as_ref()
        .and_then(|c| c.blob_schedule.as_ref())
        .map(|s| {
            s.iter()
                .map(|(fork, e)| {
                    (fork.clone(), BlobScheduleEntry { target: e.target.to(), max: e.max.to(), update_fraction: e.base_fee_update_fraction.to() })
                })
                .collect()
        })
        .unwrap_or_default();

    let genesis_rlp = fixture.genesis_rlp.as_ref().ok_or("fixture has no genesisRLP")?;
    let genesis = Block::<TxEnvelope, Header>::decode(&mut genesis_rlp.as_ref()).map_err(|e| format!("genesis RLP: {e}"))?.header;
    let genesis_hash = genesis.hash_slow();
    if genesis_hash != fixture.genesis_block_header.hash {
        return Err(format!("genesis hash {genesis_hash} != fixture {}", fixture.genesis_block_header.hash));
    }
    let mut state = state_from(&fixture.pre);
    let root = state.state_root();
    if root != genesis.state_root {
        return Err(format!("genesis state root {root} != header {}", genesis.state_root));
    }
    state.insert_block_hash(0, genesis_hash);
    let mut head = Head { header: genesis, hash: genesis_hash, state };

    for (index, block) in fixture.blocks.iter().enumerate() {
        let outcome = import_block(&head, &block.rlp, &network, &schedule, chain_id, options);
        match (outcome, &block.expect_exception) {
            (Ok(next), None) => head = next,
            (Ok(_), Some(expected)) => return Err(format!("block {index}: expected rejection ({expected}) but it was accepted")),
            (Err(reason), Some(expected)) => {
                if std::env::var_os("PSEQ_BLOCKTEST_REJECTIONS").is_some() {
                    eprintln!("REJECTION\t{expected}\t{reason}");
                }
            }
            (Err(e), None) => return Err(format!("block {index}: rejected: {e}")),
        }
    }

    if head.hash != fixture.lastblockhash {
        return Err(format!("last block hash {} != fixture {}", head.hash, fixture.lastblockhash));
    }
    let expected_root = match (&fixture.post_state, fixture.post_state_hash) {
        (Some(post), _) => state_from(post).state_root(),
        (None, Some(hash)) => hash,
        (None, None) => return Err("fixture has neither postState nor postStateHash".into()),
    };
    let root = head.state.state_root();
    if root != expected_root {
        return Err(format!("post-state root {root} != expected {expected_root}"));
    }
    Ok(())
}

/// Validates and executes one block on top of `head`; returns the new head.
fn import_block(
    head: &Head,
    rlp: &Bytes,
    network: &Network,
    schedule: &BTreeMap<String, BlobScheduleEntry>,
    chain_id: u64,
    options: &BlockTestOptions,
) -> Result<Head, String> {
    let mut buf = rlp.as_ref();
    let block = Block::<TxEnvelope, Header>::decode(&mut buf).map_err(|e| format!("RLP: {e}"))?;
    if !buf.is_empty() {
        return Err("trailing bytes after the block RLP".into());
    }
    let header = &block.header;
    let number = header.number;
    let fork = network.fork_at(number, header.timestamp).to_string();
    let spec = spec_of(&fork).ok_or_else(|| format!("unknown fork {fork}"))?;
    if spec.is_enabled_in(SpecId::OSAKA) && rlp.len() > MAX_RLP_BLOCK_SIZE {
        return Err(format!("block RLP of {} bytes exceeds the EIP-7934 limit", rlp.len()));
    }
    let params = blob_params(&fork, schedule);
    validate_header(head, header, network, spec, params.as_ref())?;
    validate_body(&block, spec)?;

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

    let mut cfg = CfgEnv::default();
    cfg.chain_id = chain_id;
    cfg.set_spec_and_mainnet_gas_params(spec);
    if let Some(params) = &params {
        cfg.blob_base_fee_update_fraction = Some(params.update_fraction as u64);
        cfg.set_max_blobs_per_tx(params.max_blobs_per_tx);
    }
    let env = BlockEnv {
        number: U256::from(number),
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
    input.dao_fork = network.is_dao_block(number);
    input.ommers = block.body.ommers.iter().map(|o| Ommer { beneficiary: o.beneficiary, number: o.number }).collect();
    input.withdrawals = block.body.withdrawals.as_ref().map(|ws| ws.iter().map(|w| Withdrawal { address: w.address, amount_gwei: w.amount }).collect());
    input.max_blob_gas = params.as_ref().map(|p| p.max_blob_gas_per_block());

    let output = execute_block(&head.state, &input, &txs, &options.exec).map_err(|e| e.to_string())?;
    if options.compare {
        let reference = execute_block(&head.state, &input, &txs, &ExecutionOptions::sequential()).map_err(|e| format!("sequential path: {e}"))?;
        if !reference.same_result(&output) {
            return Err(format!("parallel and sequential results differ ({:?})", output.path));
        }
    }

    let mut state = head.state.clone();
    state.apply_diff(&output.state);
    check_outputs(header, &output, spec, &head.state, &input, &txs, options)?;
    let root = state.state_root();
    if root != header.state_root {
        return Err(format!("state root {root} != header {}", header.state_root));
    }
    let hash = header.hash_slow();
    state.insert_block_hash(number, hash);
    Ok(Head { header: header.clone(), hash, state })
}

fn validate_header(
    head: &Head,
    header: &Header,
    network: &Network,
    spec: SpecId,
    params: Option<&BlobParams>,
) -> Result<(), String> {
    let parent = &head.header;
    if header.parent_hash != head.hash {
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
    if spec.is_enabled_in(SpecId::MERGE) {
        if !header.difficulty.is_zero() || !header.nonce.is_zero() || header.ommers_hash != alloy_consensus::EMPTY_OMMER_ROOT_HASH {
            return Err("post-merge header with difficulty, nonce or ommers".into());
        }
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

fn validate_body(block: &Block<TxEnvelope, Header>, spec: SpecId) -> Result<(), String> {
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
        if ommer.number.saturating_add(1) == header.number && ommer.parent_hash != header.parent_hash {
            return Err(format!("ommer {i} is not a sibling"));
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

fn check_outputs(
    header: &Header,
    output: &BlockOutput,
    spec: SpecId,
    pre: &InMemoryState,
    input: &BlockInput,
    txs: &[TxEnv],
    options: &BlockTestOptions,
) -> Result<(), String> {
    if output.gas_used != header.gas_used {
        return Err(format!("gas used {} != header {}", output.gas_used, header.gas_used));
    }
    if logs_bloom(output.receipts.iter().flat_map(|r| r.logs.iter())) != header.logs_bloom {
        return Err("logs bloom mismatch".into());
    }
    let receipts = if spec.is_enabled_in(SpecId::BYZANTIUM) {
        output.receipts.clone()
    } else {
        receipts_with_post_state(pre, input, txs, &output.receipts, options)?
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
    Ok(())
}

/// Pre-Byzantium receipts carry the state root after each transaction: execute each prefix of
/// the block (without the end-of-block rewards) and take its root.
fn receipts_with_post_state(
    pre: &InMemoryState,
    input: &BlockInput,
    txs: &[TxEnv],
    receipts: &[TxReceipt],
    options: &BlockTestOptions,
) -> Result<Vec<TxReceipt>, String> {
    let mut prefix_input = input.clone();
    prefix_input.rules = BlockRules::PreOnly;
    let mut with_roots = Vec::with_capacity(receipts.len());
    for (i, receipt) in receipts.iter().enumerate() {
        let out = execute_block(pre, &prefix_input, &txs[..=i], &options.exec).map_err(|e| e.to_string())?;
        let mut state = pre.clone();
        state.apply_diff(&out.state);
        let mut receipt = receipt.clone();
        receipt.post_state = Some(state.state_root());
        with_roots.push(receipt);
    }
    Ok(with_roots)
}
