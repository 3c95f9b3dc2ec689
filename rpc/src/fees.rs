//! Fee suggestions: `eth_gasPrice`, `eth_maxPriorityFeePerGas`, `eth_blobBaseFee`,
//! `eth_feeHistory`.

use crate::{
    chain::block_by_id,
    context::RpcContext,
    error::{internal, invalid_params},
    send::SUGGESTED_TIP,
};
use alloy_consensus::Transaction as _;
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::U256;
use alloy_rpc_types_eth::FeeHistory;
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_builder::next_base_fee;

/// Most blocks one `eth_feeHistory` covers (geth's limit).
const MAX_FEE_HISTORY_BLOCKS: u64 = 1024;

fn fee_history(ctx: &RpcContext, count: u64, newest: BlockNumberOrTag, percentiles: Option<Vec<f64>>) -> Result<FeeHistory, ErrorObjectOwned> {
    if let Some(p) = &percentiles {
        if p.len() > 100 || p.iter().any(|x| !(0.0..=100.0).contains(x)) || p.windows(2).any(|w| w[0] > w[1]) {
            return Err(invalid_params("invalid reward percentiles"));
        }
    }
    let newest = ctx.resolve(Some(BlockId::Number(newest)))?;
    let count = count.clamp(1, MAX_FEE_HISTORY_BLOCKS).min(newest + 1);
    let oldest = newest + 1 - count;
    let mut history = FeeHistory { oldest_block: oldest, ..Default::default() };
    let mut rewards = Vec::new();
    for number in oldest..=newest {
        let block = block_by_id(ctx, BlockId::number(number))?.ok_or_else(|| internal(format!("block {number} missing")))?;
        let header = &block.header;
        history.base_fee_per_gas.push(header.base_fee_per_gas.unwrap_or_default() as u128);
        history.gas_used_ratio.push(if header.gas_limit == 0 { 0.0 } else { header.gas_used as f64 / header.gas_limit as f64 });
        if let Some(percentiles) = &percentiles {
            let receipts = ctx.sequencer.storage().receipts(&block.hash).map_err(internal)?.unwrap_or_default();
            let mut tips: Vec<(u128, u64)> = Vec::new();
            let mut previous = 0;
            for (tx, receipt) in block.body.transactions.iter().zip(&receipts) {
                let used = receipt.cumulative_gas_used().saturating_sub(previous);
                previous = receipt.cumulative_gas_used();
                tips.push((tx.effective_tip_per_gas(header.base_fee_per_gas.unwrap_or_default()).unwrap_or_default(), used));
            }
            tips.sort_unstable();
            let total: u64 = tips.iter().map(|t| t.1).sum();
            let row = percentiles
                .iter()
                .map(|p| {
                    let threshold = (total as f64 * p / 100.0) as u64;
                    let mut sum = 0;
                    for (tip, used) in &tips {
                        sum += used;
                        if sum >= threshold {
                            return *tip;
                        }
                    }
                    tips.last().map_or(0, |t| t.0)
                })
                .collect();
            rewards.push(row);
        }
    }
    let newest_header = block_by_id(ctx, BlockId::number(newest))?.ok_or_else(|| internal("newest block missing"))?.header;
    history.base_fee_per_gas.push(next_base_fee(&newest_header) as u128);
    history.reward = percentiles.map(|_| rewards);
    Ok(history)
}

/// Registers the fee methods.
pub fn register(module: &mut RpcModule<RpcContext>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_method("eth_gasPrice", |_, ctx, _| Ok::<_, ErrorObjectOwned>(U256::from(ctx.sequencer.pool().lock().base_fee() as u128 + SUGGESTED_TIP)))?;
    module.register_method("eth_baseFee", |_, ctx, _| {
        let header = ctx.sequencer.head_header().map_err(internal)?;
        Ok::<_, ErrorObjectOwned>(U256::from(next_base_fee(&header)))
    })?;
    module.register_method("eth_maxPriorityFeePerGas", |_, _, _| Ok::<_, ErrorObjectOwned>(U256::from(SUGGESTED_TIP)))?;
    module.register_method("eth_blobBaseFee", |_, ctx, _| {
        let header = ctx.sequencer.head_header().map_err(internal)?;
        let fork = ctx.sequencer.rules().fork(header.number, header.timestamp).map_err(internal)?.0;
        let fee = ctx.sequencer.rules().blob_params(&fork).and_then(|params| header.blob_fee(params)).unwrap_or(1);
        Ok::<_, ErrorObjectOwned>(U256::from(fee))
    })?;
    module.register_method("eth_feeHistory", |params, ctx, _| {
        let mut seq = params.sequence();
        let count: alloy_primitives::U64 = seq.next()?;
        let newest: BlockNumberOrTag = seq.next()?;
        let percentiles: Option<Vec<f64>> = seq.optional_next()?;
        fee_history(ctx, count.to::<u64>(), newest, percentiles)
    })?;
    Ok(())
}
