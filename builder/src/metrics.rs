//! [`Metrics`]: counters of block production and admission, rendered in Prometheus' text format.

use crate::sequencer::NewBlock;
use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Counters and gauges the node exports on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Blocks built.
    pub blocks: AtomicU64,
    /// Transactions included in built blocks.
    pub txs_included: AtomicU64,
    /// Gas used by built blocks.
    pub gas_used: AtomicU64,
    /// Transactions admitted into the pool.
    pub txs_admitted: AtomicU64,
    /// Height of the head.
    pub head: AtomicU64,
    /// Microseconds spent building blocks.
    pub build_micros: AtomicU64,
    /// Microseconds the last block took to build.
    pub last_build_micros: AtomicU64,
    /// Microseconds spent executing transactions into open blocks before they were due
    /// (continuous building).
    pub ahead_micros: AtomicU64,
}

impl Metrics {
    /// Records a built block.
    pub fn record_block(&self, block: &NewBlock, took: Duration) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.txs_included.fetch_add(block.tx_hashes.len() as u64, Ordering::Relaxed);
        self.gas_used.fetch_add(block.header.gas_used, Ordering::Relaxed);
        self.head.store(block.header.number, Ordering::Relaxed);
        let micros = took.as_micros() as u64;
        self.build_micros.fetch_add(micros, Ordering::Relaxed);
        self.last_build_micros.store(micros, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters, plus the pool sizes given.
    pub fn render(&self, pending: usize, queued: usize) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP pseq_{name} {help}\n# TYPE pseq_{name} {kind}\npseq_{name} {value}");
        };
        metric("blocks_built_total", "counter", "Blocks built by this node.", self.blocks.load(Ordering::Relaxed));
        metric("txs_included_total", "counter", "Transactions included in built blocks.", self.txs_included.load(Ordering::Relaxed));
        metric("gas_used_total", "counter", "Gas used by built blocks.", self.gas_used.load(Ordering::Relaxed));
        metric("txs_admitted_total", "counter", "Transactions admitted into the pool.", self.txs_admitted.load(Ordering::Relaxed));
        metric("head_block", "gauge", "Number of the head block.", self.head.load(Ordering::Relaxed));
        metric("build_seconds_micros_total", "counter", "Microseconds spent building blocks.", self.build_micros.load(Ordering::Relaxed));
        metric("last_build_micros", "gauge", "Microseconds the last block took to build.", self.last_build_micros.load(Ordering::Relaxed));
        metric("build_ahead_micros_total", "counter", "Microseconds spent executing into open blocks before they were due.", self.ahead_micros.load(Ordering::Relaxed));
        metric("pool_pending", "gauge", "Pending transactions in the pool.", pending as u64);
        metric("pool_queued", "gauge", "Queued transactions in the pool.", queued as u64);
        out
    }
}
