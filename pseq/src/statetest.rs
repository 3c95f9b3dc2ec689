//! `pseq statetest`: runs EEST `state_test` fixtures through the block executor.
//!
//! Each fork entry of each test is one case: the transaction runs as a one-transaction block
//! without block-level rules; the case passes when an expected exception is raised, or when the
//! logs hash and the post-state root match. With `compare` set, every case also runs on the
//! sequential path and the two results must be identical.

use crate::{
    report::{Counts, Progress},
    testfiles::{file_name, json_files},
};
use alloy_primitives::{keccak256, Log};
use pseq_executor::{
    execute_block,
    revm::{
        bytecode::Bytecode,
        context::CfgEnv,
        primitives::hardfork::SpecId,
    },
    BlockError, BlockInput, BlockRules, ExecutionOptions, InMemoryState,
};
use revm_statetest_types::{SpecName, Test, TestSuite, TestUnit};
use std::path::{Path, PathBuf};

/// Options of a state-test run.
#[derive(Debug, Clone)]
pub struct StateTestOptions {
    /// How the executor runs each case.
    pub exec: ExecutionOptions,
    /// Also run the sequential path and require identical results.
    pub compare: bool,
    /// Only these forks (names as in the fixtures, e.g. `Cancun`); all when empty.
    pub forks: Vec<String>,
}

/// Why a fixture file is not run, if it is one revm itself cannot run.
///
/// These tests create an account at an address that already has storage (EIP-7610 collisions).
/// revm's `Database` cannot tell whether an account has storage, so revm (and revme, which skips
/// the same list) creates the contract where the spec says the creation fails.
pub fn skip_reason(path: &Path) -> Option<&'static str> {
    const EIP7610: &str = "EIP-7610 create collision with pre-existing storage: revm cannot detect it (revme skips the same tests)";
    if path.to_string_lossy().contains("eip7610_create_collision") {
        return Some(EIP7610);
    }
    match file_name(path) {
        "RevertInCreateInInit_Paris.json"
        | "RevertInCreateInInit.json"
        | "dynamicAccountOverwriteEmpty.json"
        | "dynamicAccountOverwriteEmpty_Paris.json"
        | "RevertInCreateInInitCreate2Paris.json"
        | "create2collisionStorage.json"
        | "RevertInCreateInInitCreate2.json"
        | "create2collisionStorageParis.json"
        | "InitCollision.json"
        | "InitCollisionParis.json"
        | "test_init_collision_create_opcode.json" => Some(EIP7610),
        "ValueOverflow.json" | "ValueOverflowParis.json" => {
            Some("malformed value above 2^256 in the fixture: the fixture format cannot hold it (revme skips it)")
        }
        _ => None,
    }
}

/// Builds the in-memory pre-state of a test unit.
pub fn pre_state(unit: &TestUnit) -> InMemoryState {
    let mut state = InMemoryState::new();
    for (address, account) in &unit.pre {
        let code = (!account.code.is_empty()).then(|| {
            Bytecode::new_raw_checked(account.code.clone()).unwrap_or_else(|_| Bytecode::new_legacy(account.code.clone()))
        });
        state.insert_account(
            *address,
            pseq_executor::state::InMemoryAccount {
                balance: account.balance,
                nonce: account.nonce,
                code,
                storage: account.storage.iter().map(|(k, v)| (*k, *v)).collect(),
            },
        );
    }
    state
}

/// The keccak of the RLP list of logs, as state tests record it.
pub fn logs_hash(logs: &[Log]) -> alloy_primitives::B256 {
    let mut out = Vec::new();
    alloy_rlp::encode_list(logs, &mut out);
    keccak256(out)
}

/// Runs every state test under `paths`.
pub fn run(paths: &[PathBuf], options: &StateTestOptions) -> Result<Counts, String> {
    let files = json_files(paths)?;
    let mut counts = Counts::default();
    let mut progress = Progress::new("statetest", files.len());
    for file in &files {
        run_file(file, options, &mut counts);
        progress.tick(&counts);
    }
    Ok(counts)
}

