//! The block producer: a thread that builds blocks on an interval, as soon as transactions
//! arrive (automine), or only on request, and that can be told to switch modes, mine now, or
//! stop.

use crate::{
    continuous::{Continuous, Waited},
    error::BuildError,
    sequencer::Sequencer,
};
use alloy_primitives::B256;
use pseq_config::MiningMode;
use std::{
    sync::{
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long automine waits after the first arriving transaction for others to share its block.
pub const AUTOMINE_BATCH_WINDOW: Duration = Duration::from_millis(2);
/// How often queued transactions are checked for staleness.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A request to the block producer.
#[derive(Debug)]
pub enum MinerCommand {
    /// Transactions entered the pool.
    TxArrived,
    /// Build `blocks` blocks now (`evm_mine`), answering with their hashes.
    Mine {
        /// How many blocks.
        blocks: u64,
        /// Where the hashes (or the error) go.
        reply: mpsc::Sender<Result<Vec<B256>, String>>,
    },
    /// Switch production mode (`evm_setAutomine`, `evm_setIntervalMining`).
    SetMode(MiningMode),
    /// Finish the block in progress and stop.
    Shutdown,
}

/// A running block producer.
#[derive(Debug)]
pub struct Miner {
    commands: mpsc::Sender<MinerCommand>,
    thread: Option<JoinHandle<()>>,
}

impl Miner {
    /// Starts producing blocks in `mode`.
    pub fn spawn(sequencer: Arc<Sequencer>, mode: MiningMode) -> std::io::Result<Self> {
        let (commands, receiver) = mpsc::channel();
        sequencer.set_wake(commands.clone());
        let thread = std::thread::Builder::new().name("pseq-miner".into()).spawn(move || run(&sequencer, mode, &receiver))?;
        Ok(Self { commands, thread: Some(thread) })
    }

    /// A handle to send commands with.
    pub fn commands(&self) -> mpsc::Sender<MinerCommand> {
        self.commands.clone()
    }

    /// Stops after the block in progress and waits for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(MinerCommand::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds `blocks` blocks now.
pub fn mine_now(sequencer: &Sequencer, blocks: u64) -> Result<Vec<B256>, BuildError> {
    (0..blocks).map(|_| sequencer.build_block().map(|b| b.block.hash)).collect()
}

fn build_logged(sequencer: &Sequencer) {
    if let Err(e) = sequencer.build_block() {
        tracing::error!(error = %e, "block production failed");
    }
}

fn run(sequencer: &Sequencer, mut mode: MiningMode, commands: &mpsc::Receiver<MinerCommand>) {
    tracing::info!(?mode, "block production started");
    let mut next_block = Instant::now() + interval_of(mode).unwrap_or(Duration::ZERO);
    let mut last_prune = Instant::now();
    // After an open block went stale, the next block is built the ordinary way.
    let mut ordinary_next = false;
    loop {
        if last_prune.elapsed() >= PRUNE_EVERY {
            let pruned = sequencer.pool().lock().prune_stale(Instant::now());
            if !pruned.is_empty() {
                tracing::debug!(count = pruned.len(), "stale queued transactions dropped");
            }
            last_prune = Instant::now();
        }
        if let Some(interval) = interval_of(mode).filter(|_| sequencer.settings().continuous && !ordinary_next) {
            let mut interrupted = None;
            let wait = |until: Instant| wait_quietly(commands, until, &mut interrupted);
            match sequencer.build_continuously(next_block, wait) {
                Ok(Continuous::Built(_)) => next_block = after(next_block, interval),
                Ok(Continuous::Stale) => ordinary_next = true,
                Ok(Continuous::Abandoned) => {}
                Err(e) => {
                    tracing::error!(error = %e, "block production failed");
                    ordinary_next = true;
                }
            }
            if let Some(command) = interrupted {
                if handle_other(sequencer, &mut mode, &mut next_block, command) {
                    break;
                }
            }
            continue;
        }
        let command = match interval_of(mode) {
            Some(_) => commands.recv_timeout(next_block.saturating_duration_since(Instant::now())),
            None => commands.recv_timeout(PRUNE_EVERY),
        };
        match command {
            Err(RecvTimeoutError::Timeout) => {
                if let Some(interval) = interval_of(mode) {
                    build_logged(sequencer);
                    next_block = after(next_block, interval);
                    ordinary_next = false;
                }
            }
            Err(RecvTimeoutError::Disconnected) | Ok(MinerCommand::Shutdown) => break,
            Ok(MinerCommand::TxArrived) => {
                if mode == MiningMode::Auto {
                    std::thread::sleep(AUTOMINE_BATCH_WINDOW);
                    // Drop the wake-ups that arrived meanwhile; keep the other commands.
                    let mut deferred = Vec::new();
                    while let Ok(command) = commands.try_recv() {
                        if !matches!(command, MinerCommand::TxArrived) {
                            deferred.push(command);
                        }
                    }
                    while sequencer.has_pending() {
                        let before = sequencer.pool().lock().status().pending;
                        build_logged(sequencer);
                        if sequencer.pool().lock().status().pending >= before {
                            break;
                        }
                    }
                    for command in deferred {
                        if handle_other(sequencer, &mut mode, &mut next_block, command) {
                            return;
                        }
                    }
                }
            }
            Ok(command) => {
                if handle_other(sequencer, &mut mode, &mut next_block, command) {
                    break;
                }
            }
        }
    }
    tracing::info!("block production stopped");
}

/// Handles a command other than a wake-up; returns whether to stop.
fn handle_other(sequencer: &Sequencer, mode: &mut MiningMode, next_block: &mut Instant, command: MinerCommand) -> bool {
    match command {
        MinerCommand::TxArrived => false,
        MinerCommand::Shutdown => true,
        MinerCommand::Mine { blocks, reply } => {
            let _ = reply.send(mine_now(sequencer, blocks).map_err(|e| e.to_string()));
            false
        }
        MinerCommand::SetMode(new) => {
            tracing::info!(mode = ?new, "block production mode changed");
            *mode = new;
            *next_block = Instant::now() + interval_of(new).unwrap_or(Duration::ZERO);
            if new == MiningMode::Auto {
                while sequencer.has_pending() {
                    let before = sequencer.pool().lock().status().pending;
                    build_logged(sequencer);
                    if sequencer.pool().lock().status().pending >= before {
                        break;
                    }
                }
            }
            false
        }
    }
}

/// The deadline after `deadline`; when building ran past it, now.
fn after(deadline: Instant, interval: Duration) -> Instant {
    (deadline + interval).max(Instant::now())
}

/// Waits until `until` for an open block, letting transaction wake-ups pass; any other command
/// (or a closed channel, read as shutdown) ends the wait and is kept in `interrupted`.
fn wait_quietly(commands: &mpsc::Receiver<MinerCommand>, until: Instant, interrupted: &mut Option<MinerCommand>) -> Waited {
    loop {
        // Checked before reading: under load the channel is never empty, and a zero timeout
        // would keep returning wake-ups instead of timing out.
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Waited::Elapsed;
        }
        match commands.recv_timeout(left) {
            Err(RecvTimeoutError::Timeout) => return Waited::Elapsed,
            Ok(MinerCommand::TxArrived) => {}
            Ok(command) => {
                *interrupted = Some(command);
                return Waited::Abandon;
            }
            Err(RecvTimeoutError::Disconnected) => {
                *interrupted = Some(MinerCommand::Shutdown);
                return Waited::Abandon;
            }
        }
    }
}

fn interval_of(mode: MiningMode) -> Option<Duration> {
    match mode {
        MiningMode::Interval(d) => Some(d),
        _ => None,
    }
}
