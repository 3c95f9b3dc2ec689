//! Admission checks: decoding, sender recovery (batched over threads: it dominates admission
//! cost), checks that need only the transaction (stateless) and checks against the sender's
//! account (stateful).

use crate::{config::ValidationConfig, error::PoolError, tx::PooledTx};
use alloy_consensus::{transaction::SignerRecoverable, EthereumTxEnvelope, Signed, Transaction, TxEip4844Variant, TxEip4844WithSidecar, TxEnvelope};
use alloy_eips::{
    eip2718::Decodable2718,
    eip4844::{env_settings::EnvKzgSettings, BYTES_PER_BLOB},
    eip7594::{BlobTransactionSidecarVariant, CELLS_PER_EXT_BLOB},
};
use alloy_evm::FromRecoveredTx;
use alloy_primitives::{Bytes, U256};
use pseq_executor::revm::{
    context::TxEnv,
    context_interface::cfg::gas::calculate_initial_tx_gas_for_tx,
    primitives::{eip3860::MAX_INITCODE_SIZE, hardfork::SpecId},
};

/// A transaction in the pooled (network) form, blob transactions with their sidecars.
type PooledBlobEnvelope = EthereumTxEnvelope<TxEip4844WithSidecar<BlobTransactionSidecarVariant>>;

/// What the pool knows of a sender's account at the head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderAccount {
    /// Account nonce.
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// Runtime code (empty for an EOA; an EIP-7702 delegation designator is allowed).
    pub code: Bytes,
}

/// EIP-7702: code `0xef0100 ‖ address` delegates an EOA.
fn is_delegation(code: &[u8]) -> bool {
    code.len() == 23 && code.starts_with(&[0xef, 0x01, 0x00])
}

/// Decodes one EIP-2718 transaction in its canonical (block) form.
pub fn decode(raw: &[u8], config: &ValidationConfig) -> Result<TxEnvelope, PoolError> {
    if raw.len() > config.max_tx_bytes {
        return Err(PoolError::OversizedData);
    }
    check_type_byte(raw)?;
    let mut buf = raw;
    let tx = TxEnvelope::decode_2718(&mut buf).map_err(|e| PoolError::Decode(e.to_string()))?;
    if !buf.is_empty() {
        return Err(PoolError::Decode("trailing bytes".into()));
    }
    Ok(tx)
}

/// A first byte below 0x80 names a typed transaction (EIP-2718); 0xc0 and up, a legacy RLP list.
fn check_type_byte(raw: &[u8]) -> Result<(), PoolError> {
    match raw.first() {
        Some(&ty) if (0x05..0x80).contains(&ty) => Err(PoolError::TxTypeNotSupported),
        _ => Ok(()),
    }
}

/// Decodes a transaction as `eth_sendRawTransaction` receives it: EIP-2718, and a blob
/// transaction in the network form with its sidecar (`0x03 ‖ rlp([tx, blobs, commitments,
/// proofs])`, or with EIP-7594's wrapper version and cell proofs).
pub fn decode_pooled(raw: &[u8], config: &ValidationConfig) -> Result<(TxEnvelope, Option<BlobTransactionSidecarVariant>), PoolError> {
    if raw.first() != Some(&3) {
        return decode(raw, config).map(|tx| (tx, None));
    }
    if !config.blobs_enabled {
        return Err(PoolError::TxTypeNotSupported);
    }
    let blob_bytes = config.max_blobs_per_tx * (BYTES_PER_BLOB + CELLS_PER_EXT_BLOB * 48 + 2 * 48 + 16);
    if raw.len() > config.max_tx_bytes + blob_bytes {
        return Err(PoolError::OversizedData);
    }
    let mut buf = raw;
    let pooled = PooledBlobEnvelope::decode_2718(&mut buf).map_err(|e| match TxEnvelope::decode_2718(&mut &raw[..]) {
        // A well-formed blob transaction without its blobs: the pool needs them.
        Ok(_) => PoolError::BlobMissingSidecar,
        Err(_) => PoolError::Decode(e.to_string()),
    })?;
    if !buf.is_empty() {
        return Err(PoolError::Decode("trailing bytes".into()));
    }
    let PooledBlobEnvelope::Eip4844(signed) = pooled else { return Err(PoolError::Decode("not a blob transaction".into())) };
    let (with_sidecar, signature, hash) = signed.into_parts();
    let TxEip4844WithSidecar { tx, sidecar } = with_sidecar;
    let envelope = TxEnvelope::Eip4844(Signed::new_unchecked(TxEip4844Variant::TxEip4844(tx), signature, hash));
    Ok((envelope, Some(sidecar)))
}

/// Decodes (see [`decode_pooled`]) and recovers the sender.
pub fn recover(raw: &[u8], config: &ValidationConfig) -> Result<PooledTx, PoolError> {
    let (tx, sidecar) = decode_pooled(raw, config)?;
    let sender = tx.recover_signer().map_err(|_| PoolError::InvalidSender)?;
    let pooled = PooledTx::new(tx, sender);
    Ok(match sidecar {
        Some(sidecar) => pooled.with_sidecar(sidecar),
        None => pooled,
    })
}

