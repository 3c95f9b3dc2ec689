//! Every admission rejection, produced by a real signed transaction, with geth's exact message.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEip4844, TxEip4844Variant, TxEip7702, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, Signature, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{check_stateful, check_stateless, decode, recover, recover_batch, PoolError, PooledTx, SenderAccount, ValidationConfig};

const CHAIN: u64 = 31337;
const GWEI: u128 = 1_000_000_000;

fn signer() -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap()
}

fn eip1559(nonce: u64, gas_limit: u64, max_fee: u128, tip: u128, to: TxKind, input: Bytes) -> TxEip1559 {
    TxEip1559 { chain_id: CHAIN, nonce, gas_limit, max_fee_per_gas: max_fee, max_priority_fee_per_gas: tip, to, value: U256::from(1), access_list: Default::default(), input }
}

fn transfer(nonce: u64) -> TxEip1559 {
    eip1559(nonce, 21_000, 2 * GWEI, GWEI, TxKind::Call(Address::repeat_byte(0xbb)), Bytes::new())
}

fn sign<T: SignableTransaction<Signature>>(tx: T) -> (T, Signature) {
    let signature = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
    (tx, signature)
}

fn env1559(tx: TxEip1559) -> TxEnvelope {
    let (tx, sig) = sign(tx);
    TxEnvelope::Eip1559(tx.into_signed(sig))
}

fn raw(envelope: &TxEnvelope) -> Vec<u8> {
    envelope.encoded_2718()
}

fn config() -> ValidationConfig {
    ValidationConfig::new(CHAIN, SpecId::PRAGUE)
}

fn admit(envelope: &TxEnvelope, config: &ValidationConfig) -> Result<PooledTx, PoolError> {
    let tx = recover(&raw(envelope), config)?;
    check_stateless(&tx, config)?;
    Ok(tx)
}

fn rich() -> SenderAccount {
    SenderAccount { nonce: 0, balance: U256::from(10u128.pow(21)), code: Bytes::new() }
}

#[test]
fn messages_are_geths_word_for_word() {
    let table = [
        (PoolError::OversizedData, "oversized data"),
        (PoolError::TxTypeNotSupported, "transaction type not supported"),
        (PoolError::InvalidSender, "invalid sender"),
        (PoolError::InvalidChainId, "invalid chain id for signer"),
        (PoolError::ExceedsBlockGasLimit, "exceeds block gas limit"),
        (PoolError::IntrinsicGasTooLow, "intrinsic gas too low"),
        (PoolError::MaxInitCodeSizeExceeded, "max initcode size exceeded"),
        (PoolError::TipAboveFeeCap, "max priority fee per gas higher than max fee per gas"),
        (PoolError::Underpriced, "transaction underpriced"),
        (PoolError::FeeCapBelowBaseFee, "max fee per gas less than block base fee"),
        (PoolError::NonceTooLow, "nonce too low"),
        (PoolError::NonceTooHigh, "nonce too high"),
        (PoolError::NonceMax, "nonce has max value"),
        (PoolError::InsufficientFunds, "insufficient funds for gas * price + value"),
        (PoolError::GasUintOverflow, "gas uint64 overflow"),
        (PoolError::SenderNotEoa, "sender not an eoa"),
        (PoolError::AlreadyKnown, "already known"),
        (PoolError::ReplacementUnderpriced, "replacement transaction underpriced"),
        (PoolError::AccountLimitExceeded, "account limit exceeded"),
        (PoolError::TxPoolFull, "txpool is full"),
        (PoolError::BlobCreate, "blob transaction of type create"),
        (PoolError::BlobMissingHashes, "blob transaction missing blob hashes"),
        (PoolError::BlobFeeCapTooLow, "max fee per blob gas less than block blob gas fee"),
    ];
    for (error, geth) in table {
        assert_eq!(error.to_string(), geth);
    }
}

#[test]
fn a_valid_transfer_is_admitted() {
    let envelope = env1559(transfer(0));
    let tx = admit(&envelope, &config()).unwrap();
    assert_eq!(tx.sender, signer().address());
    assert_eq!(tx.hash, *envelope.tx_hash());
    check_stateful(&tx, &rich(), &config()).unwrap();
    assert_eq!(tx.effective_tip(GWEI as u64 / 2), Some(GWEI));
    assert_eq!(tx.effective_tip(3 * GWEI as u64 / 2), Some(GWEI / 2));
    assert_eq!(tx.effective_tip(3 * GWEI as u64), None);
}

