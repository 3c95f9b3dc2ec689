//! Randomised blocks with heavy conflicts: parallel execution at 2, 4 and 8 threads (4 and 8
//! twice) must return exactly the sequential result (receipts, gas, skipped transactions, errors
//! and the whole state diff). Every block is generated from a seed; a failure prints the seed and the block.
//!
//! Conflict patterns: a few shared senders and recipients, transfers to and from the beneficiary,
//! a hot storage slot, contracts reading the beneficiary's and a hot account's balance (forcing
//! lazy values to be evaluated mid-block), contracts forwarding value, CREATE2 at a colliding
//! address (funded before the creation in some blocks), contract creation, SELFDESTRUCT, reverts, out-of-gas, senders running out of balance in
//! the middle of a chain of transfers, nonce gaps, ether moved through contracts whose balances
//! the parallel path holds (credits inside calls, `SELFBALANCE` and `BALANCE` of them, payments
//! and `CREATE` out of balances of a few wei), and ERC-20 transfers (the corpus's
//! OpenZeppelin token) among a few holders, most of them to one hot holder, whose balance the
//! parallel path credits lazily, with balance reads, self-transfers, transfers of a whole balance
//! and transfers beyond it in between.
//!
//! The same blocks are also executed as a sequencer builds them, in runs of transactions given one
//! after the other to a [`BlockSession`] (random split points, sequential and Block-STM runs): the
//! result must again be exactly the one-shot sequential one.
//!
//! `PSEQ_STRESS_BLOCKS` sets the number of blocks (default 1500).

use alloy_primitives::{Address, Bytes, TxKind, U256};
use pseq_executor::{
    execute_block,
    revm::{
        bytecode::Bytecode,
        context::{BlockEnv, CfgEnv, TxEnv},
        primitives::hardfork::SpecId,
    },
    state::InMemoryAccount,
    block::ExecutedPath,
    parallel::{tokens, FallbackReason},
    BlockInput, BlockOutput, BlockRules, BlockSession, BlockError, ExecutionOptions, InMemoryState, InvalidTxPolicy,
};

mod common;
use common::{balance_of_calldata, corpus_code};

/// xorshift64*: small, deterministic, good enough to drive generation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const GWEI: u64 = 1_000_000_000;
const ETHER: u128 = 1_000_000_000_000_000_000;

fn addr(n: u64) -> Address {
    let mut bytes = [0u8; 20];
    bytes[0] = 0xaa;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    Address::from(bytes)
}

fn push20(code: &mut Vec<u8>, a: Address) {
    code.push(0x73);
    code.extend_from_slice(a.as_slice());
}

/// The contracts of the generated world.
struct Contracts {
    counter: Address,
    reverter: Address,
    coinbase_reader: Address,
    hot_reader: Address,
    forwarder: Address,
    destructor: Address,
    factory: Address,
    burner: Address,
    token: Address,
    keeper: Address,
    keeper_forwarder: Address,
    payer: Address,
    creator: Address,
    keeper_reader: Address,
}

/// Calldata of `transfer(to, amount)`.
fn token_transfer(to: Address, amount: u64) -> Bytes {
    tokens::transfer_calldata(to, U256::from(amount))
}


