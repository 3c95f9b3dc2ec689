//! Blob transactions over the wire: the network form with its sidecar (EIP-4844 proofs before
//! Osaka, EIP-7594 cell proofs from Osaka on) is decoded, checked against the versioned hashes
//! with real KZG verification, kept in the pool and written back in the same form.

use alloy_consensus::{SignableTransaction, TxEip4844, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope};
use alloy_eips::{
    eip2718::Encodable2718,
    eip4844::{Blob, BlobTransactionSidecar},
    eip7594::BlobTransactionSidecarVariant,
};
use alloy_primitives::{Address, Signature, B256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pseq_executor::revm::primitives::hardfork::SpecId;
use pseq_mempool::{check_stateless, recover, PoolError, PooledTx, ValidationConfig};

const CHAIN: u64 = 31337;

fn signer() -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(0x22)).unwrap()
}

/// A blob whose field elements are all below the BLS modulus (top byte of each zero).
fn blob(seed: u8) -> Blob {
    let mut bytes = [0u8; 131_072];
    for (i, chunk) in bytes.chunks_mut(32).enumerate() {
        chunk[1] = seed;
        chunk[31] = i as u8;
    }
    Blob::from(bytes)
}

fn legacy_sidecar(blobs: usize) -> BlobTransactionSidecar {
    BlobTransactionSidecar::try_from_blobs_with_settings((0..blobs).map(|i| blob(i as u8 + 1)).collect(), alloy_eips::eip4844::env_settings::EnvKzgSettings::Default.get()).unwrap()
}

fn blob_tx(hashes: Vec<B256>) -> TxEip4844 {
    TxEip4844 {
        chain_id: CHAIN,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: Address::repeat_byte(1),
        blob_versioned_hashes: hashes,
        max_fee_per_blob_gas: 10,
        ..Default::default()
    }
}

/// The network form `eth_sendRawTransaction` receives.
fn network_form(tx: TxEip4844, sidecar: BlobTransactionSidecarVariant) -> (Vec<u8>, B256) {
    let signature: Signature = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
    let canonical = TxEnvelope::Eip4844(TxEip4844Variant::TxEip4844(tx.clone()).into_signed(signature));
    let with_sidecar = TxEip4844WithSidecar { tx, sidecar };
    let signed = alloy_consensus::Signed::new_unchecked(with_sidecar, signature, *canonical.tx_hash());
    let envelope: alloy_consensus::EthereumTxEnvelope<TxEip4844WithSidecar<BlobTransactionSidecarVariant>> = signed.into();
    (envelope.encoded_2718(), *canonical.tx_hash())
}

fn admit(raw: &[u8], config: &ValidationConfig) -> Result<PooledTx, PoolError> {
    let tx = recover(raw, config)?;
    check_stateless(&tx, config)?;
    Ok(tx)
}

#[test]
fn cell_proofs_are_accepted_from_osaka_and_round_trip() {
    let sidecar = legacy_sidecar(2);
    let hashes: Vec<B256> = sidecar.versioned_hashes().collect();
    let cells = sidecar.try_into_7594(alloy_eips::eip4844::env_settings::EnvKzgSettings::Default.get()).unwrap();
    let (raw, hash) = network_form(blob_tx(hashes), BlobTransactionSidecarVariant::Eip7594(cells));
    let config = ValidationConfig::new(CHAIN, SpecId::OSAKA);
    let tx = admit(&raw, &config).unwrap();
    assert_eq!(tx.hash, hash, "the hash is the canonical form's, sidecar excluded");
    assert_eq!(tx.sender, signer().address());
    assert!(tx.sidecar.is_some());
    assert!(tx.pooled_size() > 2 * 131_072, "the pool accounts for the blobs");
    assert_eq!(tx.network_encoding().as_ref(), raw.as_slice(), "written back byte for byte (journal)");
    // Before Osaka the same transaction needs one proof per blob instead.
    let prague = ValidationConfig::new(CHAIN, SpecId::PRAGUE);
    assert!(matches!(admit(&raw, &prague).unwrap_err(), PoolError::BlobSidecar(_)));
}

#[test]
fn legacy_proofs_are_accepted_before_osaka_only() {
    let sidecar = legacy_sidecar(1);
    let hashes: Vec<B256> = sidecar.versioned_hashes().collect();
    let (raw, _) = network_form(blob_tx(hashes), BlobTransactionSidecarVariant::Eip4844(sidecar));
    admit(&raw, &ValidationConfig::new(CHAIN, SpecId::PRAGUE)).unwrap();
    assert!(matches!(admit(&raw, &ValidationConfig::new(CHAIN, SpecId::OSAKA)).unwrap_err(), PoolError::BlobSidecar(_)));
}

#[test]
fn sidecars_that_do_not_match_are_refused() {
    let config = ValidationConfig::new(CHAIN, SpecId::PRAGUE);
    // Versioned hash of another blob.
    let sidecar = legacy_sidecar(1);
    let other: Vec<B256> = legacy_sidecar(2).versioned_hashes().skip(1).collect();
    let (raw, _) = network_form(blob_tx(other), BlobTransactionSidecarVariant::Eip4844(sidecar.clone()));
    assert!(matches!(admit(&raw, &config).unwrap_err(), PoolError::BlobSidecar(_)));
    // A proof swapped for another blob's.
    let mut forged = legacy_sidecar(2);
    forged.proofs.swap(0, 1);
    let hashes: Vec<B256> = forged.versioned_hashes().collect();
    let (raw, _) = network_form(blob_tx(hashes), BlobTransactionSidecarVariant::Eip4844(forged));
    assert!(matches!(admit(&raw, &config).unwrap_err(), PoolError::BlobSidecar(_)));
    // More blobs than a transaction may carry.
    let mut few = config.clone();
    few.max_blobs_per_tx = 1;
    let two = legacy_sidecar(2);
    let hashes: Vec<B256> = two.versioned_hashes().collect();
    let (raw, _) = network_form(blob_tx(hashes), BlobTransactionSidecarVariant::Eip4844(two));
    assert_eq!(admit(&raw, &few).unwrap_err(), PoolError::TooManyBlobs { have: 2, max: 1 });
    // The canonical (block) form without blobs.
    let hashes: Vec<B256> = sidecar.versioned_hashes().collect();
    let tx = blob_tx(hashes);
    let signature = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
    let canonical = TxEnvelope::Eip4844(TxEip4844Variant::TxEip4844(tx).into_signed(signature));
    assert_eq!(admit(&canonical.encoded_2718(), &config).unwrap_err(), PoolError::BlobMissingSidecar);
    // Chains without blobs refuse the type before looking further.
    let mut no_blobs = config;
    no_blobs.blobs_enabled = false;
    assert_eq!(admit(&canonical.encoded_2718(), &no_blobs).unwrap_err(), PoolError::TxTypeNotSupported);
}