#[test]
fn undecodable_bytes() {
    let config = config();
    let garbage = decode(&[0xde, 0xad], &config);
    assert!(matches!(garbage, Err(PoolError::Decode(_))), "{garbage:?}");
    assert!(matches!(decode(&[], &config), Err(PoolError::Decode(_))));
    let mut bytes = raw(&env1559(transfer(0)));
    bytes.push(0);
    assert_eq!(decode(&bytes, &config).unwrap_err(), PoolError::Decode("trailing bytes".into()));
    let mut unknown = raw(&env1559(transfer(0)));
    unknown[0] = 0x05;
    assert_eq!(decode(&unknown, &config).unwrap_err(), PoolError::TxTypeNotSupported);
    assert_eq!(decode(&vec![0u8; 128 * 1024 + 1], &config).unwrap_err(), PoolError::OversizedData);
}

#[test]
fn a_signature_that_recovers_nothing() {
    let tx = transfer(0);
    let envelope = TxEnvelope::Eip1559(tx.into_signed(Signature::new(U256::ZERO, U256::ZERO, false)));
    assert_eq!(admit(&envelope, &config()).unwrap_err(), PoolError::InvalidSender);
}

#[test]
fn types_the_fork_or_chain_does_not_have() {
    let envelope = env1559(transfer(0));
    assert_eq!(admit(&envelope, &ValidationConfig::new(CHAIN, SpecId::BERLIN)).unwrap_err(), PoolError::TxTypeNotSupported);
    let auth = TxEip7702 { chain_id: CHAIN, nonce: 0, gas_limit: 100_000, max_fee_per_gas: 2 * GWEI, max_priority_fee_per_gas: GWEI, to: Address::repeat_byte(1), ..Default::default() };
    let (auth, sig) = sign(auth);
    let envelope = TxEnvelope::Eip7702(auth.into_signed(sig));
    assert_eq!(admit(&envelope, &ValidationConfig::new(CHAIN, SpecId::CANCUN)).unwrap_err(), PoolError::TxTypeNotSupported);
    let blob = TxEip4844 {
        chain_id: CHAIN,
        gas_limit: 21_000,
        max_fee_per_gas: 2 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to: Address::repeat_byte(1),
        blob_versioned_hashes: vec![B256::repeat_byte(1)],
        max_fee_per_blob_gas: 1,
        ..Default::default()
    };
    let (blob_tx, sig) = sign(TxEip4844Variant::TxEip4844(blob.clone()));
    let envelope = TxEnvelope::Eip4844(blob_tx.into_signed(sig));
    let mut no_blobs = config();
    no_blobs.blobs_enabled = false;
    assert_eq!(admit(&envelope, &no_blobs).unwrap_err(), PoolError::TxTypeNotSupported);
    // Over RPC a blob transaction must come with its sidecar (tests/blobs.rs has the rest).
    assert_eq!(admit(&envelope, &config()).unwrap_err(), PoolError::BlobMissingSidecar);
    check_stateless(&PooledTx::new(envelope, signer().address()), &config()).unwrap();
    let (empty, sig) = sign(TxEip4844Variant::TxEip4844(TxEip4844 { blob_versioned_hashes: vec![], ..blob }));
    let empty = PooledTx::new(TxEnvelope::Eip4844(empty.into_signed(sig)), signer().address());
    assert_eq!(check_stateless(&empty, &config()).unwrap_err(), PoolError::BlobMissingHashes);
}

