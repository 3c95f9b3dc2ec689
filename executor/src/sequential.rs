//! The sequential reference path: plain revm, one transaction after the other, each committed
//! into the block overlay before the next one runs. It is the oracle for the parallel path.

use crate::{
    block::{check_block_limits, BlockInput, ChunkStart, InvalidTxPolicy, TxPhase},
    error::BlockError,
    evm::build_evm,
    overlay::BlockOverlay,
    state::StateSource,
};
use revm::{
    context::{result::EVMError, TxEnv},
    database::DatabaseCommit,
    ExecuteEvm,
};

/// Executes `txs` in order on `overlay`, committing each one. `start` places them in the block
/// (the first one's index, the gas already used before them).
pub(crate) fn execute_transactions<S: StateSource>(
    overlay: &mut BlockOverlay<'_, S>,
    input: &BlockInput,
    txs: &[TxEnv],
    policy: InvalidTxPolicy,
    start: ChunkStart,
) -> Result<TxPhase, BlockError> {
    let mut phase = start.phase();
    phase.reserve(txs.len());
    overlay.reserve(txs.len() * 2);
    let mut evm = build_evm(&mut *overlay, input.cfg.clone(), input.block.clone());
    for (local, tx) in txs.iter().enumerate() {
        let index = start.first_index + local;
        if let Err(error) = check_block_limits(input, index, tx, phase.gas_used, phase.blob_gas_used) {
            match policy {
                InvalidTxPolicy::Reject => return Err(error),
                InvalidTxPolicy::Skip => break,
            }
        }
        match evm.transact(tx.clone()) {
            Ok(outcome) => {
                evm.ctx.journaled_state.database.commit(outcome.state);
                phase.include(index, tx, outcome.result);
            }
            Err(EVMError::Transaction(reason)) => match policy {
                InvalidTxPolicy::Reject => return Err(BlockError::InvalidTransaction { index, reason }),
                InvalidTxPolicy::Skip => phase.skipped.push((index, reason.to_string())),
            },
            Err(EVMError::Database(error)) => return Err(BlockError::State(error)),
            Err(other) => return Err(BlockError::Evm(other.to_string())),
        }
    }
    Ok(phase)
}
