//! Block-level rules shared by both execution paths: the system calls before and after the
//! transactions (EIP-4788, EIP-2935, EIP-7002, EIP-7251), EIP-6110 deposit requests, pre-merge
//! block and ommer rewards, the DAO fork's balance move and withdrawals.

use crate::{block::BlockInput, error::BlockError, evm::build_evm, overlay::BlockOverlay, receipt::TxReceipt, state::StateSource};
use alloy_eips::{
    eip2935::HISTORY_STORAGE_ADDRESS,
    eip4788::{BEACON_ROOTS_ADDRESS, SYSTEM_ADDRESS},
    eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS,
    eip7251::CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS,
    eip7685::Requests,
};
use alloy_primitives::{Address, Bytes, U256};
use revm::{
    context::result::ExecutionResult,
    database::{DatabaseCommit, DatabaseRef},
    handler::SystemCallEvm,
    primitives::{hardfork::SpecId, KECCAK_EMPTY},
};

/// Gas a system call may spend, Frontier..Osaka.
const SYSTEM_CALL_GAS: u64 = 30_000_000;

/// One ether in wei.
const ETHER: u128 = 1_000_000_000_000_000_000;

/// Runs the pre-transaction rules: the DAO fork's drain (at its block, before any transaction, as
/// geth does), the EIP-2935 parent-hash and EIP-4788 beacon-root system calls.
pub fn apply_pre_block<S: StateSource>(overlay: &mut BlockOverlay<'_, S>, input: &BlockInput) -> Result<(), BlockError> {
    let spec = input.cfg.spec;
    if input.dao_fork {
        let mut drained = U256::ZERO;
        for account in alloy_evm::eth::dao_fork::DAO_HARDFORK_ACCOUNTS {
            drained += overlay.drain_balance(account)?;
        }
        overlay.increment_balance(alloy_evm::eth::dao_fork::DAO_HARDFORK_BENEFICIARY, drained)?;
    }
    let number = input.block.number;
    if spec.is_enabled_in(SpecId::PRAGUE) && !number.is_zero() {
        system_call(overlay, input, HISTORY_STORAGE_ADDRESS, input.parent_hash.0.into(), false)?;
    }
    if spec.is_enabled_in(SpecId::CANCUN) && !number.is_zero() {
        if let Some(root) = input.parent_beacon_block_root {
            system_call(overlay, input, BEACON_ROOTS_ADDRESS, root.0.into(), false)?;
        }
    }
    Ok(())
}

/// Runs the post-transaction rules and returns the block's EIP-7685 requests (Prague on).
pub fn apply_post_block<S: StateSource>(
    overlay: &mut BlockOverlay<'_, S>,
    input: &BlockInput,
    receipts: &[TxReceipt],
) -> Result<Option<Requests>, BlockError> {
    let spec = input.cfg.spec;
    let requests = if spec.is_enabled_in(SpecId::PRAGUE) {
        let mut requests = Requests::default();
        let deposits = deposit_requests(input.deposit_contract, receipts)?;
        if !deposits.is_empty() {
            requests.push_request_with_type(0, deposits);
        }
        let withdrawals = system_call(overlay, input, WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS, Bytes::new(), true)?;
        if !withdrawals.is_empty() {
            requests.push_request_with_type(1, withdrawals);
        }
        let consolidations = system_call(overlay, input, CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS, Bytes::new(), true)?;
        if !consolidations.is_empty() {
            requests.push_request_with_type(2, consolidations);
        }
        Some(requests)
    } else {
        None
    };

    if !spec.is_enabled_in(SpecId::MERGE) {
        let base = if spec.is_enabled_in(SpecId::PETERSBURG) {
            2 * ETHER
        } else if spec.is_enabled_in(SpecId::BYZANTIUM) {
            3 * ETHER
        } else {
            5 * ETHER
        };
        let number: u64 = input.block.number.saturating_to();
        let mut miner_reward = base;
        for ommer in &input.ommers {
            miner_reward += base / 32;
            let ommer_reward = ((8 + ommer.number).saturating_sub(number) as u128) * base / 8;
            overlay.increment_balance(ommer.beneficiary, U256::from(ommer_reward))?;
        }
        overlay.increment_balance(input.block.beneficiary, U256::from(miner_reward))?;
    }

    for withdrawal in input.withdrawals.iter().flatten() {
        let wei = U256::from(withdrawal.amount_gwei) * U256::from(1_000_000_000u64);
        overlay.increment_balance(withdrawal.address, wei)?;
    }
    Ok(requests)
}

