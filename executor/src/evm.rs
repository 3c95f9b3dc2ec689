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

/// Loads the KZG trusted setup that the point-evaluation precompile (`0x0a`, EIP-4844) verifies
/// proofs with, and returns how long it took. The setup is loaded once per process, on first use,
/// and loading it takes about a second of CPU: a node calls this on a thread of its own at start,
/// so that the first block calling the precompile does not wait for it. A block that calls it
/// while loading is under way waits for that load instead of starting its own.
pub fn preload_kzg_setup() -> std::time::Duration {
    let started = std::time::Instant::now();
    // All-zero inputs are not a valid proof: the answer is `false`, the setup is loaded either way.
    let _ = revm::precompile::kzg_point_evaluation::verify_kzg_proof(&[0; 48], &[0; 32], &[0; 32], &[0; 48]);
    started.elapsed()
}
