//! Held balances: an account's balance read only when the EVM looks at it.
//!
//! Calling a contract loads its account, balance included, so every transaction that calls WETH
//! reads WETH's ether balance, and every deposit writes it: on the mainnet blocks this was the
//! most common conflict left (docs/benchmarks.md, "Where the remaining conflicts are"). Yet
//! most of those transactions never look at the balance: a `transfer` of WETH tokens does not,
//! and a deposit only adds to it.
//!
//! A transaction holds the balance of an account that cannot be empty whatever its balance (it
//! has code, or a nonce above zero): the EVM is given [`HELD_BALANCE`] instead of the balance,
//! the read records only the account's nearest absolute entry (its code, its nonce: not the
//! credits above it), and what the transaction added becomes a [`Value::Credit`], applied in
//! block order like the beneficiary's fees. Nothing else in the EVM depends on the balance of an
//! account that cannot be empty (the new-account gas of a call and EIP-161's deletion ask only
//! whether it is empty), except the instructions that look at it: `BALANCE`, `SELFBALANCE`, and
//! those that take from it: `CALL`/`CALLCODE` with value, `CREATE`/`CREATE2` (which also raise
//! its nonce) and `SELFDESTRUCT`. Those run wrapped: before the instruction, the account is
//! read exactly ([`VersionedView::release`]) and the EVM's copy is moved from the held balance
//! to the real one, keeping what the transaction added; one not loaded yet will be read exactly
//! when the instruction loads it. revm journals balance changes inside a transaction as
//! transfers (relative), so moving the copy by a constant keeps every revert exact.
//!
//! A balance alone does not make an account holdable, although no delta can take it to zero: a
//! contract created at a funded address (a counterfactual deployment) keeps the balance, so the
//! creation reads it. An account with code or a nonce cannot be created over (it collides).
//!
//! The beneficiary is held too: a searcher's tip paid from a contract joins the transaction's
//! fee in one credit, instead of waiting for every lower transaction's fee (the beneficiary's
//! entries start as ESTIMATEs of credits, which a held read walks past). Never held: the sender
//! (it pays for gas), and every account of a transaction with an EIP-7702 authorization list (an
//! authority's nonce is checked) or of a lazy plain transfer (both sides are deltas already).
//!
//! [`Value::Credit`]: super::mv_memory::Value::Credit

use super::view::{ViewError, VersionedView, HELD_BALANCE};
use crate::{
    evm::{PseqContext, PseqEvm},
    state::StateSource,
};
use alloy_primitives::{Address, B256};
use revm::{
    bytecode::opcode,
    context_interface::context::ContextError,
    interpreter::{
        instructions::{contract, host},
        interpreter::EthInterpreter,
        interpreter_types::InputsTr,
        Instruction, InstructionContext, InstructionExecResult, InstructionResult,
    },
};

type Host<'v, S> = PseqContext<VersionedView<'v, S>>;
type Context<'a, 'v, S> = InstructionContext<'a, Host<'v, S>, EthInterpreter>;

/// Replaces the instructions that look at or take from an account's balance by wrapped ones on
/// a worker's EVM.
pub fn install_hooks<S: StateSource>(evm: &mut PseqEvm<VersionedView<'_, S>>) {
    // DELEGATECALL and STATICCALL move no value.
    #[allow(clippy::type_complexity)]
    let hooks: [(u8, fn(Context<'_, '_, S>) -> InstructionExecResult); 7] = [
        (opcode::BALANCE, balance::<S>),
        (opcode::SELFBALANCE, selfbalance::<S>),
        (opcode::CALL, call::<S>),
        (opcode::CALLCODE, callcode::<S>),
        (opcode::CREATE, create::<S>),
        (opcode::CREATE2, create2::<S>),
        (opcode::SELFDESTRUCT, selfdestruct::<S>),
    ];
    for (code, hook) in hooks {
        let gas = evm.instruction.gas_table()[code as usize];
        evm.instruction.insert_instruction(code, Instruction::new(hook), gas);
    }
}

/// Moves the EVM's copy of `address` onto its real balance if the transaction holds it (see the
/// module documentation); otherwise makes sure it is read exactly when loaded.
fn release<S: StateSource>(host: &mut Host<'_, S>, address: Address) -> InstructionExecResult {
    let error = match host.journaled_state.database.release(address) {
        Ok(None) => return Ok(()),
        Ok(Some(real)) => match host.journaled_state.inner.state.get_mut(&address) {
            // Held accounts are loaded: the EVM was given the held balance when it loaded them.
            None => ViewError::HeldBalanceOverflow,
            Some(account) => {
                // An account gone since it was loaded: the load's validation fails.
                let (real_balance, real_nonce) = real.map_or((alloy_primitives::U256::ZERO, 0), |real| (real.balance, real.nonce));
                let credited = account.info.balance.checked_sub(HELD_BALANCE);
                match credited.and_then(|credited| real_balance.checked_add(credited)) {
                    Some(balance) => {
                        account.info.balance = balance;
                        // Nothing the transaction did changed a held account's nonce (creating
                        // releases first); a nonce raised by a lower transaction's delta since
                        // the account was loaded is taken in.
                        account.info.nonce = real_nonce;
                        return Ok(());
                    }
                    None => ViewError::HeldBalanceOverflow,
                }
            }
        },
        Err(error) => error,
    };
    host.error = Err(ContextError::Db(error));
    Err(InstructionResult::FatalExternalError)
}

fn word_address(word: alloy_primitives::U256) -> Address {
    Address::from_word(B256::from(word))
}

fn balance<S: StateSource>(context: Context<'_, '_, S>) -> InstructionExecResult {
    if let Ok(word) = context.interpreter.stack.peek(0) {
        release(context.host, word_address(word))?;
    }
    host::balance(context)
}

fn selfbalance<S: StateSource>(context: Context<'_, '_, S>) -> InstructionExecResult {
    release(context.host, context.interpreter.input.target_address())?;
    host::selfbalance(context)
}

/// Releases the executing account before it sends value (the value is the third word).
fn release_if_sending<S: StateSource>(context: &mut Context<'_, '_, S>) -> InstructionExecResult {
    if context.interpreter.stack.peek(2).is_ok_and(|value| !value.is_zero()) {
        release(context.host, context.interpreter.input.target_address())?;
    }
    Ok(())
}

fn call<S: StateSource>(mut context: Context<'_, '_, S>) -> InstructionExecResult {
    release_if_sending(&mut context)?;
    contract::call::<{ opcode::CALL }, _, _>(context)
}

fn callcode<S: StateSource>(mut context: Context<'_, '_, S>) -> InstructionExecResult {
    release_if_sending(&mut context)?;
    contract::call::<{ opcode::CALLCODE }, _, _>(context)
}

fn create<S: StateSource>(context: Context<'_, '_, S>) -> InstructionExecResult {
    release(context.host, context.interpreter.input.target_address())?;
    contract::create::<false, _, _>(context)
}

fn create2<S: StateSource>(context: Context<'_, '_, S>) -> InstructionExecResult {
    release(context.host, context.interpreter.input.target_address())?;
    contract::create::<true, _, _>(context)
}

fn selfdestruct<S: StateSource>(context: Context<'_, '_, S>) -> InstructionExecResult {
    release(context.host, context.interpreter.input.target_address())?;
    host::selfdestruct(context)
}
