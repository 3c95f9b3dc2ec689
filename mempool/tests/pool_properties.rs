//! Property test of the pool under random sequences of adds, replacements, removals and block
//! commits (nonces, balances and the base fee moving), with small limits so eviction happens.
//! After every step: pending is a gap-free nonce run from the account nonce per sender, nothing
//! is in two sub-pools, limits hold, no sender holds more than its slots, replacements were
//! accepted exactly when they carried the fee bump, and `best_transactions` yields every pending
//! transaction once, each sender's in nonce order, and nothing of a sender after `mark_invalid`.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{map::HashMap, Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{Pool, PoolConfig, PoolError, PooledTx, SenderAccount, SubPool, SubPoolLimit, ValidationConfig};

mod common;

use common::Rng;

const SLOTS: usize = 5;

fn config() -> PoolConfig {
    let mut config = PoolConfig::new(ValidationConfig::new(1, SpecId::PRAGUE));
    config.account_slots = SLOTS;
    config.pending = SubPoolLimit { max_txs: 14, max_bytes: 1 << 20 };
    config.base_fee = SubPoolLimit { max_txs: 8, max_bytes: 1 << 20 };
    config.queued = SubPoolLimit { max_txs: 8, max_bytes: 1 << 20 };
    config
}

fn sign(key: &PrivateKeySigner, nonce: u64, max_fee: u128, tip: u128, value: u64) -> PooledTx {
    let tx = TxEip1559 {
        chain_id: 1,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(Address::with_last_byte(0xee)),
        value: U256::from(value),
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let signature = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    PooledTx::new(TxEnvelope::Eip1559(tx.into_signed(signature)), key.address())
}

fn check(pool: &Pool, accounts: &HashMap<Address, SenderAccount>, config: &PoolConfig, step: usize, rng: &mut Rng) {
    let content = pool.content();
    let mut counts = [0usize; 3];
    let mut pending_total = 0;
    for (sender, txs) in &content {
        let account = &accounts[sender];
        assert!(txs.len() <= SLOTS, "step {step}: {sender} holds {} > {SLOTS}", txs.len());
        let mut expected = account.nonce;
        let mut in_pending_run = true;
        for (nonce, entry) in txs {
            assert!(*nonce >= account.nonce, "step {step}: nonce {nonce} below the account nonce {}", account.nonce);
            assert_eq!(pool.get(&entry.tx.hash).map(|e| e.sub_pool), Some(entry.sub_pool), "step {step}: index disagrees");
            match entry.sub_pool {
                SubPool::Pending => {
                    assert!(in_pending_run && *nonce == expected, "step {step}: pending nonce {nonce} of {sender} after a gap or a parked one");
                    assert!(entry.tx.max_fee_per_gas() >= u128::from(pool.base_fee()), "step {step}: pending below the base fee");
                    expected += 1;
                    pending_total += 1;
                    counts[0] += 1;
                }
                SubPool::BaseFee => {
                    in_pending_run = false;
                    counts[1] += 1;
                }
                SubPool::Queued => {
                    in_pending_run = false;
                    counts[2] += 1;
                }
            }
        }
    }
    let status = pool.status();
    assert_eq!((status.pending, status.base_fee, status.queued), (counts[0], counts[1], counts[2]), "step {step}");
    assert!(counts[0] <= config.pending.max_txs && counts[1] <= config.base_fee.max_txs && counts[2] <= config.queued.max_txs, "step {step}: limits {counts:?}");

    // Best-first iteration: every pending transaction once, per sender in nonce order; after
    // mark_invalid nothing more of that sender.
    let mut best = pool.best_transactions();
    let mut last_nonce: HashMap<Address, u64> = HashMap::default();
    let mut yielded = 0;
    let mut invalid: Option<Address> = None;
    while let Some(tx) = best.next() {
        assert_ne!(Some(tx.sender), invalid, "step {step}: yielded after mark_invalid");
        if let Some(last) = last_nonce.get(&tx.sender) {
            assert_eq!(tx.nonce(), last + 1, "step {step}: nonce order");
        }
        last_nonce.insert(tx.sender, tx.nonce());
        yielded += 1;
        if invalid.is_none() && rng.below(4) == 0 {
            best.mark_invalid(&tx);
            invalid = Some(tx.sender);
        }
    }
    if invalid.is_none() {
        assert_eq!(yielded, pending_total, "step {step}: best_transactions missed some");
    }
}

#[test]
fn invariants_hold_under_random_operations() {
    for seed in 1..=6u64 {
        let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
        let keys: Vec<PrivateKeySigner> = (1..=6u8).map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(i)).unwrap()).collect();
        let config = config();
        let mut base_fee = 10u64;
        let mut pool = Pool::new(config.clone(), base_fee);
        let mut accounts: HashMap<Address, SenderAccount> =
            keys.iter().map(|k| (k.address(), SenderAccount { nonce: 0, balance: U256::from(3_000_000u64), code: Bytes::new() })).collect();
        let mut replacements = (0, 0);
        for step in 0..400 {
            match rng.below(10) {
                0..=6 => {
                    let key = &keys[rng.below(keys.len() as u64) as usize];
                    let account = accounts[&key.address()].clone();
                    let nonce = account.nonce + rng.below(6);
                    let max_fee = 5 + u128::from(rng.below(25));
                    let tip = u128::from(rng.below(max_fee as u64 + 1));
                    let tx = sign(key, nonce, max_fee, tip, rng.below(50_000));
                    let existing = pool.content().get(&key.address()).and_then(|txs| txs.get(&nonce).cloned());
                    let result = pool.add(tx.clone(), account, false);
                    if let Some(old) = existing {
                        let old_fee = old.tx.max_fee_per_gas();
                        let old_tip = old.tx.max_priority_fee_per_gas().unwrap_or(old_fee);
                        let ok = tx.max_fee_per_gas() * 100 >= old_fee * 110 && tip * 100 >= old_tip * 110;
                        match &result {
                            Ok(added) => {
                                assert!(ok, "step {step}: replacement without the bump accepted");
                                assert_eq!(added.replaced, Some(old.tx.hash));
                                replacements.0 += 1;
                            }
                            Err(PoolError::ReplacementUnderpriced) => {
                                assert!(!ok, "step {step}: a bumped replacement refused");
                                replacements.1 += 1;
                            }
                            Err(PoolError::AlreadyKnown | PoolError::InsufficientFunds | PoolError::Underpriced) => {}
                            Err(e) => panic!("step {step}: unexpected {e}"),
                        }
                    } else if let Err(e) = &result {
                        assert!(
                            matches!(e, PoolError::AccountLimitExceeded | PoolError::TxPoolFull | PoolError::AlreadyKnown | PoolError::InsufficientFunds | PoolError::Underpriced),
                            "step {step}: unexpected {e}"
                        );
                    }
                }
                7 => {
                    let content = pool.content();
                    if let Some(entry) = content.values().flat_map(|t| t.values()).nth(rng.below(40) as usize) {
                        pool.remove(&entry.tx.hash.clone());
                    }
                }
                _ => {
                    // A block: some senders' nonces move (their transactions were mined), balances
                    // change, and the base fee moves.
                    let mut updates = Vec::new();
                    for key in &keys {
                        if rng.below(2) == 0 {
                            let account = accounts.get_mut(&key.address()).unwrap();
                            account.nonce += rng.below(3);
                            account.balance = U256::from(200_000 + rng.below(3_000_000));
                            updates.push((key.address(), account.clone()));
                        }
                    }
                    base_fee = (base_fee as i64 + rng.below(9) as i64 - 4).clamp(7, 30) as u64;
                    let removed = pool.on_block(&updates, base_fee);
                    for hash in removed {
                        assert!(!pool.contains(&hash));
                    }
                }
            }
            check(&pool, &accounts, &config, step, &mut rng);
        }
        assert!(replacements.0 > 0 && replacements.1 > 0, "seed {seed}: replacements {replacements:?}");
        let status = pool.status();
        assert!(status.pending + status.base_fee + status.queued > 0);
    }
}

