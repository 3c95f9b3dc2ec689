//! `debug_traceTransaction`, `debug_traceBlockByNumber` and `debug_traceBlockByHash` with geth's
//! `callTracer` (the tree of calls and creations, with gas, input, output and errors) and
//! `prestateTracer` (every account the transaction touched, as it was before it), and the default
//! struct logger (one entry per opcode: pc, op, gas, gas cost, depth, stack, memory, storage). A transaction
//! is traced on the state its block saw before it: the parent's state, the block's system calls
//! and the transactions before it, re-executed on the sequential path.

use crate::{
    chain::block_by_id,
    context::RpcContext,
    convert::StoredBlock,
    error::{internal, invalid_params, server},
};
use alloy_eips::BlockId;
use alloy_evm::FromRecoveredTx;
use alloy_primitives::{Address, Bytes, B256, U256};
use jsonrpsee::{types::ErrorObjectOwned, RpcModule};
use pseq_executor::{
    evm::build_evm,
    execute_block,
    revm::{
        context::{Context, TxEnv},
        context_interface::{ContextTr, JournalTr},
        database::{DatabaseRef, WrapDatabaseRef},
        bytecode::opcode::OpCode,
        interpreter::{
            interpreter::EthInterpreter,
            interpreter_types::{Jumps, LoopControl, MemoryTr},
            CallInputs, CallOutcome, CallScheme, CreateInputs, CreateOutcome, CreateScheme, Interpreter,
        },
        primitives::KECCAK_EMPTY,
        ExecuteEvm, InspectEvm, Inspector, MainBuilder, MainContext,
    },
    BlockRules, ExecutionOptions,
};
use pseq_storage::StateView;
use serde_json::{json, Map, Value};

type Result<T> = std::result::Result<T, ErrorObjectOwned>;

/// The state after a prefix of a block: the parent's state with the prefix's changes on top.
type AfterPrefix<'a> = pseq_builder::DiffOverlay<'a, StateView<'a>>;

/// One frame of the call tracer.
#[derive(Debug, Default)]
struct Frame {
    kind: &'static str,
    from: Address,
    to: Option<Address>,
    value: Option<U256>,
    gas: u64,
    gas_used: u64,
    input: Bytes,
    output: Bytes,
    error: Option<String>,
    calls: Vec<Frame>,
}

impl Frame {
    fn json(&self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), json!(self.kind));
        out.insert("from".into(), json!(self.from));
        if let Some(to) = self.to {
            out.insert("to".into(), json!(to));
        }
        if let Some(value) = self.value {
            out.insert("value".into(), json!(value));
        }
        out.insert("gas".into(), json!(format!("{:#x}", self.gas)));
        out.insert("gasUsed".into(), json!(format!("{:#x}", self.gas_used)));
        out.insert("input".into(), json!(self.input));
        if !self.output.is_empty() {
            out.insert("output".into(), json!(self.output));
        }
        if let Some(error) = &self.error {
            out.insert("error".into(), json!(error));
            if let Some(reason) = crate::error::revert_reason(&self.output) {
                out.insert("revertReason".into(), json!(reason));
            }
        }
        if !self.calls.is_empty() {
            out.insert("calls".into(), Value::Array(self.calls.iter().map(Frame::json).collect()));
        }
        Value::Object(out)
    }
}

/// geth's `callTracer` as a revm inspector.
#[derive(Debug, Default)]
struct CallTracer {
    stack: Vec<Frame>,
    root: Option<Frame>,
}

impl CallTracer {
    fn close(&mut self, mut frame: Frame) {
        frame.calls.shrink_to_fit();
        match self.stack.last_mut() {
            Some(parent) => parent.calls.push(frame),
            None => self.root = Some(frame),
        }
    }
}

fn error_of(result: &pseq_executor::revm::interpreter::InterpreterResult) -> Option<String> {
    if result.is_ok() {
        None
    } else if result.is_revert() {
        Some("execution reverted".into())
    } else {
        Some(format!("{:?}", result.result))
    }
}

