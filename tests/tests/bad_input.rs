//! Bad input to the conformance runners: a truncated or malformed fixture, an unknown fork name,
//! a block JSON missing fields. Each gives a failure naming the file (and test), and the run
//! goes on with the next file.

use pseq::{blocktest, corpus, replay, statetest};
use pseq_executor::ExecutionOptions;
use std::fs;

/// A scratch directory, removed when the test ends.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("pseq-bad-input-{name}-")).tempdir().expect("scratch dir")
}

#[test]
fn state_test_runner_reports_bad_files_and_continues() {
    let source = corpus::state_tests().expect("state tests").join("cancun/eip1153_tstore/test_tload_after_sstore.json");
    let text = fs::read_to_string(&source).expect("fixture");
    let scratch = scratch("state");
    let dir = scratch.path();
    fs::write(dir.join("a_truncated.json"), &text[..text.len() / 2]).unwrap();
    fs::write(dir.join("b_valid.json"), &text).unwrap();
    fs::write(dir.join("c_unknown_fork.json"), text.replace("\"Cancun\"", "\"Atlantis\"")).unwrap();
    fs::write(dir.join("d_not_a_fixture.json"), "[1, 2, 3]").unwrap();

    let options = statetest::StateTestOptions { exec: ExecutionOptions::force_parallel(2), compare: true, forks: vec![] };
    let counts = statetest::run(&[dir.to_path_buf()], &options).expect("run");
    assert!(counts.passed > 0, "the valid file still ran");
    let failures = counts.failures.join("\n");
    assert!(failures.contains("a_truncated.json"), "{failures}");
    assert!(failures.contains("d_not_a_fixture.json"), "{failures}");
    assert!(failures.contains("c_unknown_fork.json") && failures.contains("unknown fork"), "{failures}");
    assert!(!failures.contains("b_valid.json"), "{failures}");
}

#[test]
fn blockchain_test_runner_reports_bad_files_and_continues() {
    let source = corpus::blockchain_tests().expect("blockchain tests").join("cancun/eip1153_tstore/test_tload_after_sstore.json");
    let text = fs::read_to_string(&source).expect("fixture");
    let scratch = scratch("block");
    let dir = scratch.path();
    fs::write(dir.join("a_truncated.json"), &text[..text.len() / 3]).unwrap();
    fs::write(dir.join("b_valid.json"), &text).unwrap();
    fs::write(dir.join("c_unknown_network.json"), text.replace("\"network\": \"Cancun\"", "\"network\": \"Atlantis\"")).unwrap();
    fs::write(dir.join("d_missing_field.json"), text.replace("\"lastblockhash\"", "\"lastblockhash_gone\"")).unwrap();

    let options = blocktest::BlockTestOptions { exec: ExecutionOptions::force_parallel(2), compare: true, backend: Default::default() };
    let counts = blocktest::run(&[dir.to_path_buf()], &options).expect("run");
    assert!(counts.passed > 0, "the valid file still ran");
    let failures = counts.failures.join("\n");
    assert!(failures.contains("a_truncated.json"), "{failures}");
    assert!(failures.contains("c_unknown_network.json") && failures.contains("unknown fork"), "{failures}");
    assert!(failures.contains("d_missing_field.json") && failures.contains("lastblockhash"), "{failures}");
    assert!(!failures.contains("b_valid.json"), "{failures}");
}

#[test]
fn replay_reports_a_block_with_missing_fields_and_continues() {
    let source = corpus::mainnet_blocks().expect("mainnet blocks");
    let scratch = scratch("replay");
    let dir = scratch.path();
    for number in ["46147", "930196"] {
        fs::create_dir_all(dir.join(number)).unwrap();
        for file in ["block.json", "pre_state.json"] {
            fs::copy(source.join(number).join(file), dir.join(number).join(file)).unwrap();
        }
    }
    fs::copy(source.join("block_hashes.json"), dir.join("block_hashes.json")).unwrap();
    let broken = fs::read_to_string(dir.join("46147/block.json")).unwrap().replace("\"gasUsed\"", "\"gasUsedGone\"");
    fs::write(dir.join("46147/block.json"), broken).unwrap();

    let options = replay::ReplayOptions { blocks: vec![], check_threads: vec![2], threads: 2, runs: 0, json: false, force_parallel: false };
    let (counts, _) = replay::run(dir, &options).expect("run");
    assert_eq!(counts.passed, 1, "{:?}", counts.failures);
    assert_eq!(counts.failed(), 1);
    assert!(counts.failures[0].contains("46147") && counts.failures[0].contains("gasUsed"), "{:?}", counts.failures);
}