fn contracts(state: &mut InMemoryState, hot_eoa: Address, beneficiary_of_destruct: Address) -> Contracts {
    let mut put = |n: u64, code: Vec<u8>, balance: u128| {
        let a = addr(1000 + n);
        state.insert_account(
            a,
            InMemoryAccount { balance: U256::from(balance), nonce: 1, code: Some(Bytecode::new_raw(Bytes::from(code))), storage: Default::default() },
        );
        a
    };
    // slot0 += 1
    let counter = put(1, vec![0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x00], 0);
    // slot0 += 1, then REVERT when calldata is not empty
    let reverter = put(
        2,
        vec![0x60, 0, 0x54, 0x60, 1, 0x01, 0x60, 0, 0x55, 0x36, 0x15, 0x60, 0x13, 0x57, 0x60, 0, 0x60, 0, 0xfd, 0x5b, 0x00],
        0,
    );
    // slot1 = BALANCE(COINBASE)
    let coinbase_reader = put(3, vec![0x41, 0x31, 0x60, 1, 0x55, 0x00], 0);
    // slot2 = BALANCE(hot_eoa)
    let mut code = Vec::new();
    push20(&mut code, hot_eoa);
    code.extend_from_slice(&[0x31, 0x60, 2, 0x55, 0x00]);
    let hot_reader = put(4, code, 0);
    // CALL(gas, hot_eoa, callvalue, 0, 0, 0, 0)
    let mut code = vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x34];
    push20(&mut code, hot_eoa);
    code.extend_from_slice(&[0x5a, 0xf1, 0x50, 0x00]);
    let forwarder = put(5, code, 0);
    // SELFDESTRUCT(beneficiary)
    let mut code = Vec::new();
    push20(&mut code, beneficiary_of_destruct);
    code.push(0xff);
    let destructor = put(6, code, ETHER);
    // slot3 = CREATE2(0, 27, 5, 42) with init code 600060 00f3 (deploys empty code)
    let factory = put(
        7,
        vec![0x64, 0x60, 0x00, 0x60, 0x00, 0xf3, 0x60, 0, 0x52, 0x60, 42, 0x60, 5, 0x60, 27, 0x60, 0, 0xf5, 0x60, 3, 0x55, 0x00],
        0,
    );
    // infinite loop: runs out of gas
    let burner = put(8, vec![0x5b, 0x60, 0, 0x56], 0);
    let token = addr(1009);
    // Contracts whose balances the parallel path holds (see `parallel::held`), and the
    // instructions that make it read them exactly.
    // slot4 = SELFBALANCE when calldata is not empty; otherwise only receives
    let keeper = put(10, vec![0x36, 0x15, 0x60, 0x09, 0x57, 0x47, 0x60, 4, 0x55, 0x5b, 0x00], 0);
    // CALL(gas, keeper, callvalue, 0, 0, 0, 0): a credit to a contract inside a call
    let mut code = vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x34];
    push20(&mut code, keeper);
    code.extend_from_slice(&[0x5a, 0xf1, 0x50, 0x00]);
    let keeper_forwarder = put(11, code, 0);
    // CALL(gas, CALLER, 1, 0, 0, 0, 0) out of a balance of a few wei: fails once it is spent
    let payer = put(12, vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x60, 1, 0x33, 0x5a, 0xf1, 0x50, 0x00], 3);
    // CREATE(1, 0, 0): a new empty account funded with one wei, and a nonce raised
    let creator = put(13, vec![0x60, 0, 0x60, 0, 0x60, 1, 0xf0, 0x50, 0x00], 2);
    // slot5 = BALANCE(keeper)
    let mut code = Vec::new();
    push20(&mut code, keeper);
    code.extend_from_slice(&[0x31, 0x60, 5, 0x55, 0x00]);
    let keeper_reader = put(14, code, 0);
    Contracts { counter, reverter, coinbase_reader, hot_reader, forwarder, destructor, factory, burner, token, keeper, keeper_forwarder, payer, creator, keeper_reader }
}

struct World {
    state: InMemoryState,
    input: BlockInput,
    txs: Vec<TxEnv>,
}

fn generate(seed: u64) -> World {
    generate_sized(seed, false)
}