/// Topic of the deposit contract's `DepositEvent(bytes,bytes,bytes,bytes,bytes)`.
const DEPOSIT_EVENT_TOPIC: alloy_primitives::B256 =
    alloy_primitives::b256!("649bbc62d0e31342afea4e5cd82d4049e7e1ee912fc0889aa790803be39038c5");

/// EIP-6110 deposit requests from the deposit contract's logs, with the layout checks the
/// amended EIP requires: the event data is exactly the ABI encoding of five byte strings of
/// 48, 32, 8, 96 and 8 bytes at the standard offsets; anything else makes the block invalid.
fn deposit_requests(contract: Address, receipts: &[TxReceipt]) -> Result<Vec<u8>, BlockError> {
    // (offset word position, expected offset, expected size)
    const FIELDS: [(usize, usize, usize); 5] = [(0, 160, 48), (32, 256, 32), (64, 320, 8), (96, 384, 96), (128, 512, 8)];
    let mut out = Vec::new();
    for log in receipts.iter().flat_map(|r| r.logs.iter()) {
        if log.address != contract || log.topics().first() != Some(&DEPOSIT_EVENT_TOPIC) {
            continue;
        }
        let data = &log.data.data;
        if data.len() != 576 {
            return Err(BlockError::InvalidDepositLog(format!("deposit event data is {} bytes, not 576", data.len())));
        }
        let word = |at: usize| U256::from_be_slice(&data[at..at + 32]);
        for (position, offset, size) in FIELDS {
            if word(position) != U256::from(offset) || word(offset) != U256::from(size) {
                return Err(BlockError::InvalidDepositLog("deposit event layout is not the standard one".into()));
            }
            out.extend_from_slice(&data[offset + 32..offset + 32 + size]);
        }
    }
    Ok(out)
}

/// Calls a system contract as `SYSTEM_ADDRESS` and commits what it changed. A request contract
/// (`required`) must have code and must succeed; the others are skipped without code.
fn system_call<S: StateSource>(
    overlay: &mut BlockOverlay<'_, S>,
    input: &BlockInput,
    contract: Address,
    data: Bytes,
    required: bool,
) -> Result<Bytes, BlockError> {
    let has_code = overlay.basic_ref(contract)?.is_some_and(|a| a.code_hash != KECCAK_EMPTY);
    if !has_code {
        if required {
            return Err(BlockError::SystemCall { contract, message: "system contract has no code".into() });
        }
        return Ok(Bytes::new());
    }
    let mut evm = build_evm(&mut *overlay, input.cfg.clone(), input.block.clone());
    let outcome = evm
        .system_call_with_caller(SYSTEM_ADDRESS, contract, data)
        .map_err(|e| BlockError::SystemCall { contract, message: e.to_string() })?;
    // revm 43 gives system calls 30M gas plus an EIP-8037 (Amsterdam) state-gas reservoir. Up to
    // Osaka the budget is 30M and a call that needs more runs out of gas (EEST
    // `test_system_contract_errors`).
    let overspent = outcome.result.gas().total_gas_spent() > SYSTEM_CALL_GAS;
    let output = match outcome.result {
        ExecutionResult::Success { output, .. } if !overspent => output.into_data(),
        other if required => {
            return Err(BlockError::SystemCall { contract, message: format!("system call failed: {other:?}") })
        }
        _ => Bytes::new(),
    };
    evm.ctx.journaled_state.database.commit(outcome.state);
    Ok(output)
}
