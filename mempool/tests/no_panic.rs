//! Admission never panics: random byte strings, and valid transactions of every type with random
//! bytes flipped, cut or appended, go through decoding, sender recovery and the stateless and
//! stateful checks; each gives a transaction or an error. (A bounded stand-in for a fuzz target.)

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEip7702, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{check_stateful, check_stateless, recover, SenderAccount, ValidationConfig};

mod common;

use common::Rng;

fn seeds() -> Vec<Vec<u8>> {
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let sign = |hash: B256| signer.sign_hash_sync(&hash).unwrap();
    let to = TxKind::Call(Address::repeat_byte(3));
    let legacy = TxLegacy { chain_id: Some(1), nonce: 1, gas_price: 10, gas_limit: 21_000, to, value: U256::from(5), input: Bytes::from_static(&[1, 2, 3]) };
    let access = TxEip2930 { chain_id: 1, nonce: 2, gas_price: 10, gas_limit: 50_000, to, ..Default::default() };
    let dynamic = TxEip1559 { chain_id: 1, nonce: 3, gas_limit: 50_000, max_fee_per_gas: 100, max_priority_fee_per_gas: 1, to, ..Default::default() };
    let delegate = TxEip7702 { chain_id: 1, nonce: 4, gas_limit: 80_000, max_fee_per_gas: 100, max_priority_fee_per_gas: 1, to: Address::repeat_byte(9), ..Default::default() };
    vec![
        TxEnvelope::Legacy(legacy.clone().into_signed(sign(legacy.signature_hash()))).encoded_2718(),
        TxEnvelope::Eip2930(access.clone().into_signed(sign(access.signature_hash()))).encoded_2718(),
        TxEnvelope::Eip1559(dynamic.clone().into_signed(sign(dynamic.signature_hash()))).encoded_2718(),
        TxEnvelope::Eip7702(delegate.clone().into_signed(sign(delegate.signature_hash()))).encoded_2718(),
    ]
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let config = ValidationConfig::new(1, SpecId::PRAGUE);
    let account = SenderAccount { nonce: 2, balance: U256::from(1_000_000_000u64), code: Bytes::new() };
    let seeds = seeds();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut admitted, mut rejected) = (0, 0);
    for round in 0..40_000 {
        let bytes: Vec<u8> = if round % 4 == 0 {
            (0..rng.next() % 300).map(|_| rng.next() as u8).collect()
        } else {
            let mut bytes = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
            match rng.next() % 4 {
                0 => {
                    for _ in 0..1 + rng.next() % 4 {
                        let i = (rng.next() % bytes.len() as u64) as usize;
                        bytes[i] ^= 1 << (rng.next() % 8);
                    }
                }
                1 => bytes.truncate((rng.next() % bytes.len() as u64) as usize),
                2 => bytes.extend((0..1 + rng.next() % 8).map(|_| rng.next() as u8)),
                _ => {
                    let i = (rng.next() % bytes.len() as u64) as usize;
                    bytes[i] = rng.next() as u8;
                }
            }
            bytes
        };
        match recover(&bytes, &config).and_then(|tx| check_stateless(&tx, &config).map(|()| tx)).and_then(|tx| check_stateful(&tx, &account, &config)) {
            Ok(()) => admitted += 1,
            Err(_) => rejected += 1,
        }
    }
    // Flipping a bit of the signature or value still decodes to a (different) transaction now and
    // then; nearly everything else is rejected.
    assert!(rejected > 30_000, "{rejected} rejected, {admitted} admitted");
    assert_eq!(admitted + rejected, 40_000);
}
