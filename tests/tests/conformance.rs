//! Conformance on external data, through the parallel path with the small-block fallback off and
//! every case also executed sequentially (results must be identical):
//! - EEST state tests, forks Cancun, Prague and Osaka;
//! - every EEST blockchain test (all forks, invalid blocks included), in memory and again with the
//!   state in RocksDB (incremental state roots);
//! - all 67 mainnet blocks at 1, 2, 4 and 8 threads;
//! - EEST engine tests through the Engine API (HTTP, JWT).
//!
//! The corpora are unpacked from `../shared/corpora` into `target/corpora` on first use. A missing
//! corpus fails the test: no suite is skipped silently.

use pseq::{blocktest, corpus, replay, report::Counts, statetest};
use pseq_executor::ExecutionOptions;

/// The only reason a case may be skipped (named and justified in docs/conformance.md).
const ALLOWED_SKIP: &str = "EIP-7610 create collision";

fn assert_clean(suite: &str, counts: &Counts, minimum_passed: usize) {
    counts.print_summary(20);
    assert_eq!(counts.failed(), 0, "{suite}: {} failures, first: {:?}", counts.failed(), counts.failures.first());
    assert!(counts.passed >= minimum_passed, "{suite}: only {} cases passed (expected at least {minimum_passed})", counts.passed);
    for reason in counts.skipped.keys() {
        assert!(reason.starts_with(ALLOWED_SKIP), "{suite}: unexpected skip reason {reason}");
    }
}

#[test]
fn eest_state_tests_cancun_prague_osaka() {
    let dir = corpus::state_tests().expect("state test corpus");
    let options = statetest::StateTestOptions {
        exec: ExecutionOptions::force_parallel(2),
        compare: true,
        forks: vec!["Cancun".into(), "Prague".into(), "Osaka".into()],
    };
    let counts = statetest::run(&[dir], &options).expect("state tests run");
    assert_clean("state tests", &counts, 29_000);
}

#[test]
fn eest_blockchain_tests_all_forks() {
    let dir = corpus::blockchain_tests().expect("blockchain test corpus");
    let options = blocktest::BlockTestOptions { exec: ExecutionOptions::force_parallel(2), compare: true, backend: Default::default() };
    let counts = blocktest::run(&[dir], &options).expect("blockchain tests run");
    assert_clean("blockchain tests", &counts, 22_000);
}

/// Every blockchain test again with its state in RocksDB: genesis and every valid block committed
/// through `pseq-storage`, each header's state root checked against the incremental trie, the
/// post-state root recomputed from scratch. Same passes and skips as the in-memory run.
#[test]
fn eest_blockchain_tests_all_forks_through_rocksdb() {
    let dir = corpus::blockchain_tests().expect("blockchain test corpus");
    let options = blocktest::BlockTestOptions { exec: ExecutionOptions::parallel(2), compare: false, backend: blocktest::StateBackend::RocksDb };
    let counts = blocktest::run(&[dir], &options).expect("blockchain tests run");
    assert_clean("blockchain tests (RocksDB)", &counts, 22_000);
}

#[test]
fn mainnet_blocks_parallel_equals_sequential() {
    let dir = corpus::mainnet_blocks().expect("mainnet blocks corpus");
    let options = replay::ReplayOptions { blocks: vec![], check_threads: vec![1, 2, 4, 8], threads: 2, runs: 0, json: false, force_parallel: false };
    let (counts, _) = replay::run(&dir, &options).expect("replay run");
    assert_clean("mainnet blocks", &counts, 67);
}

/// EEST `blockchain_test_engine` fixtures (the Osaka benchmark blocks of
/// `eest-benchmark-v0.0.7`) through the Engine API over HTTP with a JWT: two tests of each of the
/// 38 files here (every payload VALID, the final head the fixture's); all 462 in `make
/// conformance` (docs/conformance.md).
#[test]
fn eest_engine_tests_through_the_engine_api() {
    let dir = corpus::eest_benchmark().expect("eest benchmark corpus").join("blockchain_tests_engine");
    let options = pseq::enginetest::EngineTestOptions { threads: 2, per_file: Some(2) };
    let counts = pseq::enginetest::run(&[dir], &options).expect("engine tests run");
    assert_clean("engine tests", &counts, 76);
}
