//! `pseq blocktest`: runs EEST `blockchain_test` fixtures.
//!
//! For each test: build the genesis state from `pre`, check the genesis header's hash and state
//! root, then import every block from its RLP through [`crate::import`] (every header field and
//! root checked) and check its state root. A block the fixture marks invalid passes when it is
//! rejected; the chain then continues from its parent. Finally `lastblockhash` and the
//! post-state must match.
//!
//! The state lives in memory (state roots from scratch) or, with [`StateBackend::RocksDb`], in a
//! fresh RocksDB datadir per test: genesis and every block committed through `pseq-storage`, state
//! roots from its incremental trie, the post-state root checked again from scratch (`verify`).

use crate::{
    fork::{BlobScheduleEntry, Network},
    import::{decode_block, execute_rlp_block, import_into_storage, ChainRules},
    report::{Counts, Progress},
    statetest::skip_reason,
    testfiles::json_files,
};
use alloy_consensus::{Block, Header, TxEnvelope};
use alloy_primitives::{Address, Bytes, B256, U256, U64};
use alloy_rlp::Decodable;
use pseq_executor::{revm::bytecode::Bytecode, state::InMemoryAccount, ExecutionOptions, InMemoryState};
use pseq_storage::{GenesisAccount, Storage, StorageOptions};
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Fixture {
    network: String,
    genesis_block_header: FixtureHeaderHash,
    #[serde(rename = "genesisRLP")]
    genesis_rlp: Option<Bytes>,
    pub(crate) blocks: Vec<FixtureBlock>,
    pub(crate) pre: BTreeMap<Address, FixtureAccount>,
    post_state: Option<BTreeMap<Address, FixtureAccount>>,
    post_state_hash: Option<B256>,
    lastblockhash: B256,
    config: Option<FixtureConfig>,
}

impl Fixture {
    /// The rules the fixture's chain follows: fork schedule, chain id, blob schedule.
    pub(crate) fn rules(&self) -> Result<ChainRules, String> {
        let network = Network::parse(&self.network)?;
        let chain_id = FixtureConfig::chain_id(self.config.as_ref());
        let blob_schedule = FixtureConfig::blob_schedule(self.config.as_ref());
        Ok(ChainRules { network, blob_schedule, chain_id, deposit_contract: None })
    }

    /// The genesis header decoded from `genesisRLP`, and its hash (checked against the fixture's).
    pub(crate) fn genesis(&self) -> Result<(Header, B256), String> {
        let genesis_rlp = self.genesis_rlp.as_ref().ok_or("fixture has no genesisRLP")?;
        let genesis = Block::<TxEnvelope, Header>::decode(&mut genesis_rlp.as_ref()).map_err(|e| format!("genesis RLP: {e}"))?.header;
        let hash = genesis.hash_slow();
        if hash != self.genesis_block_header.hash {
            return Err(format!("genesis hash {hash} != fixture {}", self.genesis_block_header.hash));
        }
        Ok((genesis, hash))
    }
}

#[derive(Debug, Deserialize)]
struct FixtureHeaderHash {
    hash: B256,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FixtureBlock {
    pub(crate) rlp: Bytes,
    pub(crate) expect_exception: Option<String>,
}

/// An account of a fixture's `pre` or `postState` (shared with the engine tests).
#[derive(Debug, Deserialize)]
pub(crate) struct FixtureAccount {
    pub(crate) balance: U256,
    pub(crate) nonce: U64,
    pub(crate) code: Bytes,
    pub(crate) storage: BTreeMap<U256, U256>,
}

/// A fixture's `config`: chain id and blob schedule (shared with the engine tests).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FixtureConfig {
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

impl FixtureConfig {
    /// The chain id (1 when the fixture names none).
    pub(crate) fn chain_id(config: Option<&Self>) -> u64 {
        config.and_then(|c| c.chainid).map_or(1, |c| c.to())
    }

