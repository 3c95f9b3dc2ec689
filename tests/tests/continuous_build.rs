//! Continuous block building on a real RocksDB datadir: the miner keeps the next block open and
//! executes transactions into it as they arrive, in waves.
//!
//! - Waves mix plain transfers with calls that write storage slots of one contract (shared
//!   slots across senders of a wave).
//! - Later waves pay higher tips, and each wave comes from senders of its own. A block built at
//!   its deadline would put them first; an open block has already executed the earlier waves,
//!   so some block must hold an earlier wave's transaction before a later (better paying) one.
//! - Every block is re-executed by a second datadir through the block importer, on the
//!   sequential reference path in one go: headers (state, receipts and transactions roots, gas,
//!   bloom) must all validate, so the run-by-run execution equals the one-shot sequential one.
//! - `evm_setNextBlockTimestamp` lands in the middle of the load: the open block (planned with
//!   another timestamp) is dropped, the next block has the timestamp asked for, nothing is lost.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use pseq_builder::{import::import_into_storage, BuilderSettings, ChainRules, Miner, Sequencer};
use pseq_config::{dev::{dev_chain_spec, dev_signer}, ChainSpec, MiningMode};
use pseq_executor::ExecutionOptions;
use pseq_mempool::PooledTx;
use pseq_storage::{GenesisAccount, Storage, StorageOptions};
use std::{
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

const WAVES: u64 = 6;
const SENDERS_PER_WAVE: u32 = 3;
const TXS_PER_SENDER: u64 = 4;
/// Calls per sender to a contract that stores the caller under the slot given in the call data.
const CALLS_PER_SENDER: u64 = 2;
/// Init code of that contract: runtime `PUSH1 0 CALLDATALOAD CALLER SWAP1 SSTORE STOP`.
const STORE_INIT: &str = "6007600c60003960076000f360003533905500";

fn open(dir: &Path, spec: &ChainSpec) -> Storage {
    let alloc: Vec<(Address, GenesisAccount)> = spec
        .alloc
        .iter()
        .map(|(address, a)| (*address, GenesisAccount { balance: a.balance, nonce: a.nonce, code: a.code.clone(), storage: a.storage.clone() }))
        .collect();
    Storage::open_or_init(dir, &StorageOptions::default(), spec.chain_id, &spec.genesis_header, &alloc).unwrap()
}

fn transfer(signer: u32, nonce: u64, tip_gwei: u128, to: Address) -> PooledTx {
    signed(signer, nonce, tip_gwei, TxKind::Call(to), Bytes::new(), 21_000)
}

fn signed(signer: u32, nonce: u64, tip_gwei: u128, to: TxKind, input: Bytes, gas_limit: u64) -> PooledTx {
    let key = dev_signer(signer).unwrap();
    let value = if input.is_empty() { U256::from(1_000 + nonce) } else { U256::ZERO };
    let tx = TxEip1559 {
        chain_id: 31337,
        nonce,
        gas_limit,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: tip_gwei * 1_000_000_000,
        to,
        value,
        access_list: Default::default(),
        input,
    };
    let signature = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    PooledTx::new(envelope, key.address())
}

#[test]
fn open_blocks_take_transactions_as_they_arrive_and_equal_sequential_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dev_chain_spec(31337, 30_000_000).unwrap();
    let storage = Arc::new(open(&dir.path().join("a"), &spec));
    let settings = BuilderSettings { gas_limit: 30_000_000, threads: 2, continuous: true, ..Default::default() };
    let sequencer = Arc::new(Sequencer::new(storage.clone(), spec.clone(), settings).unwrap());
    let miner = Miner::spawn(sequencer.clone(), MiningMode::Interval(Duration::from_millis(700))).unwrap();

    // Waves 120 ms apart; wave w comes from senders of its own and tips w + 1 gwei. A shared
    // recipient and the beneficiary make every transaction of the block touch common accounts.
    let shared = Address::repeat_byte(0x5a);
    // A contract every wave writes to, deployed first.
    let deploy = signed(0, 0, 1, TxKind::Create, alloy_primitives::hex::decode(STORE_INIT).unwrap().into(), 200_000);
    let store = dev_signer(0).unwrap().address().create(0);
    let deploy_hash = deploy.hash;
    sequencer.submit(deploy, true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while storage.transaction_location(&deploy_hash).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the deployment was not included");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut wave_of: std::collections::HashMap<B256, u64> = Default::default();
    for wave in 0..WAVES {
        for s in 0..SENDERS_PER_WAVE {
            let signer = 1 + wave as u32 * SENDERS_PER_WAVE + s;
            for nonce in 0..TXS_PER_SENDER {
                let to = if nonce % 2 == 0 { shared } else { Address::with_last_byte(signer as u8) };
                let tx = transfer(signer, nonce, u128::from(wave) + 1, to);
                wave_of.insert(tx.hash, wave);
                sequencer.submit(tx, true).unwrap();
            }
            for call in 0..CALLS_PER_SENDER {
                let slot = B256::from(U256::from(wave * 100 + call % 2 + u64::from(s)));
                let tx = signed(signer, TXS_PER_SENDER + call, u128::from(wave) + 1, TxKind::Call(store), Bytes::from(slot.to_vec()), 60_000);
                wave_of.insert(tx.hash, wave);
                sequencer.submit(tx, true).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(120));
    }

    while wave_of.keys().any(|h| storage.transaction_location(h).unwrap().is_none()) {
        assert!(Instant::now() < deadline, "not every transaction was included in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The clock of the next block changes while it is open.
    std::thread::sleep(Duration::from_millis(200));
    let fixed_timestamp = sequencer.head_header().unwrap().timestamp + 1_000;
    sequencer.set_next_timestamp(fixed_timestamp).unwrap();
    let last = transfer(19, 0, 1, shared);
    let last_hash = last.hash;
    sequencer.submit(last, true).unwrap();
    while storage.transaction_location(&last_hash).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the last transaction was not included");
        std::thread::sleep(Duration::from_millis(50));
    }
    miner.shutdown();
    let ahead = sequencer.metrics().ahead_micros.load(Ordering::Relaxed);
    assert!(ahead > 0, "no transaction was executed into an open block before its deadline");

    // The contract calls ran: the last wave's last sender alone wrote slot 100 * wave + 1 + s.
    let last_signer = 1 + (WAVES as u32 - 1) * SENDERS_PER_WAVE + (SENDERS_PER_WAVE - 1);
    let slot = U256::from((WAVES - 1) * 100 + 1 + u64::from(SENDERS_PER_WAVE - 1));
    let stored = pseq_executor::revm::database::DatabaseRef::storage_ref(&storage.latest(), store, slot).unwrap();
    assert_eq!(stored, U256::from_be_slice(dev_signer(last_signer).unwrap().address().as_slice()), "contract slot {slot}");

    // Some block holds an earlier, cheaper wave before a later, better paying one.
    let (head, _) = storage.head();
    let mut arrival_order_seen = false;
    for n in 1..=head {
        let hash = storage.canonical_hash(n).unwrap().unwrap();
        let body = storage.body(&hash).unwrap().unwrap();
        let waves: Vec<u64> = body.transactions.iter().filter_map(|tx| wave_of.get(tx.tx_hash()).copied()).collect();
        arrival_order_seen |= waves.windows(2).any(|w| w[0] < w[1]);
    }
    assert!(arrival_order_seen, "no block shows transactions executed in arrival runs");
    let fixed_seen = (1..=head).any(|n| storage.header_by_number(n).unwrap().unwrap().timestamp == fixed_timestamp);
    assert!(fixed_seen, "no block has the timestamp set while a block was open");

    // A second datadir re-executes every block sequentially in one go: every header validates.
    let replica = open(&dir.path().join("b"), &spec);
    let rules = ChainRules::from_spec(&spec);
    for n in 1..=head {
        let hash = storage.canonical_hash(n).unwrap().unwrap();
        let header = storage.header(&hash).unwrap().unwrap();
        let body = storage.body(&hash).unwrap().unwrap();
        let block = alloy_consensus::Block { header, body };
        let len = alloy_rlp::Encodable::length(&block);
        let (_, committed) = import_into_storage(&replica, block, len, &rules, &ExecutionOptions::sequential(), false)
            .unwrap_or_else(|e| panic!("block {n} does not re-execute to its header: {e:?}"));
        assert_eq!(committed.hash, hash, "block {n}");
    }
    assert_eq!(replica.head(), storage.head());
}