/// A random block; `big` gives thousands of transactions over thousands of accounts, enough for
/// the parallel path to merge and normalise its result on several threads.
fn generate_sized(seed: u64, big: bool) -> World {
    let mut rng = Rng::new(seed);
    let spec = rng.pick(&[SpecId::CANCUN, SpecId::PRAGUE, SpecId::OSAKA, SpecId::SHANGHAI, SpecId::BERLIN, SpecId::SPURIOUS_DRAGON, SpecId::HOMESTEAD]);
    let mut state = InMemoryState::new();
    let eoa_count = if big { 6_000 + rng.below(4_000) } else { 2 + rng.below(7) };
    let eoas: Vec<Address> = (0..eoa_count).map(addr).collect();
    let mut nonces = vec![0u64; eoas.len()];
    // In some blocks a few senders are poor, so that a chain of their transfers runs dry
    // mid-block; in some, the SELFDESTRUCT contract is called. Both send Block-STM to its
    // fallback at times, so they are not in every block.
    let poor_senders = rng.chance(30);
    let with_destructor = rng.chance(30);
    for (i, a) in eoas.iter().enumerate() {
        let balance = if poor_senders && rng.chance(40) { U256::from(rng.below(3) as u128 * ETHER / 1000) } else { U256::from(rng.below(50) as u128 * ETHER) };
        let nonce = rng.below(3);
        nonces[i] = nonce;
        state.insert_account(*a, InMemoryAccount { balance, nonce, code: None, storage: Default::default() });
    }
    // An empty account that a zero-value touch deletes (EIP-161).
    let empty = addr(500);
    if rng.chance(50) {
        state.insert_account(empty, InMemoryAccount::default());
    }
    // The factory's CREATE2 address, funded before its contract exists in some blocks (a
    // counterfactual deployment: the creation keeps the balance), and paid in the block.
    let create2_target = addr(1007).create2(alloy_primitives::B256::from(U256::from(42)), alloy_primitives::keccak256([0x60, 0x00, 0x60, 0x00, 0xf3]));
    if rng.chance(50) {
        state.insert_account(create2_target, InMemoryAccount { balance: U256::from(ETHER), ..Default::default() });
    }
    let hot_eoa = eoas[0];
    let beneficiary_choice = rng.below(4);
    let c = contracts(&mut state, hot_eoa, if rng.chance(50) { addr(501) } else { hot_eoa });
    // Token balances: most holders some, a few none (a credit to them pays for a new slot).
    let token_heavy = rng.chance(30);
    let mut token_storage = std::collections::HashMap::new();
    for holder in &eoas {
        if rng.chance(80) {
            // Small balances in some blocks: whole balances move, and the hot holder's balance
            // goes back to zero and up again (its credits' gas depends on it).
            let balance = if token_heavy { rng.below(4) } else { rng.below(100) };
            token_storage.insert(tokens::balance_slot(*holder, 0), U256::from(balance));
        }
    }
    state.insert_account(c.token, InMemoryAccount { nonce: 1, code: Some(Bytecode::new_raw(corpus_code("ERC20Token"))), storage: token_storage.into_iter().collect(), ..Default::default() });
    let beneficiary = match beneficiary_choice {
        0 => eoas[rng.below(eoas.len() as u64) as usize],
        1 => c.coinbase_reader,
        2 => empty,
        _ => addr(777),
    };

    let mut cfg = CfgEnv::default();
    cfg.chain_id = 1;
    cfg.set_spec_and_mainnet_gas_params(spec);
    let basefee = if spec.is_enabled_in(SpecId::LONDON) { rng.below(3) * GWEI } else { 0 };
    let block = BlockEnv {
        number: U256::from(100),
        beneficiary,
        timestamp: U256::from(1_700_000_000u64),
        gas_limit: if big { 2_000_000_000 } else { 30_000_000 + rng.below(2) * 1_000_000_000 },
        basefee,
        prevrandao: Some(Default::default()),
        ..Default::default()
    };
    let mut input = BlockInput::new(cfg, block);
    // Prague's request contracts are not deployed in this world; blockchain tests cover those rules.
    input.rules = if !spec.is_enabled_in(SpecId::PRAGUE) && rng.chance(50) { BlockRules::All } else { BlockRules::None };

    let tx_count = if big { 5_000 + rng.below(3_000) } else { 1 + rng.below(40) };
    let hot_sender_percent = if big { 3 } else { 40 };
    let bad_nonce_percent = if big { 0 } else { 3 };
    let mut txs = Vec::new();
    let mut targets = vec![c.counter, c.reverter, c.coinbase_reader, c.hot_reader, c.forwarder, c.factory, c.burner];
    // In some blocks, mostly calls moving ether through contracts.
    if rng.chance(40) {
        targets.extend([c.keeper, c.keeper_forwarder, c.keeper_forwarder, c.payer, c.creator, c.keeper_reader, c.forwarder]);
    }
    if with_destructor {
        targets.push(c.destructor);
    }
    for _ in 0..tx_count {
        let sender_index = if rng.chance(hot_sender_percent) { 0 } else { rng.below(eoas.len() as u64) as usize };
        // The beneficiary sends too, where it is an account with a key.
        let sender_index = if eoas.contains(&beneficiary) && rng.chance(10) {
            eoas.iter().position(|a| *a == beneficiary).unwrap_or(sender_index)
        } else {
            sender_index
        };
        let sender = eoas[sender_index];
        let mut nonce = nonces[sender_index];
        if rng.chance(bad_nonce_percent) {
            nonce += 1 + rng.below(2); // nonce gap: invalid
        } else if rng.chance(bad_nonce_percent) && nonce > 0 {
            nonce -= 1; // nonce too low: invalid
        }
        nonces[sender_index] = nonce + 1;
        // Some blocks are mostly token transfers.
        let kind_roll = if token_heavy && rng.chance(60) { 10 } else { rng.below(12) };
        let (kind, data, gas_limit, value) = match kind_roll {
            0..=3 => {
                let to = match rng.below(6) {
                    0 => hot_eoa,
                    1 => beneficiary,
                    2 => empty,
                    3 => create2_target,
                    _ => eoas[rng.below(eoas.len() as u64) as usize],
                };
                let value = if rng.chance(15) { U256::ZERO } else { U256::from(rng.below(4) as u128 * ETHER / 4 + rng.below(1000) as u128) };
                (TxKind::Call(to), Bytes::new(), 21_000 + rng.below(2) * 10_000, value)
            }
            4..=8 => {
                let to = rng.pick(&targets);
                let data = if rng.chance(30) { Bytes::from_static(&[1]) } else { Bytes::new() };
                let gas = if to == c.burner { 60_000 } else { 100_000 + rng.below(3) * 100_000 };
                let value = if rng.chance(30) { U256::from(rng.below(1000)) } else { U256::ZERO };
                (TxKind::Call(to), data, gas, value)
            }
            10 | 11 => {
                let to = if rng.chance(60) { hot_eoa } else { eoas[rng.below(eoas.len() as u64) as usize] };
                let data = match rng.below(10) {
                    0 => balance_of_calldata(hot_eoa),
                    // Often within the sender's balance, sometimes all of it, sometimes beyond.
                    _ => token_transfer(to, if token_heavy { rng.below(4) } else { rng.below(60) }),
                };
                (TxKind::Call(c.token), data, 60_000 + rng.below(2) * 40_000, U256::ZERO)
            }
            _ => {
                // init code: SSTORE(0, 1); return empty runtime code
                let init = Bytes::from_static(&[0x60, 1, 0x60, 0, 0x55, 0x60, 0, 0x60, 0, 0xf3]);
                (TxKind::Create, init, 120_000, U256::from(rng.below(10)))
            }
        };
        let tip = rng.below(3) * GWEI;
        let eip1559 = spec.is_enabled_in(SpecId::LONDON) && rng.chance(50);
        let tx = TxEnv {
            tx_type: if eip1559 { 2 } else { 0 },
            caller: sender,
            gas_limit,
            gas_price: (basefee + tip + if eip1559 { rng.below(2) * GWEI } else { 0 }) as u128,
            gas_priority_fee: eip1559.then_some(tip as u128),
            kind,
            value,
            data,
            nonce,
            chain_id: Some(1),
            ..Default::default()
        };
        txs.push(tx);
    }
    World { state, input, txs }
}