impl<CTX: ContextTr> Inspector<CTX> for CallTracer {
    fn call(&mut self, context: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        let kind = match inputs.scheme {
            CallScheme::Call => "CALL",
            CallScheme::CallCode => "CALLCODE",
            CallScheme::DelegateCall => "DELEGATECALL",
            CallScheme::StaticCall => "STATICCALL",
        };
        let value = match inputs.scheme {
            CallScheme::Call | CallScheme::CallCode => Some(inputs.value.get()),
            _ => None,
        };
        self.stack.push(Frame {
            kind,
            from: inputs.caller,
            to: Some(inputs.target_address),
            value,
            gas: inputs.gas_limit,
            input: inputs.input.bytes(context),
            ..Default::default()
        });
        None
    }

    fn call_end(&mut self, _context: &mut CTX, _inputs: &CallInputs, outcome: &mut CallOutcome) {
        if let Some(mut frame) = self.stack.pop() {
            frame.gas_used = frame.gas.saturating_sub(outcome.result.gas.remaining());
            frame.output = outcome.result.output.clone();
            frame.error = error_of(&outcome.result);
            self.close(frame);
        }
    }

    fn create(&mut self, _context: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        let kind = match inputs.scheme() {
            CreateScheme::Create2 { .. } => "CREATE2",
            _ => "CREATE",
        };
        self.stack.push(Frame {
            kind,
            from: inputs.caller(),
            value: Some(inputs.value()),
            gas: inputs.gas_limit(),
            input: inputs.init_code().clone(),
            ..Default::default()
        });
        None
    }

    fn create_end(&mut self, _context: &mut CTX, _inputs: &CreateInputs, outcome: &mut CreateOutcome) {
        if let Some(mut frame) = self.stack.pop() {
            frame.gas_used = frame.gas.saturating_sub(outcome.result.gas.remaining());
            frame.to = outcome.address;
            frame.error = error_of(&outcome.result);
            // A creation's output: the deployed code, or the revert data.
            frame.output = outcome.result.output.clone();
            self.close(frame);
        }
    }
}

/// Options of geth's default struct logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoggerOptions {
    stack: bool,
    storage: bool,
    memory: bool,
    return_data: bool,
    limit: usize,
}

/// Most steps one struct-logger trace records (a guard for the node's memory).
const MAX_STRUCT_LOGS: usize = 1_000_000;

/// geth's default tracer: one entry per executed opcode.
#[derive(Debug)]
struct StructLogger {
    options: LoggerOptions,
    logs: Vec<Value>,
    pending: Option<(Map<String, Value>, u64)>,
    /// Storage seen per contract (SLOAD results and SSTORE writes), as geth reports it.
    storage: std::collections::HashMap<Address, std::collections::BTreeMap<U256, U256>>,
}

impl<CTX: ContextTr> Inspector<CTX, EthInterpreter> for StructLogger {
    fn step(&mut self, interp: &mut Interpreter<EthInterpreter>, context: &mut CTX) {
        if self.logs.len() >= self.options.limit {
            return;
        }
        let opcode = interp.bytecode.opcode();
        let gas = interp.gas.remaining();
        let mut entry = Map::new();
        entry.insert("pc".into(), json!(interp.bytecode.pc()));
        entry.insert("op".into(), json!(OpCode::new(opcode).map_or_else(|| format!("opcode {opcode:#x}"), |o| o.as_str().to_string())));
        entry.insert("gas".into(), json!(gas));
        entry.insert("depth".into(), json!(context.journal_mut().depth() + 1));
        let stack = interp.stack.data();
        if self.options.stack {
            entry.insert("stack".into(), Value::Array(stack.iter().map(|v| json!(v)).collect()));
        }
        if self.options.memory {
            let memory = interp.memory.slice(0..interp.memory.size());
            entry.insert("memory".into(), Value::Array(memory.chunks(32).map(|w| json!(alloy_primitives::hex::encode(w))).collect()));
        }
        if self.options.storage && (opcode == 0x54 || opcode == 0x55) {
            let address = interp.input.target_address;
            let top = stack.len();
            if opcode == 0x55 && top >= 2 {
                self.storage.entry(address).or_default().insert(stack[top - 1], stack[top - 2]);
            }
            if opcode == 0x54 && top >= 1 {
                let key = stack[top - 1];
                let value = context.sload(address, key).map(|v| v.data).unwrap_or_default();
                self.storage.entry(address).or_default().insert(key, value);
            }
            let seen = self.storage.get(&address).map(|m| {
                m.iter().map(|(k, v)| (alloy_primitives::hex::encode(B256::from(*k)), json!(alloy_primitives::hex::encode(B256::from(*v))))).collect::<Map<_, _>>()
            });
            entry.insert("storage".into(), Value::Object(seen.unwrap_or_default()));
        }
        self.pending = Some((entry, gas));
    }