    /// The blob schedule by fork name.
    pub(crate) fn blob_schedule(config: Option<&Self>) -> BTreeMap<String, BlobScheduleEntry> {
        config
            .and_then(|c| c.blob_schedule.as_ref())
            .map(|s| {
                s.iter()
                    .map(|(fork, e)| {
                        (fork.clone(), BlobScheduleEntry { target: e.target.to(), max: e.max.to(), update_fraction: e.base_fee_update_fraction.to() })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where a blockchain test keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackend {
    /// Hash maps; state roots computed from scratch.
    #[default]
    Memory,
    /// A fresh RocksDB datadir per test, through `pseq-storage` (incremental state roots).
    RocksDb,
}

/// Options of a blockchain-test run.
#[derive(Debug, Clone)]
pub struct BlockTestOptions {
    /// How blocks execute.
    pub exec: ExecutionOptions,
    /// Also execute every block sequentially and require identical results.
    pub compare: bool,
    /// Where the state lives.
    pub backend: StateBackend,
}

pub(crate) fn state_from(accounts: &BTreeMap<Address, FixtureAccount>) -> InMemoryState {
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

/// The chain being imported: its head and the state after it. One per test, so the size of
/// the header kept inline does not matter.
#[allow(clippy::large_enum_variant)]
enum Chain {
    Memory { header: Header, hash: B256, state: InMemoryState },
    RocksDb { storage: Storage, _dir: tempfile::TempDir },
}

impl Chain {
    fn head(&self) -> Result<(Header, B256), String> {
        match self {
            Self::Memory { header, hash, .. } => Ok((header.clone(), *hash)),
            Self::RocksDb { storage, .. } => {
                let (_, hash) = storage.head();
                let header = storage.header(&hash).map_err(|e| e.to_string())?.ok_or("head header missing")?;
                Ok((header, hash))
            }
        }
    }

    /// Validates, executes and (when its state root matches) appends one block.
    fn import(&mut self, rlp: &[u8], rules: &ChainRules, options: &BlockTestOptions) -> Result<(), String> {
        let (parent, parent_hash) = self.head()?;
        match self {
            Self::Memory { header, hash, state } => {
                let root_after = |diff: &pseq_executor::StateDiff| {
                    let mut after = state.clone();
                    after.apply_diff(diff);
                    Ok(after.state_root())
                };
                let executed = execute_rlp_block(&parent, parent_hash, &*state, rlp, rules, &options.exec, options.compare, &root_after)?;
                let mut next = state.clone();
                next.apply_diff(&executed.output.state);
                let root = next.state_root();
                if root != executed.block.header.state_root {
                    return Err(format!("state root {root} != header {}", executed.block.header.state_root));
                }
                next.insert_block_hash(executed.block.header.number, executed.hash);
                *state = next;
                *header = executed.block.header;
                *hash = executed.hash;
                Ok(())
            }
            Self::RocksDb { storage, .. } => {
                let block = decode_block(rlp)?;
                import_into_storage(storage, block, rlp.len(), rules, &options.exec, options.compare).map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }

    /// The current state root: from scratch in memory; from RocksDB both incrementally (the
    /// head header's, checked at commit) and recomputed from every leaf.
    fn state_root(&self) -> Result<B256, String> {
        match self {
            Self::Memory { state, .. } => Ok(state.state_root()),
            Self::RocksDb { storage, .. } => {
                let report = storage.verify(&mut |_| {}).map_err(|e| e.to_string())?;
                if !report.ok() {
                    return Err(format!("datadir verification failed: {report:?}"));
                }
                Ok(report.computed_root)
            }
        }
    }
}

fn run_test(fixture: &Fixture, options: &BlockTestOptions) -> Result<(), String> {
    let rules = fixture.rules()?;
    let chain_id = rules.chain_id;
    let (genesis, genesis_hash) = fixture.genesis()?;
    let mut chain = match options.backend {
        StateBackend::Memory => {
            let mut state = state_from(&fixture.pre);
            let root = state.state_root();
            if root != genesis.state_root {
                return Err(format!("genesis state root {root} != header {}", genesis.state_root));
            }
            state.insert_block_hash(0, genesis_hash);
            Chain::Memory { header: genesis, hash: genesis_hash, state }
        }
        StateBackend::RocksDb => {
            let dir = tempfile::tempdir().map_err(|e| format!("temporary datadir: {e}"))?;
            let alloc: Vec<(Address, GenesisAccount)> = fixture
                .pre
                .iter()
                .map(|(address, a)| {
                    let account = GenesisAccount { balance: a.balance, nonce: a.nonce.to(), code: a.code.clone(), storage: a.storage.clone() };
                    (*address, account)
                })
                .collect();
            let options = StorageOptions { block_cache_bytes: 8 << 20, ..Default::default() };
            let storage = Storage::open_or_init(dir.path(), &options, chain_id, &genesis, &alloc).map_err(|e| format!("genesis: {e}"))?;
            Chain::RocksDb { storage, _dir: dir }
        }
    };

    for (index, block) in fixture.blocks.iter().enumerate() {
        let outcome = chain.import(&block.rlp, &rules, options);
        match (outcome, &block.expect_exception) {
            (Ok(()), None) => {}
            (Ok(()), Some(expected)) => return Err(format!("block {index}: expected rejection ({expected}) but it was accepted")),
            (Err(reason), Some(expected)) => {
                if std::env::var_os("PSEQ_BLOCKTEST_REJECTIONS").is_some() {
                    eprintln!("REJECTION\t{expected}\t{reason}");
                }
            }
            (Err(e), None) => return Err(format!("block {index}: rejected: {e}")),
        }
    }

    let (_, head_hash) = chain.head()?;
    if head_hash != fixture.lastblockhash {
        return Err(format!("last block hash {head_hash} != fixture {}", fixture.lastblockhash));
    }
    let expected_root = match (&fixture.post_state, fixture.post_state_hash) {
        (Some(post), _) => state_from(post).state_root(),
        (None, Some(hash)) => hash,
        (None, None) => return Err("fixture has neither postState nor postStateHash".into()),
    };
    let root = chain.state_root()?;
    if root != expected_root {
        return Err(format!("post-state root {root} != expected {expected_root}"));
    }
    Ok(())
}
