//! Building revm instances, and the handler the parallel path runs transactions with.

use revm::{
    context::{BlockEnv, CfgEnv, Context, TxEnv},
    context_interface::{ContextTr, JournalTr},
    database::Database,
    handler::{EthFrame, EvmTr, EvmTrError, FrameResult, Handler},
    interpreter::interpreter::EthInterpreter,
    state::EvmState,
    MainBuilder, MainContext,
};
use std::marker::PhantomData;

/// The revm context pseq executes with.
pub type PseqContext<DB> = Context<BlockEnv, TxEnv, CfgEnv, DB>;

/// The revm instance pseq executes with.
pub type PseqEvm<DB> = revm::handler::MainnetEvm<PseqContext<DB>>;

/// A mainnet EVM over `db` for one block's configuration.
pub fn build_evm<DB: Database>(db: DB, cfg: CfgEnv, block: BlockEnv) -> PseqEvm<DB> {
    Context::mainnet().with_db(db).with_cfg(cfg).with_block(block).build_mainnet()
}

/// revm's mainnet handler (the trait's default stages) with the beneficiary reward left out: the parallel path pays the fee
/// itself, as a deferred balance delta, so that paying it creates no dependency between
/// transactions. Everything else (validation, execution, refunds) is revm's own code.
pub struct DeferredFeeHandler<EVM, ERROR> {
    _marker: PhantomData<(EVM, ERROR)>,
}

impl<EVM, ERROR> Default for DeferredFeeHandler<EVM, ERROR> {
    fn default() -> Self {
        Self { _marker: PhantomData }
    }
}

impl<EVM, ERROR> Handler for DeferredFeeHandler<EVM, ERROR>
where
    EVM: EvmTr<Context: ContextTr<Journal: JournalTr<State = EvmState>>, Frame = EthFrame<EthInterpreter>>,
    ERROR: EvmTrError<EVM>,
{
    type Evm = EVM;
    type Error = ERROR;
    type HaltReason = revm::context::result::HaltReason;

    fn reward_beneficiary(&self, _evm: &mut EVM, _result: &mut FrameResult) -> Result<(), ERROR> {
        Ok(())
    }
}