/// Decodes and recovers a batch on up to `threads` threads, results in input order.
pub fn recover_batch(raws: &[Bytes], config: &ValidationConfig, threads: usize) -> Vec<Result<PooledTx, PoolError>> {
    let threads = threads.clamp(1, 64);
    if threads == 1 || raws.len() < 64 {
        return raws.iter().map(|raw| recover(raw, config)).collect();
    }
    let chunk = raws.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = raws.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(|raw| recover(raw, config)).collect::<Vec<_>>())).collect();
        // A panicking worker is a bug, not a bad transaction: pass the panic on.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Checks that need only the transaction and the chain: type, chain id, sizes, gas, fees.
pub fn check_stateless(tx: &PooledTx, config: &ValidationConfig) -> Result<(), PoolError> {
    let spec = config.spec;
    let envelope = &tx.envelope;
    let type_fork = match tx.tx_type() {
        0 => SpecId::FRONTIER,
        1 => SpecId::BERLIN,
        2 => SpecId::LONDON,
        3 if config.blobs_enabled => SpecId::CANCUN,
        4 => SpecId::PRAGUE,
        _ => return Err(PoolError::TxTypeNotSupported),
    };
    if !spec.is_enabled_in(type_fork) {
        return Err(PoolError::TxTypeNotSupported);
    }
    if envelope.chain_id().is_some_and(|id| id != config.chain_id) {
        return Err(PoolError::InvalidChainId);
    }
    if tx.encoded_len > config.max_tx_bytes {
        return Err(PoolError::OversizedData);
    }
    if tx.nonce() == u64::MAX {
        return Err(PoolError::NonceMax);
    }
    if tx.gas_limit() > config.block_gas_limit {
        return Err(PoolError::ExceedsBlockGasLimit);
    }
    if tx.max_priority_fee_per_gas().is_some_and(|tip| tip > tx.max_fee_per_gas()) {
        return Err(PoolError::TipAboveFeeCap);
    }
    if tx.max_fee_per_gas() < config.min_fee_cap {
        return Err(PoolError::Underpriced);
    }
    if tx.max_cost().is_none() {
        return Err(PoolError::GasUintOverflow);
    }
    if envelope.is_create() && spec.is_enabled_in(SpecId::SHANGHAI) && envelope.input().len() > MAX_INITCODE_SIZE {
        return Err(PoolError::MaxInitCodeSizeExceeded);
    }
    if tx.tx_type() == 3 {
        check_blobs(tx, config)?;
    }
    let env = TxEnv::from_recovered_tx(envelope, tx.sender);
    let gas = calculate_initial_tx_gas_for_tx(&env, spec, None);
    let floor = if spec.is_enabled_in(SpecId::PRAGUE) { gas.floor_gas } else { 0 };
    let intrinsic = gas.initial_regular_gas.saturating_add(gas.initial_state_gas).max(floor);
    if tx.gas_limit() < intrinsic {
        return Err(PoolError::IntrinsicGasTooLow);
    }
    Ok(())
}

/// A blob transaction's hashes and sidecar: at least one blob and at most the per-transaction
/// limit, the sidecar form of the fork (cell proofs from Osaka on), commitments that hash to the
/// versioned hashes, and valid KZG proofs.
fn check_blobs(tx: &PooledTx, config: &ValidationConfig) -> Result<(), PoolError> {
    let hashes = tx.envelope.blob_versioned_hashes().unwrap_or_default();
    if hashes.is_empty() {
        return Err(PoolError::BlobMissingHashes);
    }
    if hashes.len() > config.max_blobs_per_tx {
        return Err(PoolError::TooManyBlobs { have: hashes.len(), max: config.max_blobs_per_tx });
    }
    // Transactions built by the node itself or read from a block carry no sidecar; only those
    // that arrive over the wire must (see `decode_pooled`).
    let Some(sidecar) = &tx.sidecar else { return Ok(()) };
    let osaka = config.spec.is_enabled_in(SpecId::OSAKA);
    match sidecar.as_ref() {
        BlobTransactionSidecarVariant::Eip4844(_) if osaka => return Err(PoolError::BlobSidecar("legacy blob proofs are not accepted from Osaka on, send cell proofs".into())),
        BlobTransactionSidecarVariant::Eip7594(_) if !osaka => return Err(PoolError::BlobSidecar("cell proofs are not accepted before Osaka".into())),
        _ => {}
    }
    sidecar.validate(hashes, EnvKzgSettings::Default.get()).map_err(|e| PoolError::BlobSidecar(e.to_string()))
}

/// Checks against the sender's account at the head: nonce, balance, code.
pub fn check_stateful(tx: &PooledTx, account: &SenderAccount, config: &ValidationConfig) -> Result<(), PoolError> {
    if !account.code.is_empty() && !is_delegation(&account.code) {
        return Err(PoolError::SenderNotEoa);
    }
    if tx.nonce() < account.nonce {
        return Err(PoolError::NonceTooLow);
    }
    if tx.nonce() - account.nonce > config.max_nonce_gap {
        return Err(PoolError::NonceTooHigh);
    }
    let cost = tx.max_cost().ok_or(PoolError::GasUintOverflow)?;
    if account.balance < cost {
        return Err(PoolError::InsufficientFunds);
    }
    Ok(())
}