/// Whether two executions of a block agree: the same result, or the same error.
fn same_outcome(a: &Result<BlockOutput, BlockError>, b: &Result<BlockOutput, BlockError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a.same_result(b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

fn check(seed: u64) {
    check_world(seed, generate(seed));
}

fn check_world(seed: u64, world: World) {
    for policy in [InvalidTxPolicy::Reject, InvalidTxPolicy::Skip] {
        let sequential = execute_block(&world.state, &world.input, &world.txs, &ExecutionOptions::sequential().with_invalid_tx(policy));
        // 4 and 8 threads twice: races show up only under some interleavings.
        for threads in [2, 4, 8, 4, 8] {
            let parallel =
                execute_block(&world.state, &world.input, &world.txs, &ExecutionOptions::force_parallel(threads).with_invalid_tx(policy));
            let same = same_outcome(&sequential, &parallel);
            assert!(
                same,
                "seed {seed} {policy:?} {threads} threads: parallel differs from sequential\nspec {:?}\ntxs {:#?}\nsequential {sequential:#?}\nparallel {parallel:#?}",
                world.input.cfg.spec, world.txs
            );
        }
        // The partitioned path, tried on every block whatever its size: its independence check
        // must catch every plan these conflicting blocks prove wrong. Then Block-STM without its
        // refinements (`--without`), which must be exact too.
        let plain_block_stm = ExecutionOptions::force_parallel(4).without(pseq_executor::Techniques::ALL);
        for options in [ExecutionOptions::partitioned(2), ExecutionOptions::partitioned(3), ExecutionOptions::parallel(2), plain_block_stm] {
            let options = options.with_invalid_tx(policy);
            let partitioned = execute_block(&world.state, &world.input, &world.txs, &options);
            let same = same_outcome(&sequential, &partitioned);
            assert!(
                same,
                "seed {seed} {policy:?} {options:?}: partitioned differs from sequential\nspec {:?}\ntxs {:#?}\nsequential {sequential:#?}\npartitioned {partitioned:#?}",
                world.input.cfg.spec, world.txs
            );
        }
        let mut rng = Rng::new(seed ^ 0x5eed);
        for options in [ExecutionOptions::sequential(), ExecutionOptions::force_parallel(2), ExecutionOptions::force_parallel(4), ExecutionOptions::partitioned(2)] {
            let options = options.with_invalid_tx(policy);
            let chunked = execute_in_runs(&world, options, &mut rng);
            let same = same_outcome(&sequential, &chunked);
            assert!(same, "seed {seed} {policy:?} {options:?}: run by run differs from sequential\nsequential {sequential:#?}\nrun by run {chunked:#?}");
        }
    }
}

/// Executes the world's block through a session, in runs of random length (empty runs included).
fn execute_in_runs(world: &World, options: ExecutionOptions, rng: &mut Rng) -> Result<BlockOutput, BlockError> {
    let mut session = BlockSession::new(&world.state, &world.input, options)?;
    let mut given = 0;
    while given < world.txs.len() {
        let run = (rng.below(world.txs.len() as u64 / 2 + 2) as usize).min(world.txs.len() - given);
        session.append(&world.txs[given..given + run])?;
        given += run;
    }
    session.finish()
}

#[test]
fn parallel_equals_sequential_on_big_random_blocks() {
    // Thousands of accounts written: the parallel path merges and normalises on several threads
    // (a mutation that merges an account's writes out of block order, or drops a shard, fails).
    for seed in 0..12 {
        let world = generate_sized(seed, true);
        assert!(world.txs.len() >= 5_000);
        check_world(seed, world);
    }
}

#[test]
fn parallel_equals_sequential_on_random_conflicting_blocks() {
    let blocks: u64 = std::env::var("PSEQ_STRESS_BLOCKS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let first: u64 = std::env::var("PSEQ_STRESS_FIRST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    for seed in first..first + blocks {
        check(seed);
    }
}

/// The generator really produces the situations the test claims to cover.
#[test]
fn generated_blocks_cover_invalid_and_skipped_transactions() {
    let mut skipped = 0;
    let mut rejected = 0;
    let mut reverted = 0;
    let mut parallel_runs = 0;
    let mut lazy_fallbacks = 0;
    let mut exact_wipes = 0;
    let mut lazy_credit_blocks = 0;
    let mut held_credit_blocks = 0;
    for seed in 0..200 {
        let world = generate(seed);
        if execute_block(&world.state, &world.input, &world.txs, &ExecutionOptions::sequential()).is_err() {
            rejected += 1;
        }
        let output = execute_block(&world.state, &world.input, &world.txs, &ExecutionOptions::sequential().with_invalid_tx(InvalidTxPolicy::Skip))
            .expect("skip policy never rejects a generated block");
        skipped += output.skipped.len();
        reverted += output.receipts.iter().filter(|r| !r.success).count();
        let parallel = execute_block(&world.state, &world.input, &world.txs, &ExecutionOptions::force_parallel(2).with_invalid_tx(InvalidTxPolicy::Skip))
            .expect("skip policy never rejects a generated block");
        match parallel.path {
            ExecutedPath::Parallel => {
                parallel_runs += 1;
                if parallel.stats.is_some_and(|s| s.storage_wipes > 0) {
                    exact_wipes += 1;
                }
                if parallel.stats.is_some_and(|s| s.lazy_token_credits > 0) {
                    lazy_credit_blocks += 1;
                }
                if parallel.stats.is_some_and(|s| s.held_credits > 0) {
                    held_credit_blocks += 1;
                }
            }
            ExecutedPath::ParallelFallback(FallbackReason::LazyCheckFailed) => lazy_fallbacks += 1,
            _ => {}
        }
    }
    assert!(parallel_runs > 90, "only {parallel_runs} of 200 blocks ran through Block-STM to the end");
    // The partitioned path both succeeds and is caught wrong on these blocks.
    let (mut partitioned, mut rejected_plans) = (0, 0);
    for seed in 0..200 {
        let world = generate(seed);
        let options = ExecutionOptions::partitioned(2).with_invalid_tx(InvalidTxPolicy::Skip);
        let output = execute_block(&world.state, &world.input, &world.txs, &options).expect("skip policy never rejects a generated block");
        match output.path {
            ExecutedPath::Partitioned => partitioned += 1,
            _ if world.txs.len() >= 8 => rejected_plans += 1,
            _ => {}
        }
    }
    eprintln!("partitioned {partitioned}, not partitioned (8 transactions or more) {rejected_plans}");
    assert!(partitioned > 8, "only {partitioned} of 200 blocks ran on the partitioned path");
    assert!(rejected_plans > 20, "only {rejected_plans} blocks of 8 transactions or more left the partitioned path");
    // The lazy-check fallback is exercised on purpose, and so are pre-Cancun SELFDESTRUCTs of
    // accounts that existed before (their storage wipe runs through Block-STM to the end); the
    // main test compares both against sequential execution.
    assert!(lazy_fallbacks > 0, "no block exercised a failing lazy check");
    assert!(exact_wipes > 0, "no block destroyed a pre-existing account under Block-STM");
    assert!(lazy_credit_blocks > 8, "only {lazy_credit_blocks} blocks credited an ERC-20 holder lazily under Block-STM");
    assert!(held_credit_blocks > 20, "only {held_credit_blocks} blocks credited a held balance under Block-STM");
    eprintln!("rejected {rejected}, skipped {skipped}, reverted {reverted}, parallel {parallel_runs}, lazy fallbacks {lazy_fallbacks}, blocks with storage wipes {exact_wipes}, with lazy token credits {lazy_credit_blocks}, with held credits {held_credit_blocks}");
    assert!(rejected > 20, "only {rejected} blocks rejected");
    assert!(skipped > 50, "only {skipped} transactions skipped");
    assert!(reverted > 50, "only {reverted} transactions failed");
}