    fn step_end(&mut self, interp: &mut Interpreter<EthInterpreter>, _context: &mut CTX) {
        if let Some((mut entry, gas_before)) = self.pending.take() {
            entry.insert("gasCost".into(), json!(gas_before.saturating_sub(interp.gas.remaining())));
            if let Some(result) = interp.bytecode.action().as_ref().and_then(|a| a.instruction_result()) {
                if !result.is_ok() && !result.is_revert() {
                    entry.insert("error".into(), json!(format!("{result:?}")));
                }
            }
            self.logs.push(Value::Object(entry));
        }
    }
}

/// Which tracer a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracer {
    Call,
    Prestate,
    Struct(LoggerOptions),
}

fn tracer_of(options: Option<&Value>) -> Result<Tracer> {
    match options.and_then(|o| o.get("tracer")).and_then(Value::as_str) {
        Some("callTracer") => Ok(Tracer::Call),
        Some("prestateTracer") => {
            if options.and_then(|o| o.pointer("/tracerConfig/diffMode")).and_then(Value::as_bool) == Some(true) {
                return Err(invalid_params("prestateTracer diffMode is not supported yet"));
            }
            Ok(Tracer::Prestate)
        }
        Some(other) => Err(invalid_params(format!("tracer {other:?} is not supported (callTracer, prestateTracer)"))),
        None => {
            let flag = |name: &str, default: bool| options.and_then(|o| o.get(name)).and_then(Value::as_bool).unwrap_or(default);
            let limit = options.and_then(|o| o.get("limit")).and_then(Value::as_u64).filter(|l| *l > 0).map_or(MAX_STRUCT_LOGS, |l| (l as usize).min(MAX_STRUCT_LOGS));
            Ok(Tracer::Struct(LoggerOptions {
                stack: !flag("disableStack", false),
                storage: !flag("disableStorage", false),
                memory: flag("enableMemory", false),
                return_data: flag("enableReturnData", false),
                limit,
            }))
        }
    }
}

/// Traces transactions `indexes` of `block`.
fn trace_block(ctx: &RpcContext, block: &StoredBlock, indexes: &[usize], tracer: Tracer) -> Result<Vec<Value>> {
    let storage = ctx.sequencer.storage();
    let number = block.header.number;
    if number == 0 {
        return Err(server("genesis is not traceable"));
    }
    let base = storage.state_at(number - 1).map_err(internal)?;
    let mut input = ctx.sequencer.rules().block_input(&block.header, Vec::new(), None).map_err(internal)?;
    input.rules = BlockRules::PreOnly;
    let txs: Vec<TxEnv> = block.body.transactions.iter().zip(block.senders()).map(|(tx, sender)| TxEnv::from_recovered_tx(tx, sender)).collect();
    let mut out = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let prefix = execute_block(&base, &input, &txs[..index], &ExecutionOptions::sequential()).map_err(|e| internal(e.to_string()))?;
        let db: AfterPrefix<'_> = pseq_builder::DiffOverlay { base: &base, diff: &prefix.state };
        let tx = txs[index].clone();
        let trace = match tracer {
            Tracer::Call => {
                let mut evm = Context::mainnet()
                    .with_db(WrapDatabaseRef(&db))
                    .with_cfg(input.cfg.clone())
                    .with_block(input.block.clone())
                    .build_mainnet_with_inspector(CallTracer::default());
                let outcome = evm.inspect_tx(tx.clone()).map_err(|e| internal(e.to_string()))?;
                let mut root = evm.inspector.root.take().ok_or_else(|| internal("no call frame traced"))?;
                root.gas = tx.gas_limit;
                root.gas_used = outcome.result.tx_gas_used();
                root.json()
            }
            Tracer::Struct(options) => {
                let logger = StructLogger { options, logs: Vec::new(), pending: None, storage: Default::default() };
                let mut evm = Context::mainnet()
                    .with_db(WrapDatabaseRef(&db))
                    .with_cfg(input.cfg.clone())
                    .with_block(input.block.clone())
                    .build_mainnet_with_inspector(logger);
                let outcome = evm.inspect_tx(tx).map_err(|e| internal(e.to_string()))?;
                let result = &outcome.result;
                let output = result.output().cloned().unwrap_or_default();
                json!({
                    "gas": result.tx_gas_used(),
                    "failed": !result.is_success(),
                    "returnValue": alloy_primitives::hex::encode(&output),
                    "structLogs": std::mem::take(&mut evm.inspector.logs),
                })
            }
            Tracer::Prestate => {
                let mut evm = build_evm(WrapDatabaseRef(&db), input.cfg.clone(), input.block.clone());
                let outcome = evm.transact(tx).map_err(|e| internal(e.to_string()))?;
                prestate(&db, &outcome.state)?
            }
        };
        out.push(trace);
    }
    Ok(out)
}

