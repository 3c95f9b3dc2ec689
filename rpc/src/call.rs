//! `eth_call` and `eth_estimateGas`: one transaction executed with revm on the state after a
//! block, in that block's environment, without committing. Nonce and base fee are not checked
//! (a call needs neither), as in geth.

use crate::{
    context::RpcContext,
    error::{internal, reverted, server},
};
use alloy_eips::BlockId;
use alloy_primitives::{TxKind, B256, U64};
use alloy_rpc_types_eth::TransactionRequest;
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_executor::{
    evm::build_evm,
    revm::{
        context::{
            result::{EVMError, ExecutionResult, InvalidTransaction},
            CfgEnv, TxEnv,
        },
        context_interface::Cfg,
        database::WrapDatabaseRef,
        ExecuteEvm,
    },
};

type Result<T> = std::result::Result<T, ErrorObjectOwned>;

/// geth's message for a transaction that cannot run at all.
pub fn invalid_tx_message(e: &InvalidTransaction) -> String {
    match e {
        InvalidTransaction::LackOfFundForMaxFee { .. } | InvalidTransaction::OverflowPaymentInTransaction => {
            "insufficient funds for gas * price + value".into()
        }
        InvalidTransaction::CallGasCostMoreThanGasLimit { .. } | InvalidTransaction::GasFloorMoreThanGasLimit { .. } => "intrinsic gas too low".into(),
        InvalidTransaction::CallerGasLimitMoreThanBlock => "exceeds block gas limit".into(),
        InvalidTransaction::GasPriceLessThanBasefee => "max fee per gas less than block base fee".into(),
        InvalidTransaction::PriorityFeeGreaterThanMaxFee => "max priority fee per gas higher than max fee per gas".into(),
        InvalidTransaction::RejectCallerWithCode => "sender not an eoa".into(),
        InvalidTransaction::CreateInitCodeSizeLimit => "max initcode size exceeded".into(),
        other => other.to_string(),
    }
}

/// The executor's transaction for a call request.
pub fn tx_env(request: &TransactionRequest, chain_id: u64, gas: u64) -> TxEnv {
    let mut tx = TxEnv { caller: request.from.unwrap_or_default(), chain_id: Some(chain_id), gas_limit: gas, ..Default::default() };
    tx.kind = request.to.unwrap_or(TxKind::Create);
    tx.value = request.value.unwrap_or_default();
    tx.data = request.input.input().cloned().unwrap_or_default();
    if let Some(list) = &request.access_list {
        tx.access_list = list.clone();
    }
    match (request.gas_price, request.max_fee_per_gas) {
        (Some(price), _) => {
            tx.gas_price = price;
            tx.tx_type = if request.access_list.is_some() { 1 } else { 0 };
        }
        (None, Some(max_fee)) => {
            tx.gas_price = max_fee;
            tx.gas_priority_fee = Some(request.max_priority_fee_per_gas.unwrap_or(0).min(max_fee));
            tx.tx_type = 2;
        }
        (None, None) if request.max_priority_fee_per_gas.is_some() || request.access_list.is_some() => {
            tx.gas_price = 0;
            tx.gas_priority_fee = Some(0);
            tx.tx_type = 2;
        }
        (None, None) => {}
    }
    tx
}

/// The most gas a call may use: the block's gas limit, and since Osaka the EIP-7825 cap.
fn gas_cap(header: &alloy_consensus::Header, cfg: &CfgEnv) -> u64 {
    header.gas_limit.min(cfg.tx_gas_limit_cap())
}

/// Executes `request` on the state after block `id` with gas `gas` (the block's gas limit when
/// `None`).
pub fn execute(ctx: &RpcContext, request: &TransactionRequest, id: Option<BlockId>, gas: Option<u64>) -> Result<ExecutionResult> {
    execute_with_state(ctx, request, id, gas).map(|(result, _, _)| result)
}

/// Like [`execute`], also returning the accounts and slots the transaction loaded and the
/// block's fee recipient.
pub fn execute_with_state(
    ctx: &RpcContext,
    request: &TransactionRequest,
    id: Option<BlockId>,
    gas: Option<u64>,
) -> Result<(ExecutionResult, pseq_executor::revm::state::EvmState, alloy_primitives::Address)> {
    let storage = ctx.sequencer.storage();
    let number = ctx.resolve(id)?;
    let header = storage.header_by_number(number).map_err(internal)?.ok_or_else(|| server("header not found"))?;
    let input = ctx.sequencer.rules().block_input(&header, Vec::new(), None).map_err(internal)?;
    let mut cfg = input.cfg;
    cfg.disable_nonce_check = true;
    cfg.disable_base_fee = true;
    cfg.disable_block_gas_limit = true;
    let gas = gas.or(request.gas).unwrap_or_else(|| gas_cap(&header, &cfg));
    let tx = tx_env(request, ctx.sequencer.spec().chain_id, gas);
    let view = storage.state_at(number).map_err(internal)?;
    let mut block = input.block;
    if tx.gas_price == 0 && tx.gas_priority_fee.unwrap_or(0) == 0 {
        // As geth: a call without a gas price sees a zero base fee.
        block.basefee = 0;
    }
    let coinbase = block.beneficiary;
    let mut evm = build_evm(WrapDatabaseRef(view), cfg, block);
    match evm.transact(tx) {
        Ok(outcome) => Ok((outcome.result, outcome.state, coinbase)),
        Err(EVMError::Transaction(e)) => Err(server(invalid_tx_message(&e))),
        Err(e) => Err(internal(e)),
    }
}