#[test]
fn pending_events_and_gap_filling() {
    let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(9)).unwrap();
    let account = SenderAccount { nonce: 0, balance: U256::from(10u64.pow(18)), code: Bytes::new() };
    let mut pool = Pool::new(PoolConfig::new(ValidationConfig::new(1, SpecId::PRAGUE)), 7);
    let events = pool.subscribe_pending();
    let second = pool.add(sign(&key, 1, 100, 1, 1), account.clone(), true).unwrap();
    assert_eq!(second.sub_pool, SubPool::Queued);
    assert!(events.try_recv().is_err());
    let first = pool.add(sign(&key, 0, 100, 1, 1), account.clone(), true).unwrap();
    assert_eq!(first.sub_pool, SubPool::Pending);
    assert_eq!(pool.get(&second.hash).unwrap().sub_pool, SubPool::Pending, "filling the gap promotes the successor");
    let got: Vec<B256> = events.try_iter().collect();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&first.hash) && got.contains(&second.hash));
    // The base fee rises above both fee caps: both park in the base-fee pool, then come back.
    pool.on_block(&[], 200);
    assert_eq!(pool.get(&first.hash).unwrap().sub_pool, SubPool::BaseFee);
    assert_eq!(pool.status().pending, 0);
    pool.on_block(&[], 50);
    assert_eq!(pool.status().pending, 2);
    // The first is mined.
    let removed = pool.on_block(&[(key.address(), SenderAccount { nonce: 1, ..account })], 50);
    assert_eq!(removed, vec![first.hash]);
    assert_eq!(pool.best_transactions().map(|t| t.hash).collect::<Vec<_>>(), vec![second.hash]);
    assert_eq!(pool.add(sign(&key, 1, 100, 1, 1), SenderAccount { nonce: 1, balance: U256::from(10u64.pow(18)), code: Bytes::new() }, true).unwrap_err(), PoolError::AlreadyKnown);
}