fn prestate(db: &AfterPrefix<'_>, touched: &pseq_executor::revm::state::EvmState) -> Result<Value> {
    let mut out = Map::new();
    let mut addresses: Vec<&Address> = touched.keys().collect();
    addresses.sort();
    for address in addresses {
        let Some(info) = db.basic_ref(*address).map_err(|e| internal(e.0))? else {
            // Did not exist before: geth lists it with a zero balance.
            out.insert(format!("{address:?}"), json!({ "balance": "0x0" }));
            continue;
        };
        let mut account = Map::new();
        account.insert("balance".into(), json!(info.balance));
        if info.nonce != 0 {
            account.insert("nonce".into(), json!(info.nonce));
        }
        if info.code_hash != KECCAK_EMPTY {
            let code = match info.code {
                Some(code) => code,
                None => db.code_by_hash_ref(info.code_hash).map_err(|e| internal(e.0))?,
            };
            account.insert("code".into(), json!(code.original_bytes()));
        }
        let mut slots: Vec<&U256> = touched[address].storage.keys().collect();
        slots.sort();
        if !slots.is_empty() {
            let mut storage = Map::new();
            for slot in slots {
                let value = db.storage_ref(*address, *slot).map_err(|e| internal(e.0))?;
                storage.insert(format!("{:?}", B256::from(*slot)), json!(B256::from(value)));
            }
            account.insert("storage".into(), Value::Object(storage));
        }
        out.insert(format!("{address:?}"), Value::Object(account));
    }
    Ok(Value::Object(out))
}

fn trace_whole_block(ctx: &RpcContext, id: BlockId, options: Option<Value>) -> Result<Vec<Value>> {
    let tracer = tracer_of(options.as_ref())?;
    let block = block_by_id(ctx, id)?.ok_or_else(|| server("block not found"))?;
    let indexes: Vec<usize> = (0..block.body.transactions.len()).collect();
    let traces = trace_block(ctx, &block, &indexes, tracer)?;
    Ok(traces
        .into_iter()
        .zip(&block.body.transactions)
        .map(|(result, tx)| json!({ "txHash": tx.tx_hash(), "result": result }))
        .collect())
}

/// Registers the tracing methods.
pub fn register(module: &mut RpcModule<RpcContext>) -> std::result::Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_blocking_method("debug_traceTransaction", |params, ctx, _| {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let options: Option<Value> = seq.optional_next()?;
        let tracer = tracer_of(options.as_ref())?;
        let storage = ctx.sequencer.storage();
        let (number, index) = storage.transaction_location(&hash).map_err(internal)?.ok_or_else(|| server(format!("transaction {hash} not found")))?;
        let block = StoredBlock::load_number(storage, number).map_err(internal)?.ok_or_else(|| server("block not found"))?;
        let mut traces = trace_block(&ctx, &block, &[index as usize], tracer)?;
        traces.pop().ok_or_else(|| internal("no trace"))
    })?;
    module.register_blocking_method("debug_traceBlockByNumber", |params, ctx, _| {
        let mut seq = params.sequence();
        let tag: alloy_eips::BlockNumberOrTag = seq.next()?;
        let options: Option<Value> = seq.optional_next()?;
        trace_whole_block(&ctx, BlockId::Number(tag), options)
    })?;
    module.register_blocking_method("debug_traceBlockByHash", |params, ctx, _| {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let options: Option<Value> = seq.optional_next()?;
        trace_whole_block(&ctx, BlockId::hash(hash), options)
    })?;
    Ok(())
}