/// Runs one fixture file, recording each case; a broken file counts as one failure.
pub fn run_file(path: &Path, options: &StateTestOptions, counts: &mut Counts) {
    let display = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return counts.fail(format!("{display}: cannot read: {e}")),
    };
    let suite: TestSuite = match serde_json::from_str(&text) {
        Ok(suite) => suite,
        Err(e) => return counts.fail(format!("{display}: not a state test fixture: {e}")),
    };
    if let Some(reason) = skip_reason(path) {
        let cases = suite
            .0
            .values()
            .flat_map(|u| u.post.iter())
            .filter(|(spec, _)| fork_selected(options, &format!("{spec:?}")))
            .map(|(_, tests)| tests.len())
            .sum();
        return counts.skip(reason, cases);
    }
    for (name, unit) in &suite.0 {
        let pre = pre_state(unit);
        for (spec_name, tests) in &unit.post {
            let fork = format!("{spec_name:?}");
            if !fork_selected(options, &fork) {
                continue;
            }
            if *spec_name == SpecName::Constantinople {
                counts.skip("Constantinople (never activated on mainnet; replaced by ConstantinopleFix)", tests.len());
                continue;
            }
            if *spec_name == SpecName::Unknown {
                counts.fail(format!("{display} {name}: unknown fork name in post"));
                continue;
            }
            for (index, test) in tests.iter().enumerate() {
                match run_case(unit, &pre, spec_name.to_spec_id(), test, options) {
                    Ok(()) => counts.pass(),
                    Err(e) => counts.fail(format!("{display} {name} {fork}[{index}]: {e}")),
                }
            }
        }
    }
}

fn fork_selected(options: &StateTestOptions, fork: &str) -> bool {
    options.forks.is_empty() || options.forks.iter().any(|f| f.eq_ignore_ascii_case(fork))
}

fn run_case(unit: &TestUnit, pre: &InMemoryState, spec: SpecId, test: &Test, options: &StateTestOptions) -> Result<(), String> {
    let mut cfg = CfgEnv::default();
    cfg.chain_id = unit.env.current_chain_id.map(|id| id.saturating_to()).unwrap_or(1);
    cfg.set_spec_and_mainnet_gas_params(spec);
    cfg.set_max_blobs_per_tx(if spec.is_enabled_in(SpecId::OSAKA) || !spec.is_enabled_in(SpecId::PRAGUE) { 6 } else { 9 });
    let block = unit.block_env(&mut cfg);
    let tx = match test.tx_env(unit) {
        Ok(tx) => tx,
        Err(_) if test.expect_exception.is_some() => return Ok(()),
        Err(e) => return Err(format!("cannot build the transaction: {e}")),
    };
    let mut input = BlockInput::new(cfg, block);
    input.rules = BlockRules::None;
    let txs = [tx];
    let result = execute_block(pre, &input, &txs, &options.exec);
    if options.compare {
        let reference = execute_block(pre, &input, &txs, &ExecutionOptions::sequential());
        let same = match (&result, &reference) {
            (Ok(a), Ok(b)) => a.same_result(b),
            (Err(a), Err(b)) => a == b,
            _ => false,
        };
        if !same {
            return Err(format!("parallel and sequential results differ: {result:?} vs {reference:?}"));
        }
    }
    match (result, &test.expect_exception) {
        (Err(BlockError::State(e)), _) => Err(format!("state error: {e}")),
        (Err(_), Some(_)) => Ok(()),
        (Err(e), None) => Err(format!("unexpected error: {e}")),
        (Ok(_), Some(expected)) => Err(format!("expected exception {expected}, but the transaction was valid")),
        (Ok(output), None) => {
            let logs: Vec<Log> = output.receipts.iter().flat_map(|r| r.logs.iter().cloned()).collect();
            let logs_hash = logs_hash(&logs);
            if logs_hash != test.logs {
                return Err(format!("logs hash {logs_hash} != expected {}", test.logs));
            }
            let mut post = pre.clone();
            post.apply_diff(&output.state);
            let root = post.state_root();
            if root != test.hash {
                return Err(format!("state root {root} != expected {}", test.hash));
            }
            Ok(())
        }
    }
}