#[test]
fn the_journal_round_trips_and_revalidates() {
    use pseq_mempool::journal;
    let dir = std::env::temp_dir().join(format!("pseq-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pool.journal");
    let keys: Vec<PrivateKeySigner> = (1..=3u8).map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(0x40 + i)).unwrap()).collect();
    let account = SenderAccount { nonce: 0, balance: U256::from(10u64.pow(18)), code: Bytes::new() };
    let mut pool = Pool::new(PoolConfig::new(ValidationConfig::new(1, SpecId::PRAGUE)), 7);
    for (k, key) in keys.iter().enumerate() {
        for nonce in 0..4 {
            // Sender 2 has a gap at nonce 2: its 3 stays queued.
            if k == 2 && nonce == 2 {
                continue;
            }
            pool.add(sign(key, nonce, 100, 2, 1), account.clone(), k == 0).unwrap();
        }
    }
    assert_eq!(journal::save(&pool, &path).unwrap(), 11);
    let entries = journal::load(&path).unwrap();
    assert_eq!(entries.len(), 11);
    assert_eq!(entries.iter().filter(|e| e.local).count(), 4);

    // Restart on a head where sender 1's first two were mined.
    let mut restarted = Pool::new(PoolConfig::new(ValidationConfig::new(1, SpecId::PRAGUE)), 7);
    let mined = keys[1].address();
    let result = journal::reload(&mut restarted, &entries, &mut |sender| SenderAccount { nonce: if sender == mined { 2 } else { 0 }, ..account.clone() });
    assert_eq!(result.added, 9);
    assert_eq!(result.dropped, vec![PoolError::NonceTooLow, PoolError::NonceTooLow]);
    let status = restarted.status();
    assert_eq!((status.pending, status.queued), (8, 1));
    for (sender, txs) in restarted.content() {
        for (nonce, entry) in txs {
            assert_eq!(entry.local, sender == keys[0].address(), "local flag of {sender} {nonce}");
        }
    }

    // A truncated or foreign file is a clear error, never a panic; a missing one is empty.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = journal::load(&path).unwrap_err();
    assert!(err.to_string().contains("corrupt: truncated transaction"), "{err}");
    std::fs::write(&path, b"hello").unwrap();
    assert!(journal::load(&path).unwrap_err().to_string().contains("not a pool journal"));
    std::fs::remove_file(&path).unwrap();
    assert!(journal::load(&path).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pool_level_rejections() {
    let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x77)).unwrap();
    let account = SenderAccount { nonce: 0, balance: U256::from(10u64.pow(18)), code: Bytes::new() };
    let mut config = PoolConfig::new(ValidationConfig::new(1, SpecId::PRAGUE));
    config.account_slots = 3;
    config.queued = SubPoolLimit { max_txs: 2, max_bytes: 1 << 20 };
    let mut pool = Pool::new(config, 7);
    let first = sign(&key, 0, 100, 10, 1);
    pool.add(first.clone(), account.clone(), false).unwrap();
    assert_eq!(pool.add(first, account.clone(), false).unwrap_err(), PoolError::AlreadyKnown);
    // 9% more is not enough; 10% on both fee cap and tip is.
    assert_eq!(pool.add(sign(&key, 0, 109, 11, 1), account.clone(), false).unwrap_err(), PoolError::ReplacementUnderpriced);
    assert_eq!(pool.add(sign(&key, 0, 110, 10, 1), account.clone(), false).unwrap_err(), PoolError::ReplacementUnderpriced);
    assert!(pool.add(sign(&key, 0, 110, 11, 1), account.clone(), false).unwrap().replaced.is_some());
    pool.add(sign(&key, 1, 100, 10, 1), account.clone(), false).unwrap();
    pool.add(sign(&key, 2, 100, 10, 1), account.clone(), false).unwrap();
    assert_eq!(pool.add(sign(&key, 3, 100, 10, 1), account.clone(), false).unwrap_err(), PoolError::AccountLimitExceeded);
    // Queued holds two: a third gapped transaction of a lower tip is evicted at once.
    let other = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x78)).unwrap();
    pool.add(sign(&other, 5, 100, 50, 1), account.clone(), false).unwrap();
    pool.add(sign(&other, 6, 100, 50, 1), account.clone(), false).unwrap();
    let third = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x79)).unwrap();
    assert_eq!(pool.add(sign(&third, 9, 100, 1, 1), account, false).unwrap_err(), PoolError::TxPoolFull);
    assert_eq!(pool.status().queued, 2);
}