/// The output of a successful call; a revert becomes a code-3 error.
fn call(ctx: &RpcContext, request: &TransactionRequest, id: Option<BlockId>) -> Result<alloy_primitives::Bytes> {
    match execute(ctx, request, id, None)? {
        ExecutionResult::Success { output, .. } => Ok(output.into_data()),
        ExecutionResult::Revert { output, .. } => Err(reverted(&output)),
        ExecutionResult::Halt { reason, .. } => Err(server(format!("{reason:?}"))),
    }
}

/// The lowest gas limit with which `request` succeeds (binary search to the exact value).
pub fn estimate(ctx: &RpcContext, request: &TransactionRequest, id: Option<BlockId>) -> Result<u64> {
    let storage = ctx.sequencer.storage();
    let number = ctx.resolve(id)?;
    let header = storage.header_by_number(number).map_err(internal)?.ok_or_else(|| server("header not found"))?;
    let cfg = ctx.sequencer.rules().block_input(&header, Vec::new(), None).map_err(internal)?.cfg;
    let cap = request.gas.unwrap_or_else(|| gas_cap(&header, &cfg));
    let used = match execute(ctx, request, id, Some(cap))? {
        ExecutionResult::Success { gas, .. } => gas.tx_gas_used(),
        ExecutionResult::Revert { output, .. } => return Err(reverted(&output)),
        ExecutionResult::Halt { .. } => return Err(server(format!("gas required exceeds allowance ({cap})"))),
    };
    // A plain transfer to an account without code costs exactly 21,000 (geth's shortcut).
    if request.input.input().is_none_or(|d| d.is_empty()) {
        if let Some(TxKind::Call(to)) = request.to {
            let view = storage.state_at(number).map_err(internal)?;
            let code = pseq_executor::revm::database::DatabaseRef::basic_ref(&view, to).map_err(|e| internal(e.0))?.map(|a| a.code_hash);
            if code.is_none_or(|h| h == pseq_executor::revm::primitives::KECCAK_EMPTY) && used == 21_000 {
                return Ok(21_000);
            }
        }
    }
    let succeeds = |gas: u64| -> Result<bool> { Ok(matches!(execute(ctx, request, id, Some(gas))?, ExecutionResult::Success { .. })) };
    let mut low = used.saturating_sub(1);
    let mut high = cap;
    // Most calls succeed with what they used plus the 1/64 kept back by CALLs and a stipend.
    let optimistic = used.saturating_add(2_300).saturating_mul(64) / 63;
    if optimistic < high {
        if succeeds(optimistic)? {
            high = optimistic;
        } else {
            low = optimistic;
        }
    }
    while low + 1 < high {
        let mid = low + (high - low) / 2;
        if succeeds(mid)? {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(high)
}

/// `eth_createAccessList`: the slots the call reads or writes (every address with them) and the
/// addresses it touches besides the sender, the recipient, the fee recipient and precompiles;
/// `gasUsed` of the call with that list, and the revert as `error`.
fn create_access_list(ctx: &RpcContext, request: &TransactionRequest, id: Option<BlockId>) -> Result<serde_json::Value> {
    let (_, state, coinbase) = execute_with_state(ctx, request, id, None)?;
    let from = request.from.unwrap_or_default();
    let to = match request.to {
        Some(TxKind::Call(to)) => Some(to),
        _ => None,
    };
    let is_precompile = |a: &alloy_primitives::Address| {
        let n = alloy_primitives::U256::from_be_slice(a.as_slice());
        n >= alloy_primitives::U256::from(1) && (n <= alloy_primitives::U256::from(0x11) || n == alloy_primitives::U256::from(0x100))
    };
    let mut list: Vec<alloy_eips::eip2930::AccessListItem> = Vec::new();
    let mut addresses: Vec<_> = state.keys().copied().collect();
    addresses.sort();
    for address in addresses {
        let account = &state[&address];
        let mut keys: Vec<B256> = account.storage.keys().map(|k| B256::from(*k)).collect();
        keys.sort();
        let excluded = address == from || Some(address) == to || address == coinbase || is_precompile(&address);
        if keys.is_empty() && excluded {
            continue;
        }
        list.push(alloy_eips::eip2930::AccessListItem { address, storage_keys: keys });
    }
    let access_list = alloy_eips::eip2930::AccessList(list);
    let mut with_list = request.clone();
    with_list.access_list = Some(access_list.clone());
    let (result, _, _) = execute_with_state(ctx, &with_list, id, None)?;
    let mut answer = serde_json::json!({ "accessList": access_list, "gasUsed": U64::from(result.tx_gas_used()) });
    match result {
        ExecutionResult::Revert { .. } => answer["error"] = "execution reverted".into(),
        ExecutionResult::Halt { reason, .. } => answer["error"] = format!("{reason:?}").into(),
        ExecutionResult::Success { .. } => {}
    }
    Ok(answer)
}

/// Registers `eth_call` and `eth_estimateGas`.
pub fn register(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_blocking_method("eth_call", |params, ctx, _| {
        let mut seq = params.sequence();
        let request: TransactionRequest = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        call(&ctx, &request, id)
    })?;
    module.register_blocking_method("eth_createAccessList", |params, ctx, _| {
        let mut seq = params.sequence();
        let request: TransactionRequest = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        create_access_list(&ctx, &request, id)
    })?;
    module.register_blocking_method("eth_estimateGas", |params, ctx, _| {
        let mut seq = params.sequence();
        let request: TransactionRequest = seq.next()?;
        let id: Option<BlockId> = seq.optional_next()?;
        estimate(&ctx, &request, id).map(U64::from)
    })?;
    Ok(())
}