#[test]
fn chain_id_gas_and_fee_checks() {
    let config = config();
    let other_chain = env1559(TxEip1559 { chain_id: 1, ..transfer(0) });
    assert_eq!(admit(&other_chain, &config).unwrap_err(), PoolError::InvalidChainId);
    let too_much_gas = env1559(TxEip1559 { gas_limit: 30_000_001, ..transfer(0) });
    assert_eq!(admit(&too_much_gas, &config).unwrap_err(), PoolError::ExceedsBlockGasLimit);
    let too_little_gas = env1559(TxEip1559 { gas_limit: 20_999, ..transfer(0) });
    assert_eq!(admit(&too_little_gas, &config).unwrap_err(), PoolError::IntrinsicGasTooLow);
    // Prague's calldata floor (EIP-7623): 1,000 non-zero bytes need 21,000 + 40,000 gas.
    let floor = env1559(TxEip1559 { gas_limit: 21_000 + 16_000 + 100, input: Bytes::from(vec![1u8; 1000]), ..transfer(0) });
    assert_eq!(admit(&floor, &config).unwrap_err(), PoolError::IntrinsicGasTooLow);
    admit(&floor, &ValidationConfig::new(CHAIN, SpecId::CANCUN)).unwrap();
    let tip_above_cap = env1559(TxEip1559 { max_priority_fee_per_gas: 3 * GWEI, ..transfer(0) });
    assert_eq!(admit(&tip_above_cap, &config).unwrap_err(), PoolError::TipAboveFeeCap);
    let cheap = env1559(TxEip1559 { max_fee_per_gas: 6, max_priority_fee_per_gas: 1, ..transfer(0) });
    assert_eq!(admit(&cheap, &config).unwrap_err(), PoolError::Underpriced);
    let init_code = env1559(eip1559(0, 29_000_000, 2 * GWEI, GWEI, TxKind::Create, Bytes::from(vec![0u8; 49_153])));
    assert_eq!(admit(&init_code, &config).unwrap_err(), PoolError::MaxInitCodeSizeExceeded);
    let max_nonce = env1559(transfer(u64::MAX));
    assert_eq!(admit(&max_nonce, &config).unwrap_err(), PoolError::NonceMax);
    let overflow = env1559(TxEip1559 { value: U256::MAX, ..transfer(0) });
    assert_eq!(admit(&overflow, &config).unwrap_err(), PoolError::GasUintOverflow);
    let legacy = TxLegacy { chain_id: Some(CHAIN), nonce: 0, gas_price: 2 * GWEI, gas_limit: 21_000, to: TxKind::Call(Address::repeat_byte(2)), value: U256::ZERO, input: Bytes::new() };
    let (legacy, sig) = sign(legacy);
    admit(&TxEnvelope::Legacy(legacy.into_signed(sig)), &config).unwrap();
    let access = TxEip2930 { chain_id: CHAIN, nonce: 0, gas_price: 2 * GWEI, gas_limit: 21_000, to: TxKind::Call(Address::repeat_byte(2)), ..Default::default() };
    let (access, sig) = sign(access);
    admit(&TxEnvelope::Eip2930(access.into_signed(sig)), &config).unwrap();
}

#[test]
fn account_checks() {
    let config = config();
    let tx = admit(&env1559(transfer(5)), &config).unwrap();
    let account = SenderAccount { nonce: 6, ..rich() };
    assert_eq!(check_stateful(&tx, &account, &config).unwrap_err(), PoolError::NonceTooLow);
    let far = admit(&env1559(transfer(5 + (1 << 16) + 1)), &config).unwrap();
    assert_eq!(check_stateful(&far, &rich(), &config).unwrap_err(), PoolError::NonceTooHigh);
    // value 1 + 21,000 x 2 gwei.
    let cost = U256::from(1 + 21_000 * 2 * GWEI);
    assert_eq!(check_stateful(&tx, &SenderAccount { balance: cost - U256::from(1), ..rich() }, &config).unwrap_err(), PoolError::InsufficientFunds);
    check_stateful(&tx, &SenderAccount { balance: cost, ..rich() }, &config).unwrap();
    let contract = SenderAccount { code: Bytes::from_static(&[0x60, 0x00]), ..rich() };
    assert_eq!(check_stateful(&tx, &contract, &config).unwrap_err(), PoolError::SenderNotEoa);
    let mut delegation = vec![0xef, 0x01, 0x00];
    delegation.extend_from_slice(&[0x42; 20]);
    check_stateful(&tx, &SenderAccount { code: Bytes::from(delegation), ..rich() }, &config).unwrap();
}

#[test]
fn batch_recovery_matches_one_by_one_in_order() {
    let config = config();
    let mut raws: Vec<Bytes> = (0..300).map(|n| Bytes::from(raw(&env1559(transfer(n))))).collect();
    raws[17] = Bytes::from_static(&[0x02, 0xc0]);
    let bad_sig = TxEnvelope::Eip1559(transfer(1).into_signed(Signature::new(U256::ZERO, U256::ZERO, false)));
    raws[250] = Bytes::from(raw(&bad_sig));
    let batch = recover_batch(&raws, &config, 4);
    assert_eq!(batch.len(), raws.len());
    for (i, (raw, result)) in raws.iter().zip(&batch).enumerate() {
        assert_eq!(result, &recover(raw, &config), "entry {i}");
    }
    assert!(matches!(batch[17], Err(PoolError::Decode(_))));
    assert_eq!(batch[250], Err(PoolError::InvalidSender));
    assert_eq!(batch[299].as_ref().unwrap().nonce(), 299);
}
